"""Raw mode (no KServe): a Deployment per served version, a Service per track, the stable
version's HorizontalPodAutoscaler."""

from __future__ import annotations

from typing import Any

from aios.api.model_deployment import ModelDeployment, ModelSource, version_slug
from aios.operator.reconcile.children import PART_OF, app_labels, as_owner, owned
from aios.operator.reconcile.model_deployment.names import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    MODEL_DEPLOYMENT,
    SERVED_VERSION,
    TRACK,
    deployment_name,
    mirrored,
    service_name,
    storage,
)
from aios.operator.reconcile.model_deployment.server import server_container
from aios.operator.reconcile.model_deployment.serving import Track, serving
from aios.operator.settings import OperatorSettings

CHILD_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
)


def _labels(md: ModelDeployment, source: ModelSource) -> dict[str, str]:
    return {
        **app_labels(
            source.name, "model-server", md.metadata["name"], version_slug(source.version)
        ),
        MODEL_DEPLOYMENT: md.metadata["name"],
        SERVED_VERSION: version_slug(source.version),
    }


def version_deployment(
    md: ModelDeployment,
    source: ModelSource,
    stable: bool,
    site: OperatorSettings,
    mirror: str | None,
) -> dict[str, Any]:
    """The Deployment serving one version. The stable one is scaled by its HPA (so no
    replicas here); a candidate runs one replica until it is promoted."""
    volume, mount, init = storage(mirrored(source.storage_uri, mirror))
    container = {**server_container(md, site), "volumeMounts": [mount]}
    labels = _labels(md, source)
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [volume],
        **site.data_plane.model_server_placement().pod_fields(),
    }
    if init:
        pod_spec["initContainers"] = init
    spec: dict[str, Any] = {
        "selector": {
            "matchLabels": {
                MODEL_DEPLOYMENT: labels[MODEL_DEPLOYMENT],
                SERVED_VERSION: labels[SERVED_VERSION],
            }
        },
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": {"aios.dev/model-version": source.version},
            },
            "spec": pod_spec,
        },
    }
    if not stable:
        spec["replicas"] = 1
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(md.metadata["name"], source.version),
            "labels": labels,
            "annotations": {"aios.dev/model-version": source.version},
        },
        "spec": spec,
    }


def track_service(md: ModelDeployment, source: ModelSource, track: Track) -> dict[str, Any]:
    """The Service of a track, selecting the pods of the version on that track."""
    name = md.metadata["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name, track),
            "labels": {MODEL_DEPLOYMENT: name, TRACK: track, PART_OF: "aios"},
            "annotations": {"aios.dev/model-version": source.version},
        },
        "spec": {
            "selector": {MODEL_DEPLOYMENT: name, SERVED_VERSION: version_slug(source.version)},
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
            ],
        },
    }


def version_service(md: ModelDeployment, source: ModelSource) -> dict[str, Any]:
    """The Service of one version's pods alone, which callers that follow the traffic
    split (the intent runner, the rollout's analysis) reach through ``status``: the
    version they record is the version that answered, even on a connection opened before
    a promotion moved the track Services to other pods."""
    labels = _labels(md, source)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": deployment_name(md.metadata["name"], source.version),
            "labels": {k: labels[k] for k in (MODEL_DEPLOYMENT, SERVED_VERSION)}
            | {PART_OF: "aios"},
            "annotations": {"aios.dev/model-version": source.version},
        },
        "spec": {
            "selector": {k: labels[k] for k in (MODEL_DEPLOYMENT, SERVED_VERSION)},
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
            ],
        },
    }


def autoscaler(md: ModelDeployment, source: ModelSource) -> dict[str, Any]:
    scaling = md.spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": md.metadata["name"],
            "labels": {MODEL_DEPLOYMENT: md.metadata["name"]},
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(md.metadata["name"], source.version),
            },
            "minReplicas": max(1, scaling.min_replicas),  # scale to zero is KServe's
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_utilization_percent,
                        },
                    },
                }
            ],
        },
    }


def render_raw(md: ModelDeployment, site: OperatorSettings) -> list[dict[str, Any]]:
    """Raw mode: a Deployment per served version, the track Services, the stable's HPA."""
    plan = serving(md)
    mirror = site.model_mirror or None
    children = [
        version_deployment(md, plan.stable, True, site, mirror),
        version_service(md, plan.stable),
        track_service(md, plan.stable, "stable"),
        autoscaler(md, plan.stable),
    ]
    if plan.candidate is not None and plan.candidate.version != plan.stable.version:
        children += [
            version_deployment(md, plan.candidate, False, site, mirror),
            version_service(md, plan.candidate),
            track_service(md, plan.candidate, plan.track),
        ]
    return [owned(child, as_owner(md)) for child in children]
