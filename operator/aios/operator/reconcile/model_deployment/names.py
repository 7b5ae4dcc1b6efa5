"""Names, ports, endpoints and model storage of a ModelDeployment's children."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aios.api.model_deployment import version_slug
from aios.operator.reconcile.model_deployment.serving import Track

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
MODEL_MOUNT = "/mnt/models"
STORAGE_INITIALIZER_IMAGE = "kserve/storage-initializer:v0.14.1"
MODEL_DEPLOYMENT = "aios.dev/modeldeployment"
SERVED_VERSION = "aios.dev/served-version"
TRACK = "aios.dev/track"


def deployment_name(md_name: str, version: str) -> str:
    return f"{md_name[:42]}-{version_slug(version)}"


def service_name(md_name: str, track: Track) -> str:
    return md_name if track == "stable" else f"{md_name[:55]}-{track}"


def endpoints(md_name: str, namespace: str, track: Track) -> tuple[str, str]:
    """(HTTP base URL, gRPC host:port) of a track's Service."""
    return _urls(f"{service_name(md_name, track)}.{namespace}.svc")


def version_endpoints(md_name: str, namespace: str, version: str) -> tuple[str, str]:
    """(HTTP base URL, gRPC host:port) of one version's own Service."""
    return _urls(f"{deployment_name(md_name, version)}.{namespace}.svc")


def _urls(host: str) -> tuple[str, str]:
    return f"http://{host}:{HTTP_PORT}", f"{host}:{GRPC_PORT}"


def mirrored(uri: str, mirror: str | None) -> str:
    """``s3://b/k`` or ``gs://b/k`` → ``file://<mirror>/b/k`` when the site mirrors buckets."""
    parts = urlsplit(uri)
    if mirror and parts.scheme in ("s3", "gs"):
        return f"file://{mirror.rstrip('/')}/{parts.netloc}{parts.path}"
    return uri


def storage(uri: str) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(volume, volume mount, init containers) that put the model repository at
    ``MODEL_MOUNT``: a host path for ``file://``, a claim for ``pvc://``, and KServe's
    storage initializer downloading into an emptyDir for object storage and HTTP."""
    parts = urlsplit(uri)
    mount: dict[str, Any] = {"name": "model-repository", "mountPath": MODEL_MOUNT, "readOnly": True}
    if parts.scheme == "file":
        volume = {"name": "model-repository", "hostPath": {"path": parts.path, "type": "Directory"}}
        return volume, mount, []
    if parts.scheme == "pvc":
        volume = {"name": "model-repository", "persistentVolumeClaim": {"claimName": parts.netloc}}
        sub_path = parts.path.strip("/")
        return volume, {**mount, "subPath": sub_path} if sub_path else mount, []
    volume = {"name": "model-repository", "emptyDir": {}}
    initializer = {
        "name": "storage-initializer",
        "image": STORAGE_INITIALIZER_IMAGE,
        "args": [uri, MODEL_MOUNT],
        "volumeMounts": [{"name": "model-repository", "mountPath": MODEL_MOUNT}],
    }
    return volume, mount, [initializer]
