"""What serves a ModelDeployment now, and what the operator does about its rollout workflow:
decided from the spec and the recorded status only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aios.api.model_deployment import ModelDeployment, ModelSource, RolloutStatus
from aios.api.model_rollout import ModelRollout
from aios.operator.reconcile.acceptance import needs_retry
from aios.workflows.rollout_io import RolloutInput

ACTIVE: frozenset[str] = frozenset({"Deploying", "Progressing", "AwaitingApproval"})
Track = Literal["stable", "canary", "shadow"]


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


def rollout_pending(body: Mapping[str, Any]) -> bool:
    """A published step not yet served."""
    status = body.get("status") or {}
    rollout = status.get("rollout") or {}
    return bool(rollout) and int(rollout.get("revision") or 0) != int(
        status.get("observedRolloutRevision") or 0
    )


def reconcile_unconverged(body: Mapping[str, Any]) -> bool:
    """Reconciling again helps while the object is not Ready (the default) and while a new
    version takes traffic or a mirror without answering, as far as the last reconcile's
    probe saw: its Service may not have routed to its ready pod yet, and nothing else would
    probe it again before the rollout's next step."""
    if needs_retry(body):
        return True
    status = body.get("status") or {}
    return any((status.get(track) or {}).get("ready") is False for track in ("canary", "shadow"))


def published_rollout(md: ModelDeployment, record: ModelRollout | None) -> RolloutStatus | None:
    """What the rollout workflow last published in ``record`` (its ModelRollout), when
    ``status.rollout`` does not say it yet: only the current rollout's (same workflow id,
    in a ModelRollout this object owns), so a finished or foreign one never comes back."""
    current = md.status.rollout if md.status else None
    if current is None or record is None or record.status is None:
        return None
    published = record.status.rollout
    owners = record.metadata.get("ownerReferences") or []
    if (
        published is None
        or published.workflow_id != current.workflow_id
        or record.spec.workflow_id != current.workflow_id
        or not any(o.get("uid") == md.metadata.get("uid") for o in owners)
    ):
        return None
    return None if published == current else published


def rollout_input(md: ModelDeployment, rollout: RolloutStatus, namespace: str) -> RolloutInput:
    """What the rollout workflow is started with: the rollout and the spec it follows,
    fixed for the workflow's life."""
    spec = md.spec
    return RolloutInput(
        namespace=namespace,
        name=md.metadata["name"],
        version=rollout.version,
        strategy=rollout.strategy,
        source=rollout.source,
        workflow_id=rollout.workflow_id,
        steps=list(spec.rollout.steps),
        shadow_seconds=spec.rollout.shadow_seconds,
        gates=spec.rollout.analysis,
        approval_required=spec.approval.required,
        approvers=list(spec.approval.approvers),
        ready_timeout_seconds=spec.rollout.progress_deadline_seconds,
    )
