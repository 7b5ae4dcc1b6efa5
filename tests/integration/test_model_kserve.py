"""With KServe's InferenceService API in the cluster, a ModelDeployment becomes an
InferenceService instead of raw Deployments. (The local site runs no KServe controller:
the API is installed as KServe publishes it, so what the operator writes is checked by the
real API server; serving through KServe's ModelServer is covered in raw mode.)"""

from __future__ import annotations

import json

import pytest
from model_support import anomaly, apply, condition, ready, status, wait_for

from aios.stack.models import storage_uri

ISVC_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: inferenceservices.serving.kserve.io}
spec:
  group: serving.kserve.io
  names: {kind: InferenceService, listKind: InferenceServiceList, plural: inferenceservices,
          singular: inferenceservice, shortNames: [isvc]}
  scope: Namespaced
  versions:
  - name: v1beta1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


@pytest.fixture
def kserve_api(kubectl):
    kubectl("apply", "-f", "-", stdin=ISVC_CRD)
    kubectl.site.wait_established(["inferenceservices.serving.kserve.io"])
    yield
    kubectl("delete", "crd", "inferenceservices.serving.kserve.io", "--wait=true")


def test_with_kserve_installed_an_inference_service_is_rendered(
    kubectl, operator, namespace, kserve_api
):
    version = "2024.11.2"
    apply(kubectl, namespace, anomaly(version, storage_uri("pm25-anomaly", version)))
    isvc = wait_for(
        lambda: kubectl.run("get", "isvc", "pm25-anomaly", "-n", namespace, "-o", "json").stdout,
        timeout=60,
    )
    predictor = json.loads(isvc)["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "triton"}
    assert predictor["model"]["storageUri"] == storage_uri("pm25-anomaly", version)
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 6)
    assert "canaryTrafficPercent" not in predictor
    owner = json.loads(isvc)["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ModelDeployment"
    raw = ("get", "deployment", "pm25-anomaly-2024-11-2", "-n", namespace)
    wait_for(lambda: kubectl.run(*raw).returncode != 0, timeout=30)  # none, or pruned

    def waiting_for_kserve():
        found = status(kubectl, namespace)
        return "InferenceService" in condition(found, "Ready").get("message", "")

    wait_for(waiting_for_kserve, timeout=30)
    assert "stable" not in status(kubectl, namespace), "no KServe controller makes it Ready"


def test_without_kserve_the_operator_is_back_to_raw_mode(kubectl, operator, namespace):
    """Runs after the CRD is gone: nothing else in the session renders InferenceServices."""
    version = "2024.11.2"
    apply(kubectl, namespace, anomaly(version, storage_uri("pm25-anomaly", version)))
    wait_for(lambda: ready(kubectl, namespace), timeout=180)
