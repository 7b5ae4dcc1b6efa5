"""KServe mode: an InferenceService per track, the stable one named after the
ModelDeployment. KServe's RawDeployment mode does not split traffic (its
``canaryTrafficPercent`` needs Knative), so a canary gets its own InferenceService and
callers split traffic from ``status`` as in raw mode."""

from __future__ import annotations

from typing import Any

from aios.api.model_deployment import ModelDeployment, ModelSource
from aios.operator.reconcile.children import PART_OF, as_owner, owned
from aios.operator.reconcile.model_deployment.names import GRPC_PORT, service_name
from aios.operator.reconcile.model_deployment.server import resources
from aios.operator.reconcile.model_deployment.serving import serving
from aios.operator.settings import OperatorSettings

KSERVE_GROUP = "serving.kserve.io"
KSERVE_VERSION = f"{KSERVE_GROUP}/v1beta1"
INFERENCE_SERVICES_CRD = f"inferenceservices.{KSERVE_GROUP}"
KSERVE_KINDS = ((KSERVE_VERSION, "InferenceService"),)


SERVING_RUNTIMES = {"triton": ("aios-triton", "triton"), "kserve": ("aios-model-server", "aios")}
"""(ClusterServingRuntime, model format) of each runtime: the chart installs both on a
cluster that runs KServe, from the images of raw mode and on its ports."""


def _predictor(md: ModelDeployment, source: ModelSource, site: OperatorSettings) -> dict[str, Any]:
    """KServe's predictor spec, which takes the pod's placement fields inline; KServe puts
    the model at ``/mnt/models`` (its storage initializer, or the claim of a ``pvc://``)."""
    scaling = md.spec.autoscaling
    serving_runtime, model_format = SERVING_RUNTIMES[md.spec.runtime]
    return {
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "scaleMetric": "cpu",
        "scaleTarget": scaling.target_utilization_percent,
        **site.data_plane.model_server_placement().pod_fields(),
        "model": {
            "modelFormat": {"name": model_format},
            "runtime": serving_runtime,
            "storageUri": source.storage_uri,
            "resources": resources(md),
        },
    }


def render_kserve(md: ModelDeployment, site: OperatorSettings) -> list[dict[str, Any]]:
    """KServe: the stable version's InferenceService (``<name>``), and the canary's or the
    shadow's (``<name>-canary`` / ``<name>-shadow``) while a rollout runs. A rollback
    deletes the candidate's; a promotion moves the stable one to the new version."""
    plan = serving(md)
    name = md.metadata["name"]
    services = [_inference_service(name, _predictor(md, plan.stable, site), plan.stable)]
    if plan.candidate is not None:
        candidate = _predictor(md, plan.candidate, site)
        track_name = service_name(name, plan.track)
        services.append(_inference_service(track_name, candidate, plan.candidate))
    return [owned(child, as_owner(md)) for child in services]


def _inference_service(name: str, predictor: dict[str, Any], source: ModelSource) -> dict[str, Any]:
    return {
        "apiVersion": KSERVE_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": {PART_OF: "aios"},
            "annotations": {"aios.dev/model-version": source.version},
        },
        "spec": {"predictor": predictor},
    }


def kserve_endpoints(name: str, namespace: str) -> tuple[str, str]:
    """KServe's predictor Service: HTTP on 80 (its first port), gRPC on the runtime's own."""
    host = f"{name}-predictor.{namespace}.svc"
    return f"http://{host}:80", f"{host}:{GRPC_PORT}"
