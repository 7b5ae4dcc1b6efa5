"""With KServe in the cluster (its controller v0.16 in RawDeployment mode, its kinds and
admission webhooks as KServe publishes them), a ModelDeployment becomes an
InferenceService that KServe admits and turns into a serving pod on the real node, through
the ClusterServingRuntimes the chart installs. Removing KServe brings the operator back to
raw mode.

The model comes from a claim on the site's model mirror (``pvc://``), which KServe mounts
at ``/mnt/models`` itself."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from model_support import aiosctl, anomaly, apply, infer, ready, status, wait_for
from support import SESSION_VALUES

from aios.stack import release
from aios.stack.models import BUCKET, storage_uri
from aios.stack.node import MODEL_MIRROR
from aios.stack.release import merge
from aios.stack.site import Site, kserve

VERSION = "2024.11.2"
CLAIM = "model-mirror"


class KServeSite:
    """The session site with KServe started, and the chart upgraded so that its
    ClusterServingRuntimes exist; ``remove`` takes both away again."""

    def __init__(self, site: Site) -> None:
        self.site, self.installed = site, False

    def install(self) -> None:
        kserve.start_kserve(self.site)
        self.installed = True
        release.install(self.site, SESSION_VALUES)

    def remove(self) -> None:
        if self.installed:
            # the runtimes go while their kind is served, so the release stays upgradable
            release.install(
                self.site, merge(SESSION_VALUES, {"kserve": {"servingRuntimes": False}})
            )
            kserve.stop_kserve(self.site)
            self.installed = False


@pytest.fixture(scope="module")
def kserve_site(site: Site, operator: str) -> Iterator[KServeSite]:
    installed = KServeSite(site)
    try:
        installed.install()
        yield installed
    finally:
        installed.remove()


@pytest.fixture
def mirror_claim(kubectl, namespace: str) -> Iterator[str]:
    """The site's model mirror as a read-only claim in the test's namespace (a hostPath
    volume on the node, bound to the claim by name)."""
    volume = f"{namespace}-models"
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolume",
                        "metadata": {"name": volume},
                        "spec": {
                            "capacity": {"storage": "1Gi"},
                            "accessModes": ["ReadOnlyMany"],
                            "storageClassName": "",
                            "hostPath": {"path": str(MODEL_MIRROR), "type": "Directory"},
                            "claimRef": {"namespace": namespace, "name": CLAIM},
                        },
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": {"name": CLAIM, "namespace": namespace},
                        "spec": {
                            "accessModes": ["ReadOnlyMany"],
                            "storageClassName": "",
                            "volumeName": volume,
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    },
                ],
            }
        ),
    )
    yield f"pvc://{CLAIM}/{BUCKET}/pm25-anomaly"
    kubectl("delete", "pv", volume, "--wait=false")


async def test_a_model_deployment_is_served_by_kserve_on_the_node(
    kubectl, site: Site, namespace: str, kserve_site: KServeSite, mirror_claim: str
) -> None:
    apply(kubectl, namespace, anomaly(VERSION, f"{mirror_claim}/{VERSION}"))
    found = wait_for(lambda: ready(kubectl, namespace), timeout=300)
    isvc = kubectl.json("get", "inferenceservice", "pm25-anomaly", "-n", namespace)
    assert isvc["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    predictor = isvc["spec"]["predictor"]["model"]
    assert (predictor["runtime"], predictor["storageUri"]) == (
        "aios-triton",
        f"{mirror_claim}/{VERSION}",
    )
    assert isvc["status"].get("deploymentMode") == "RawDeployment", isvc["status"]
    # KServe's own children, not the operator's raw ones
    pods = kubectl.json(
        "get", "pods", "-n", namespace, "-l", "serving.kserve.io/inferenceservice=pm25-anomaly"
    )["items"]
    assert pods and all(p["status"]["phase"] == "Running" for p in pods), pods
    (container,) = [
        c for c in pods[0]["status"]["containerStatuses"] if c["name"] == "kserve-container"
    ]
    assert container["imageID"].endswith(site.images["tritonserver"].digest)
    assert (
        kubectl.run("get", "deployment", "pm25-anomaly-2024-11-2", "-n", namespace).returncode != 0
    )
    assert found["endpoints"]["http"] == f"http://pm25-anomaly-predictor.{namespace}.svc:80"

    explained = json.loads(
        aiosctl(site, "explain", "md/pm25-anomaly", "-n", namespace, "-o", "json").stdout
    )
    kinds = {(child["kind"], child["name"]): child for child in explained["children"]}
    assert kinds["InferenceService", "pm25-anomaly"]["ready"] == "True"
    served_by = kinds["Deployment", "pm25-anomaly-predictor"]
    assert served_by["available"] == 1 and served_by["pods"][0]["phase"] == "Running"

    for protocol in ("http", "grpc"):  # through KServe's predictor Service
        version, outputs = await infer(kubectl, found, protocol)
        assert version == VERSION
        assert outputs["score"][1] > 0.5 > outputs["score"][0], "the spike is the anomaly"

    kubectl("delete", "modeldeployment", "pm25-anomaly", "-n", namespace, "--wait=true")
    wait_for(
        lambda: kubectl.run("get", "isvc", "pm25-anomaly", "-n", namespace).returncode != 0,
        timeout=60,
    )
    wait_for(lambda: not kubectl.json("get", "deployments", "-n", namespace)["items"], timeout=60)


def test_without_kserve_the_operator_is_back_to_raw_mode(
    kubectl, namespace: str, kserve_site: KServeSite
) -> None:
    kserve_site.remove()
    apply(kubectl, namespace, anomaly(VERSION, storage_uri("pm25-anomaly", VERSION)))
    wait_for(lambda: ready(kubectl, namespace), timeout=180)
    kubectl("get", "deployment", "pm25-anomaly-2024-11-2", "-n", namespace)
    assert "InferenceService" not in json.dumps(status(kubectl, namespace))
