"""ModelDeployment → what serves it, the children that do, and what to tell the workflow. Pure.

What serves is decided in two places: the operator serves the first version directly
(there is nothing to protect yet) and records it as ``status.stable`` once it answers;
after that every new version goes through a rollout workflow, which reports in
``status.rollout`` (phase, traffic weight) and the operator serves what it says.

Raw mode (no KServe in the cluster) runs one Deployment per served version, named after
the version, so promotion never restarts anything: the stable Service (``<name>``) and
the canary or shadow Service (``<name>-canary`` / ``<name>-shadow``) select a version's
pods, and promotion moves the stable Service's selector to the already warm new version.
Callers split traffic themselves from ``status`` (``aios.connectors.inference.route``).
With KServe, one InferenceService carries the new version and ``canaryTrafficPercent``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from aios.api.base import kube_time
from aios.api.model_deployment import (
    ModelCard,
    ModelDeployment,
    ModelSource,
    RolloutStatus,
)
from aios.operator.reconcile.children import PART_OF, app_labels, owned
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.settings import OperatorSettings

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
MODEL_MOUNT = "/mnt/models"
STORAGE_INITIALIZER_IMAGE = "kserve/storage-initializer:v0.14.1"
MODEL_DEPLOYMENT = "aios.dev/modeldeployment"
SERVED_VERSION = "aios.dev/served-version"
TRACK = "aios.dev/track"
KSERVE_GROUP = "serving.kserve.io"
KSERVE_VERSION = f"{KSERVE_GROUP}/v1beta1"
INFERENCE_SERVICES_CRD = f"inferenceservices.{KSERVE_GROUP}"

ACTIVE: frozenset[str] = frozenset({"Deploying", "Progressing", "AwaitingApproval"})
Track = Literal["stable", "canary", "shadow"]


# -- what serves -------------------------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """The versions to serve now: the stable one, and a candidate under rollout."""

    stable: ModelSource
    candidate: ModelSource | None = None
    track: Literal["canary", "shadow"] = "canary"
    weight: int = 0
    first: bool = False  # the stable version has never answered yet


def serving(md: ModelDeployment) -> Serving:
    """What to serve, from the spec and what the status records."""
    status = md.status
    recorded = status.stable if status else None
    rollout = status.rollout if status else None
    if recorded is None:
        # Nothing has ever answered: serve the spec's version directly, no rollout.
        return Serving(stable=md.spec.model, first=True)
    stable = ModelSource(
        name=recorded.model,
        version=recorded.version,
        storage_uri=recorded.storage_uri,
        format=recorded.format,
    )
    if rollout is None:
        return Serving(stable)
    if rollout.phase == "Promoted":
        return Serving(rollout.source)
    if rollout.phase in ACTIVE:
        track: Literal["canary", "shadow"] = "shadow" if rollout.strategy == "shadow" else "canary"
        weight = 0 if track == "shadow" else rollout.weight
        return Serving(stable, rollout.source, track, weight)
    return Serving(stable)


@dataclass(frozen=True)
class RolloutAction:
    """What the operator must do about the rollout workflow this time."""

    start: bool = False  # start (or make sure it runs) the workflow for spec.model
    abort: str | None = None  # signal the running workflow to roll back, with this reason
    record: bool = False  # write status.rollout for a new rollout before starting it


def rollout_action(md: ModelDeployment) -> RolloutAction:
    """Start or abort: decided from the spec and the recorded rollout only, so an operator
    restart decides the same and never starts a rollout twice. (Approvals reach the
    workflow from their own objects, see ``handlers.approval``.)"""
    status = md.status
    if status is None or status.stable is None:
        return RolloutAction()
    rollout = status.rollout
    wanted = md.spec.model.version
    active = rollout is not None and rollout.phase in ACTIVE
    if rollout is not None and active:
        if rollout.version != wanted:
            return RolloutAction(abort=f"superseded: the spec now asks for version {wanted}")
        return RolloutAction(start=True)
    if wanted == status.stable.version:
        return RolloutAction()
    if rollout is not None and rollout.version == wanted:
        return RolloutAction()  # this version's rollout already ended; bump the version to retry
    return RolloutAction(start=True, record=True)


def workflow_id(namespace: str, name: str, version: str) -> str:
    """One workflow per version of a ModelDeployment: starting it twice is a no-op."""
    return f"rollout/{namespace}/{name}/{version}"


def new_rollout(md: ModelDeployment, namespace: str) -> RolloutStatus:
    """The record written before the workflow starts (so a restart sees it)."""
    spec = md.spec
    return RolloutStatus(
        version=spec.model.version,
        strategy=spec.rollout.strategy,
        source=spec.model,
        workflow_id=workflow_id(namespace, md.metadata["name"], spec.model.version),
        phase="Deploying",
        message=f"rolling out {spec.model.version} ({spec.rollout.strategy})",
    )


# -- names and storage -------------------------------------------------------------------


def version_slug(version: str) -> str:
    """A DNS label from a version: 2024.11.2 → 2024-11-2 (a digest keeps long ones unique)."""
    slug = re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-") or "v"
    if len(slug) > 20 or slug != version.lower().replace(".", "-"):
        slug = f"{slug[:13].strip('-')}-{hashlib.sha256(version.encode()).hexdigest()[:6]}"
    return slug


def deployment_name(md_name: str, version: str) -> str:
    return f"{md_name[:42]}-{version_slug(version)}"


def service_name(md_name: str, track: Track) -> str:
    return md_name if track == "stable" else f"{md_name[:55]}-{track}"


def endpoints(md_name: str, namespace: str, track: Track) -> tuple[str, str]:
    """(HTTP base URL, gRPC host:port) of a track's Service."""
    host = f"{service_name(md_name, track)}.{namespace}.svc"
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


# -- children ----------------------------------------------------------------------------


def _resources(md: ModelDeployment) -> dict[str, Any]:
    wanted = md.spec.resources
    requests: dict[str, Any] = {"cpu": wanted.cpu, "memory": wanted.memory}
    limits: dict[str, Any] = {"memory": wanted.memory}
    if wanted.gpu:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = wanted.gpu
    return {"requests": requests, "limits": limits}


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
        "livenessProbe": {
            "httpGet": {**probe, "path": "/v2/health/live"},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
        },
        "resources": _resources(md),
    }


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


def owner(md: ModelDeployment) -> dict[str, Any]:
    return {"apiVersion": md.api_version, "kind": md.kind, "metadata": md.metadata}


def render_raw(
    md: ModelDeployment, plan: Serving, site: OperatorSettings, mirror: str | None
) -> list[dict[str, Any]]:
    """Raw mode: a Deployment per served version, the track Services, the stable's HPA."""
    children = [
        version_deployment(md, plan.stable, True, site, mirror),
        track_service(md, plan.stable, "stable"),
        autoscaler(md, plan.stable),
    ]
    if plan.candidate is not None and plan.candidate.version != plan.stable.version:
        children += [
            version_deployment(md, plan.candidate, False, site, mirror),
            track_service(md, plan.candidate, plan.track),
        ]
    return [owned(child, owner(md)) for child in children]


def _predictor(md: ModelDeployment, source: ModelSource, site: OperatorSettings) -> dict[str, Any]:
    """KServe's predictor spec, which takes the pod's placement fields inline."""
    scaling = md.spec.autoscaling
    predictor: dict[str, Any] = {
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "scaleMetric": "cpu",
        "scaleTarget": scaling.target_utilization_percent,
        **site.data_plane.model_server_placement().pod_fields(),
    }
    if md.spec.runtime == "triton":
        predictor["model"] = {
            "modelFormat": {"name": "triton"},
            "storageUri": source.storage_uri,
            "resources": _resources(md),
        }
    else:  # a custom predictor: KServe's storage initializer fills STORAGE_URI's mount
        container = server_container(md, site)
        container["env"] = [*container["env"], {"name": "STORAGE_URI", "value": source.storage_uri}]
        container.pop("livenessProbe")
        predictor["containers"] = [container]
    return predictor


def render_kserve(
    md: ModelDeployment, plan: Serving, site: OperatorSettings
) -> list[dict[str, Any]]:
    """KServe: the InferenceService carries the newest version; ``canaryTrafficPercent``
    sends it its share while KServe keeps the previous revision for the rest. A shadow
    gets its own InferenceService that callers mirror to."""
    name = md.metadata["name"]
    canary = plan.candidate if plan.candidate is not None and plan.track == "canary" else None
    predictor = _predictor(md, canary or plan.stable, site)
    if canary is not None:
        predictor["canaryTrafficPercent"] = plan.weight
    services = [_inference_service(name, predictor, canary or plan.stable)]
    if plan.candidate is not None and plan.track == "shadow":
        shadow = _predictor(md, plan.candidate, site)
        services.append(_inference_service(service_name(name, "shadow"), shadow, plan.candidate))
    return [owned(child, owner(md)) for child in services]


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
    """KServe's predictor Service: HTTP on 80, gRPC on 8081 (its default ports)."""
    host = f"{name}-predictor.{namespace}.svc"
    return f"http://{host}:80", f"{host}:8081"


CHILD_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
)
KSERVE_KINDS = ((KSERVE_VERSION, "InferenceService"),)


# -- status ------------------------------------------------------------------------------


def target(
    md: ModelDeployment, source: ModelSource, track: Track, namespace: str, kserve: bool
) -> dict[str, Any]:
    """A ``ServingTarget`` (wire form) for ``status``: what ``route`` reads."""
    name = md.metadata["name"]
    if kserve:
        http, grpc = kserve_endpoints(
            service_name(name, "shadow") if track == "shadow" else name, namespace
        )
    else:
        http, grpc = endpoints(name, namespace, track)
    return {
        "version": source.version,
        "model": source.name,
        "storageUri": source.storage_uri,
        "format": source.format,
        "http": http,
        "grpc": grpc,
    }


def serving_status(
    md: ModelDeployment,
    plan: Serving,
    namespace: str,
    kserve: bool,
    stable_ready: bool,
    candidate_ready: bool = False,
) -> dict[str, Any]:
    """The status fields the operator owns (merge patch; ``None`` deletes)."""
    stable = {**target(md, plan.stable, "stable", namespace, kserve), "ready": stable_ready}
    candidate = plan.candidate
    # KServe splits traffic itself: callers only ever see its one endpoint.
    canary = candidate is not None and plan.track == "canary" and not kserve
    shadow = candidate is not None and plan.track == "shadow"
    served = stable if stable_ready or not plan.first else None

    def candidate_target(track: Track) -> dict[str, Any] | None:
        if candidate is None:
            return None
        return {**target(md, candidate, track, namespace, kserve), "ready": candidate_ready}

    return {
        "stable": served,
        "activeVersion": plan.stable.version if served else None,
        "endpoints": {"http": stable["http"], "grpc": stable["grpc"]} if served else None,
        "canary": candidate_target("canary") if canary else None,
        "shadow": candidate_target("shadow") if shadow else None,
        "canaryVersion": candidate.version if candidate else None,
        "canaryWeight": plan.weight if candidate and plan.track == "canary" else 0,
        "modelCardSummary": card_summary(md.spec.model_card),
    }


def card_summary(card: ModelCard | None) -> str | None:
    """``team-air-quality · auc=0.94 · no personal data`` — what reviewers scan first."""
    if card is None:
        return None
    metrics = ", ".join(f"{k}={v:g}" for k, v in sorted(card.metrics.items()))
    personal = "personal data" if card.personal_data else "no personal data"
    return " · ".join(part for part in (card.owner, metrics, personal) if part)


def history_entry(md: ModelDeployment, rollout: RolloutStatus, now: str) -> dict[str, Any]:
    """The history line of a finished rollout, with the model card it was made under."""
    outcome = {"Promoted": "promoted", "RolledBack": "rolledBack"}.get(rollout.phase, "aborted")
    approval = rollout.approval
    entry: dict[str, Any] = {
        "version": rollout.version,
        "promotedAt": now,
        "outcome": outcome,
        "reason": rollout.message,
    }
    if approval is not None and approval.decision == "approved":
        entry["approvedBy"] = approval.by
    if md.spec.model_card is not None and md.spec.model.version == rollout.version:
        entry["modelCard"] = md.spec.model_card.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    return entry


def with_history(
    history: Sequence[Mapping[str, Any]], entry: dict[str, Any], limit: int = 20
) -> list[dict[str, Any]]:
    return [*(dict(h) for h in history), entry][-limit:]


def rollout_conditions(md: ModelDeployment) -> list[ConditionUpdate]:
    """Progressing, Degraded, Approved and RolledBack, from the recorded rollout."""
    status = md.status
    rollout = status.rollout if status else None
    if rollout is None:
        return [
            ConditionUpdate("Progressing", "False", "NoRollout", "No rollout has run."),
            ConditionUpdate("RolledBack", "False", "NoRollout", "No rollout has run."),
            ConditionUpdate("Approved", "Unknown", "NoRollout", "No rollout has run."),
        ]
    message = rollout.message or ""
    active = rollout.phase in ACTIVE
    updates = [
        ConditionUpdate("Progressing", "True" if active else "False", rollout.phase, message),
        ConditionUpdate(
            "RolledBack",
            "True" if rollout.phase == "RolledBack" else "False",
            rollout.phase,
            message if rollout.phase == "RolledBack" else f"{rollout.version}: {rollout.phase}",
        ),
    ]
    approval = rollout.approval
    if not md.spec.approval.required and approval is None:
        updates.append(
            ConditionUpdate("Approved", "True", "NotRequired", "No approval is required.")
        )
    elif approval is not None and approval.version == rollout.version:
        updates.append(
            ConditionUpdate(
                "Approved",
                "True" if approval.decision == "approved" else "False",
                "Approved" if approval.decision == "approved" else "Rejected",
                f"{approval.version} {approval.decision} by {approval.by} at "
                f"{kube_time(approval.at)}",
            )
        )
    elif rollout.phase == "AwaitingApproval":
        updates.append(
            ConditionUpdate(
                "Approved",
                "False",
                "AwaitingApproval",
                f"{rollout.version} waits for: aiosctl approve modeldeployment/"
                f"{md.metadata.get('name')} --version {rollout.version}",
            )
        )
    else:
        updates.append(ConditionUpdate("Approved", "Unknown", rollout.phase, "Not yet asked."))
    return updates


def serving_conditions(
    md: ModelDeployment, plan: Serving, stable_ready: bool, why_not: str
) -> list[ConditionUpdate]:
    """Ready (the stable version answers) and Degraded (the spec's version is not what
    serves, or nothing does), with the reason in the message."""
    wanted = md.spec.model.version
    rollout = md.status.rollout if md.status else None
    in_rollout = rollout is not None and rollout.phase in ACTIVE and rollout.version == wanted
    if stable_ready:
        ready = ConditionUpdate(
            "Ready", "True", "Serving", f"{plan.stable.version} answers V2 inference requests."
        )
    else:
        ready = ConditionUpdate("Ready", "False", "NotServing", f"{plan.stable.version}: {why_not}")
    if not stable_ready:
        reason = "ModelNotLoaded" if plan.first else "StableNotServing"
        degraded = ConditionUpdate("Degraded", "True", reason, ready.message)
    elif plan.stable.version == wanted:
        degraded = ConditionUpdate("Degraded", "False", "AsDeclared", f"{wanted} is served.")
    elif in_rollout:
        degraded = ConditionUpdate(
            "Degraded",
            "False",
            "RollingOut",
            f"{wanted} is rolling out; {plan.stable.version} serves meanwhile.",
        )
    else:
        why = rollout.message if rollout is not None and rollout.version == wanted else ""
        degraded = ConditionUpdate(
            "Degraded",
            "True",
            "VersionNotServed",
            f"{wanted} is not served ({why or 'its rollout ended'}); "
            f"{plan.stable.version} keeps serving.",
        )
    return [ready, degraded]
