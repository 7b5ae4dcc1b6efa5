"""The model server container (Triton, or aios's KServe ModelServer), in both modes."""

from __future__ import annotations

from typing import Any

from aios.api.model_deployment import ModelDeployment
from aios.operator.reconcile.model_deployment.names import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    MODEL_MOUNT,
)
from aios.operator.settings import OperatorSettings


def resources(md: ModelDeployment) -> dict[str, Any]:
    wanted = md.spec.resources
    requests: dict[str, Any] = {"cpu": wanted.cpu, "memory": wanted.memory}
    limits: dict[str, Any] = {"memory": wanted.memory}
    if wanted.gpu:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = wanted.gpu
    return {"requests": requests, "limits": limits}


DRAIN_SECONDS = 5
"""How long a model server taken out of service (a version pruned at promotion, a pod
scaled in) keeps answering before it is told to stop: its endpoints are removed
meanwhile, so callers' new connections reach the version now serving."""


def server_container(md: ModelDeployment, site: OperatorSettings) -> dict[str, Any]:
    """Triton, or aios's KServe ModelServer, on the pod's own address (``$(POD_IP)``)."""
    if md.spec.runtime == "triton":
        name, container_image, command = "triton", site.triton_image, ["tritonserver"]
        args = [
            f"--model-repository={MODEL_MOUNT}",
            "--http-address=$(POD_IP)",
            f"--http-port={HTTP_PORT}",
            "--grpc-address=$(POD_IP)",
            f"--grpc-port={GRPC_PORT}",
            "--metrics-address=$(POD_IP)",
            f"--metrics-port={METRICS_PORT}",
            "--exit-on-error=false",  # keep answering, so the load error can be read
            "--allow-gpu-metrics=false",
        ]
    else:
        name, container_image = "kserve-container", site.image
        command = ["python", "-m", "aios.connectors.model_server"]
        args = [
            f"--model-repository={MODEL_MOUNT}",
            "--host=$(POD_IP)",
            f"--http-port={HTTP_PORT}",
            f"--grpc-port={GRPC_PORT}",
        ]
    probe = {"path": "/v2/health/ready", "port": HTTP_PORT}
    return {
        "name": name,
        "image": container_image,
        "imagePullPolicy": site.image_pull_policy,
        "command": command,
        "args": args,
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "readinessProbe": {"httpGet": probe, "periodSeconds": 5, "failureThreshold": 3},
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "livenessProbe": {
            "httpGet": {**probe, "path": "/v2/health/live"},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
        },
        "resources": resources(md),
    }
