"""ManualAction, purely: whether one may be admitted, and the action request it starts.
The handler fetches what is checked against (the intent from the store, the action to
revert from Temporal).

A request to act names an action its intent declares; its id is derived from the object's
uid, so starting it again (a retried reconcile) starts nothing new. A request to revert
names an executed action that declares its compensation; the reversal's id is derived
from the reverted action's, so an action is reverted once, whoever asks and however often.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aios.api import AutomationIntent, ManualAction
from aios.api.events import ActionRequest, ManualRequest
from aios.api.manual_action import ManualActionSpec
from aios.operator.reconcile.automation_intent import runner_config

REVERT_SUFFIX = ".revert"


def manual_action_id(namespace: str, intent: str, action: str, uid: str) -> str:
    """``<namespace>.<intent>.<action>.<digest>``, the shape of a runner's action ids."""
    digest = hashlib.sha256(f"manual/{uid}".encode()).hexdigest()[:24]
    return f"{namespace}.{intent}.{action}.{digest}"


def revert_id(action_id: str) -> str:
    return f"{action_id}{REVERT_SUFFIX}"


@dataclass(frozen=True)
class Original:
    """The action a ManualAction reverts, as Temporal has it."""

    request: ActionRequest | None
    """Its workflow's input; None when there is no such action."""
    phase: str | None
    """Its outcome once it ended (``executed``, ``denied``…), else its workflow's status."""
    reverted: bool
    """Whether its reversal's workflow exists already."""


def act_refusal(
    spec: ManualActionSpec, intent: Mapping[str, Any] | None, namespace: str
) -> str | None:
    """Why the intent does not take a request to run ``spec.action`` now, or None."""
    label = f"automationintent/{spec.intent}"
    if intent is None:
        return f"spec.intent: {label} does not exist in namespace {namespace}"
    declared = [a.get("name") for a in (intent.get("spec") or {}).get("actions") or []]
    if spec.action not in declared:
        return (
            f"spec.action: {label} declares no action {spec.action!r} "
            f"(it declares: {', '.join(declared) or 'none'})"
        )
    return None


def revert_refusal(
    spec: ManualActionSpec, original: Original, intent: Mapping[str, Any] | None, namespace: str
) -> str | None:
    """Why the action ``spec.reverts`` cannot be reverted now, or None."""
    reverts = spec.reverts or ""
    label = f"action/{reverts}"
    if not reverts.startswith(f"{namespace}."):
        owner = reverts.partition(".")[0]
        return f"spec.reverts: {label} belongs to namespace {owner}: ask there"
    request = original.request
    if request is None:
        return f"spec.reverts: {label}: no such action"
    if spec.intent is not None and spec.intent != request.intent.name:
        return f"spec.intent: {label} is an action of {request.intent.name}, not {spec.intent}"
    if request.manual is not None and request.manual.reverts is not None:
        return f"spec.reverts: {label} undoes {request.manual.reverts}; it cannot be reverted"
    compensation = request.action.compensation
    if compensation is None:
        return (
            f"spec.reverts: {label} cannot be reversed: its action {request.action.name!r} "
            "declares no compensation"
        )
    if original.phase != "executed":
        return f"spec.reverts: {label} has not run ({original.phase}): there is nothing to undo"
    if original.reverted:
        return f"spec.reverts: {label} was already reverted (action/{revert_id(reverts)})"
    probe = spec.model_copy(update={"intent": request.intent.name, "action": compensation})
    refused = act_refusal(probe, intent, namespace)
    return None if refused is None else f"spec.reverts: {label}: its compensation: {refused}"


def manual_request(
    manual: ManualAction, intent: AutomationIntent, original: ActionRequest | None
) -> ActionRequest:
    """The action workflow's input for ``manual`` (``original``: the action it reverts),
    with the intent's current declaration of the action to run."""
    spec, meta = manual.spec, manual.metadata
    config = runner_config(intent, [])
    if original is None:
        name = spec.action or ""
        action_id = manual_action_id(meta["namespace"], config.intent.name, name, meta["uid"])
    else:
        name = original.action.compensation or ""
        action_id = revert_id(original.action_id)
    return ActionRequest(
        action_id=action_id,
        intent=config.intent,
        intent_labels=config.labels,
        data_policy=intent.spec.data_policy.model_dump(
            mode="json", by_alias=True, exclude_none=True
        ),
        action=next(a for a in intent.spec.actions if a.name == name),
        manual=ManualRequest(
            manual_action=meta["name"],
            requested_by=spec.requested_by,
            reason=spec.reason,
            requested_at=datetime.fromisoformat(meta["creationTimestamp"]),
            sensor_id=spec.sensor_id or (original.sensor_id if original else None) or None,
            reverts=spec.reverts,
        ),
        actions_topic=config.topics.actions,
    )
