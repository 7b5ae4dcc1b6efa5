"""Whether an Approval may be admitted, and whether a ModelDeployment's recorded approval
is one an Approval vouches for. Pure: the handler fetches what is checked against.

An Approval is admitted only when it names the user the API server authenticated (and
groups they hold), its target waits for a decision on what it names, and that user is
among the target's approvers now (a ModelDeployment's ``spec.approval.approvers``; an
action's approvers at its current escalation stage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aios.api.approval import ApprovalSpec, User, permits
from aios.api.events import ActionState


def identity_refusal(claimed: User, userinfo: Mapping[str, Any], field: str) -> str | None:
    """Why the user ``claimed`` at ``field`` (``spec.approver``) is not the requesting
    user, or None."""
    username = userinfo.get("username") or ""
    if claimed.username != username:
        return f"{field}.username: you are authenticated as {username!r}, not {claimed.username!r}"
    foreign = sorted(set(claimed.groups) - set(userinfo.get("groups") or []))
    if foreign:
        return f"{field}.groups: {username} is not a member of {', '.join(foreign)}"
    return None


def model_deployment_refusal(
    spec: ApprovalSpec, md: Mapping[str, Any] | None, namespace: str
) -> str | None:
    """Why the ModelDeployment does not take this decision now, or None."""
    label = f"modeldeployment/{spec.target.name}"
    if md is None:
        return f"{label} does not exist in namespace {namespace}"
    rollout = (md.get("status") or {}).get("rollout") or {}
    if rollout.get("phase") != "AwaitingApproval":
        return (
            f"{label} is not waiting for a decision (rollout of "
            f"{rollout.get('version', 'nothing')}: {rollout.get('phase', 'none')})"
        )
    if spec.target.version != rollout.get("version"):
        return (
            f"{label} waits for a decision on {rollout.get('version')}, not {spec.target.version}"
        )
    approvers = ((md.get("spec") or {}).get("approval") or {}).get("approvers") or []
    return _approver_refusal(spec, approvers, label)


def action_refusal(spec: ApprovalSpec, state: ActionState | None, namespace: str) -> str | None:
    """Why the action (its workflow's ``state`` query, None when there is no such
    workflow) does not take this decision now, or None."""
    label = f"action/{spec.target.name}"
    if not spec.target.name.startswith(f"{namespace}."):
        owner = spec.target.name.partition(".")[0]
        return f"{label} belongs to namespace {owner}: create the Approval there"
    if state is None:
        return f"{label}: no such action"
    if state.phase != "awaiting-approval":
        return f"{label} is not waiting for approval ({state.phase})"
    return _approver_refusal(spec, state.allowed_approvers, label)


def _approver_refusal(spec: ApprovalSpec, approvers: list[str], label: str) -> str | None:
    if permits(approvers, spec.approver.username, spec.approver.groups):
        return None
    return f"{spec.approver.username} is not among the approvers of {label}: {', '.join(approvers)}"


def recorded_approval(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    rollout = (status or {}).get("rollout") or {}
    found = rollout.get("approval")
    return dict(found) if found else None


def record_refusal(
    record: Mapping[str, Any], md_name: str, approval: Mapping[str, Any] | None
) -> str | None:
    """Why ``status.rollout.approval`` (``record``) is not what the Approval object it
    names says, or None. Only the rollout workflow writes it, from an Approval it read."""
    name = record.get("name")
    if not name or approval is None:
        return (
            "status.rollout.approval: only the rollout workflow records a decision, from an "
            "admitted Approval (aiosctl approve)"
        )
    spec = ApprovalSpec.model_validate(approval.get("spec") or {})
    claimed = (
        "ModelDeployment",
        md_name,
        record.get("version"),
        record.get("decision"),
        record.get("by"),
    )
    vouched = (
        spec.target.kind,
        spec.target.name,
        spec.target.version,
        spec.decision,
        spec.approver.username,
    )
    if claimed != vouched:
        return f"status.rollout.approval: does not match Approval {name}"
    return None
