"""The status a ModelDeployment's operator writes: serving targets, history, conditions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aios.api.base import kube_time
from aios.api.model_deployment import ModelCard, ModelDeployment, ModelSource, RolloutStatus
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.reconcile.model_deployment.kserve import kserve_endpoints
from aios.operator.reconcile.model_deployment.names import (
    endpoints,
    service_name,
    version_endpoints,
)
from aios.operator.reconcile.model_deployment.serving import ACTIVE, Serving, Track


def target(
    md: ModelDeployment, source: ModelSource, track: Track, namespace: str, kserve: bool
) -> dict[str, Any]:
    """A ``ServingTarget`` (wire form) for ``status``: what ``route`` reads (in raw mode,
    the version's own Service; with KServe, the track's InferenceService)."""
    name = md.metadata["name"]
    if kserve:
        http, grpc = kserve_endpoints(service_name(name, track), namespace)
    else:
        http, grpc = version_endpoints(name, namespace, source.version)
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
    canary = candidate is not None and plan.track == "canary"
    shadow = candidate is not None and plan.track == "shadow"
    served = stable if stable_ready or not plan.first else None
    # users call the stable track, which follows promotions (KServe's stable one alike)
    public = (
        (stable["http"], stable["grpc"])
        if kserve
        else endpoints(md.metadata["name"], namespace, "stable")
    )

    def candidate_target(track: Track) -> dict[str, Any] | None:
        if candidate is None:
            return None
        return {**target(md, candidate, track, namespace, kserve), "ready": candidate_ready}

    return {
        "stable": served,
        "activeVersion": plan.stable.version if served else None,
        "endpoints": {"http": public[0], "grpc": public[1]} if served else None,
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


def observed_rollout(md: ModelDeployment, now: str) -> dict[str, Any]:
    """Mark the rollout's revision served; a finished rollout goes into the history once."""
    status = md.status
    rollout = status.rollout if status else None
    if status is None or rollout is None or rollout.revision == status.observed_rollout_revision:
        return {}
    fields: dict[str, Any] = {"observedRolloutRevision": rollout.revision}
    if rollout.phase not in ACTIVE:
        history = [
            h.model_dump(mode="json", by_alias=True, exclude_none=True) for h in status.history
        ]
        entry = history_entry(md, rollout, now)
        last = history[-1] if history else {}
        if (last.get("version"), last.get("outcome")) != (entry["version"], entry["outcome"]):
            fields["history"] = with_history(history, entry)
    return fields
