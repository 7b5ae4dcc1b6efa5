"""Kubernetes-style status conditions, computed purely.

``lastTransitionTime`` only moves when a condition's status changes, as the API
conventions require, so a re-run that changes nothing writes an identical status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aios.api.base import kube_time

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class ConditionUpdate:
    """What a reconcile concluded about one condition type."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def now_rfc3339() -> str:
    return kube_time(datetime.now(UTC))


def merge_conditions(
    current: Iterable[Mapping[str, Any]],
    updates: Iterable[ConditionUpdate],
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Apply ``updates`` to ``current``; keep other types; order by type for stable output."""
    merged = {c["type"]: dict(c) for c in current}
    for update in updates:
        previous = merged.get(update.type)
        unchanged = previous is not None and previous.get("status") == update.status
        merged[update.type] = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": previous["lastTransitionTime"] if unchanged and previous else now,
            "observedGeneration": generation,
        }
    return [merged[k] for k in sorted(merged)]


def condition(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: Iterable[Mapping[str, Any]], type_: str) -> bool:
    found = condition(conditions, type_)
    return found is not None and found.get("status") == "True"
