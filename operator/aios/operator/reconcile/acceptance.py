"""Whether a spec is acceptable, and the status that records it.

The API server already enforces the schema; this catches what only the models know (and
objects stored before a stricter schema), and stamps ``observedGeneration`` so users can
tell that the operator has seen their latest change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from aios.api import Resource
from aios.api.base import validation_message
from aios.operator.reconcile.conditions import ConditionUpdate, condition, merge_conditions
from aios.operator.reconcile.finalizers import is_deleting

ACCEPTED = "Accepted"


def acceptance(model: type[Resource[Any, Any]], body: Mapping[str, Any]) -> ConditionUpdate:
    try:
        model.model_validate({"metadata": {}, "spec": body.get("spec") or {}})
    except ValidationError as error:
        return ConditionUpdate(ACCEPTED, "False", "InvalidSpec", validation_message(error))
    return ConditionUpdate(ACCEPTED, "True", "SpecValid", "The spec is valid.")


def needs_reconcile(body: Mapping[str, Any]) -> bool:
    """Level-triggered: act when the operator has not yet observed this generation."""
    metadata = body.get("metadata") or {}
    if is_deleting(metadata):
        return False
    status = body.get("status") or {}
    return bool(status.get("observedGeneration") != metadata.get("generation"))


def needs_retry(body: Mapping[str, Any]) -> bool:
    """Timer path: a new generation, a failed attempt, or an object still on its way to Ready."""
    if needs_reconcile(body):
        return True
    metadata = body.get("metadata") or {}
    if is_deleting(metadata):
        return bool(metadata.get("finalizers"))
    conditions = (body.get("status") or {}).get("conditions") or []
    ready = condition(conditions, "Ready")
    return ready is not None and ready.get("status") != "True"


def next_status(
    body: Mapping[str, Any], updates: list[ConditionUpdate], now: str
) -> dict[str, Any]:
    """The status patch after a reconcile of ``body``'s current generation."""
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    current = (body.get("status") or {}).get("conditions") or []
    return {
        "observedGeneration": generation,
        "conditions": merge_conditions(current, updates, generation, now),
    }
