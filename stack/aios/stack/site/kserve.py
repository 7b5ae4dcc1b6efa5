"""KServe in the site, when a test or ``aiosctl up --with kserve`` asks for it: the KServe
controller (v0.16, RawDeployment: no Knative, no Istio) runs on the node beside
Kubernetes, its kinds are served as KServe publishes them, and its admission webhooks are
registered behind a Service whose one endpoint is the node's address, as KEDA's adapter
is (``aios.stack.site.keda``). Its ``inferenceservice-config`` is KServe's own with the
deployment mode set to RawDeployment, so an InferenceService becomes a Deployment, a
Service and an autoscaler on the real node.

The site's model mirror is served as S3 beside it (``services.start_object_store``), and
KServe's storage initializer fetches ``s3://`` models from there, as in a city's cluster
from its object store. It can be removed again (``stop_kserve``): the cluster is then back
to raw mode, which is what the operator renders when KServe's kinds are not served."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from aios.stack import components
from aios.stack.pki import ensure_site_pki, issue_tls_directory
from aios.stack.process import ComponentFailed
from aios.stack.site import services
from aios.stack.site.node_endpoint import service_on_node
from aios.stack.site.probes import admission_reached

if TYPE_CHECKING:
    from aios.stack.site.lifecycle import Site

NAMESPACE = "kserve"
CONTROLLER = "kserve-controller"
WEBHOOK_SERVICE = "kserve-webhook-server-service"
WEBHOOK_PORT = 9443
METRICS_PORT, HEALTH_PORT = 8093, 8094
"""Beside KEDA's 8090 to 8092 on the node's loopback."""
CONFIG = "inferenceservice-config"
STORAGE_CONTAINER = "aios-site-object-store"


def storage_container(image: str, object_store_url: str) -> dict[str, Any]:
    """How KServe fetches ``s3://`` models in the site: KServe's storage library run from
    the aios image (``aios.connectors.storage_initializer``; KServe's own image cannot be
    pulled here) against the site's object store, which reads anonymously."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": STORAGE_CONTAINER},
        "spec": {
            "workloadType": "initContainer",
            "supportedUriFormats": [{"prefix": "s3://"}],
            "container": {
                "name": "storage-initializer",
                "image": image,
                "command": ["python", "-m", "aios.connectors.storage_initializer"],
                "env": [
                    {"name": "AWS_ENDPOINT_URL", "value": object_store_url},
                    {"name": "awsAnonymousCredential", "value": "true"},
                ],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "100Mi"},
                    "limits": {"memory": "1Gi"},
                },
            },
        },
    }


def definitions(home: Path) -> list[str]:
    """The names of KServe's CustomResourceDefinitions in its module's ``config/crd/full``."""
    return [
        yaml.safe_load(path.read_text())["metadata"]["name"]
        for path in sorted((home / "crds").glob("*.yaml"))
    ]


def site_config(published: dict[str, Any]) -> dict[str, Any]:
    """KServe's own ``inferenceservice-config`` with what a cluster without Knative and
    Istio sets: RawDeployment by default, and no Istio virtual hosts or Ingresses."""
    data = dict(published["data"])
    data.pop("_example", None)
    deploy = json.loads(data["deploy"])
    ingress = json.loads(data["ingress"])
    deploy["defaultDeploymentMode"] = "RawDeployment"
    # No ingress: an InferenceService's URL is its predictor Service's own cluster name
    # (KServe's default joins name and namespace in one label, which exceeds 63
    # characters for long namespaces).
    ingress.update(
        disableIstioVirtualHost=True,
        disableIngressCreation=True,
        ingressDomain="svc.cluster.local",
        domainTemplate="{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}",
    )
    data.update(deploy=json.dumps(deploy), ingress=json.dumps(ingress))
    return {**published, "metadata": {"name": CONFIG, "namespace": NAMESPACE}, "data": data}


def webhooks(published: list[dict[str, Any]], ca_bundle: bytes) -> list[dict[str, Any]]:
    """KServe's webhook configurations as its kustomization makes them: its Service in its
    namespace, verified with the site's CA (cert-manager's part in KServe's install)."""
    bundle = base64.b64encode(ca_bundle).decode()
    configured = []
    for configuration in published:
        hooks = []
        for hook in configuration["webhooks"]:
            service = {**hook["clientConfig"]["service"], "name": WEBHOOK_SERVICE}
            client_config = {"service": {**service, "namespace": NAMESPACE}, "caBundle": bundle}
            hooks.append({**hook, "clientConfig": client_config})
        metadata = {"name": configuration["metadata"]["name"]}
        configured.append({**configuration, "metadata": metadata, "webhooks": hooks})
    return configured


def registration(node_address: str) -> list[dict[str, Any]]:
    """KServe's namespace and its webhook Service, whose endpoint is the controller on the
    node (a Service without a selector, as for KEDA's adapter)."""
    labels = {"app.kubernetes.io/name": "kserve", "control-plane": "kserve-controller-manager"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        *service_on_node(WEBHOOK_SERVICE, NAMESPACE, labels, node_address, WEBHOOK_PORT),
    ]


def start_kserve(site: Site) -> None:
    """KServe's kinds and configuration, its controller, then its webhooks; returns once
    the controller is ready and the API server calls its webhooks."""
    home = components.KSERVE.ensure()
    services.start_object_store(site)
    site.kubectl(["apply", "--server-side", "--force-conflicts", "-f", str(home / "crds")])
    site.wait_established(definitions(home))
    published = yaml.safe_load((home / "config" / "inferenceservice.yaml").read_text())
    store = storage_container(site.images["aios"].pinned_reference, site.endpoints.object_store_url)
    items = [*registration(site.address), site_config(published), store]
    site.kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], stdin=_list(items))
    pki = ensure_site_pki(site.directory / "pki")
    # controller-runtime reads its serving certificate from $TMPDIR/k8s-webhook-server/serving-certs
    scratch = site.directory / "kserve"
    certs = scratch / "k8s-webhook-server" / "serving-certs"
    issue_tls_directory(
        pki, certs, "kserve", [f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc"], ["127.0.0.1", site.address]
    )
    controller = site.spawn(
        CONTROLLER,
        [
            str(home / "bin" / "kserve-controller"),
            f"--metrics-addr=127.0.0.1:{METRICS_PORT}",
            f"--health-probe-addr=127.0.0.1:{HEALTH_PORT}",
            f"--webhook-port={WEBHOOK_PORT}",
            "--zap-encoder=console",
        ],
        env={
            "KUBECONFIG": site.endpoints.kubeconfig,
            "POD_NAMESPACE": NAMESPACE,
            "TMPDIR": str(scratch),
        },
    )
    controller.wait_healthy(lambda: site.inside_ok(f"http://127.0.0.1:{HEALTH_PORT}/readyz"), 120)
    configured = webhooks(_published_webhooks(home), pki.ca_cert.read_bytes())
    site.kubectl(
        ["apply", "--server-side", "--force-conflicts", "-f", "-"], stdin=_list(configured)
    )
    controller.wait_healthy(lambda: admission_reached(site.kubectl, PROBE), 60)


PROBE = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "admission-probe", "namespace": NAMESPACE},
    "spec": {"predictor": {"model": {"modelFormat": {"name": "triton"}, "storageUri": "s3://b/m"}}},
}
"""What the API server is asked to create, without storing it, to see KServe's webhooks reached."""


def stop_kserve(site: Site, timeout: float = 180) -> None:
    """Back to a cluster without KServe: its InferenceServices deleted while the controller
    can still finalise them, then its webhooks, kinds and controller."""
    home = components.KSERVE.home
    site.kubectl(["delete", "inferenceservices", "--all-namespaces", "--all", "--wait=false"])
    _wait_gone(site, ["get", "inferenceservices", "-A", "-o", "name"], timeout)
    for hook in _published_webhooks(home):
        site.kubectl(["delete", hook["kind"], hook["metadata"]["name"], "--ignore-not-found"])
    # The API server empties each kind before it forgets it, retrying with a back-off.
    site.kubectl(["delete", "--ignore-not-found", "--wait=false", "-f", str(home / "crds")])
    names = [f"customresourcedefinition/{name}" for name in definitions(home)]
    _wait_gone(site, ["get", "--ignore-not-found", "-o", "name", *names], timeout)
    for name in (CONTROLLER, "s3proxy"):
        site.processes.pop(name).stop()
        site.state.forget_process(name)
    site.endpoints.object_store_url = ""
    site.kubectl(["delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false"])


def _wait_gone(site: Site, listing: list[str], timeout: float) -> None:
    """Until ``kubectl`` lists nothing for ``listing``; fails naming what is left."""
    deadline = time.monotonic() + timeout
    while left := site.kubectl(listing).split():
        if time.monotonic() > deadline:
            raise ComponentFailed(CONTROLLER, f"still there after {timeout:.0f} s: {left}", None)
        time.sleep(0.5)


def _published_webhooks(home: Path) -> list[dict[str, Any]]:
    """KServe's webhook configurations as its module ships them (``config/webhook``)."""
    text = (home / "config" / "manifests.yaml").read_text()
    return [found for found in yaml.safe_load_all(text) if found]


def _list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
