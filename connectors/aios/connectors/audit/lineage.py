"""Lineage: what ``aiosctl audit trace`` follows from an action to its reading."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aios.connectors.audit.records import AuditRecord


def action_steps(records: Sequence[AuditRecord], action_id: str) -> list[AuditRecord]:
    """The ``action-step`` records of one action, in the order they were chained."""
    return sorted(
        (r for r in records if r.kind == "action-step" and r.details.get("actionId") == action_id),
        key=lambda r: r.seq,
    )


def trace(records: Sequence[AuditRecord], action_id: str) -> dict[str, Any]:
    """The whole lineage of one action from the chain: its trace id, sensor readings → gateway and
    filter-chain version → Kafka offsets → model (version, score, confidence, canary or
    stable, and the promotion that put it there) → decision rule or fallback → policy
    decision ids → approver → result. Raises LookupError when the action is unknown."""
    steps = action_steps(records, action_id)
    if not steps:
        raise LookupError(f"no action-step records for action {action_id!r}")
    first, last = steps[0], steps[-1]
    decision: dict[str, Any] = next(
        (s.details["decision"] for s in steps if s.details.get("decision")), {}
    )
    lineage = decision.get("lineage") or {}
    model = decision.get("model") or None
    model_name = (model or {}).get("deployment") or (model or {}).get("name")
    edge = _latest(
        records,
        first.seq,
        "edge-config",
        lambda d: (
            d.get("gateway") == lineage.get("gateway")
            and d.get("configGeneration") == lineage.get("configGeneration")
        ),
    )
    promotion = (
        _latest(
            records,
            first.seq,
            ("promotion", "rollback"),
            lambda d: (
                (d.get("model") or {}).get("name") == model_name
                and (d.get("model") or {}).get("version") == model.get("version")
            ),
        )
        if model
        else None
    )
    return {
        "actionId": action_id,
        "traceId": next((s.trace_id for s in steps if s.trace_id), None),
        "intent": first.details.get("intent"),
        "action": first.details.get("action"),
        "readings": {
            "eventIds": lineage.get("eventIds") or [],
            "sensors": lineage.get("sensors") or [],
        },
        "edge": {
            "gateway": lineage.get("gateway"),
            "configGeneration": lineage.get("configGeneration"),
            "filterChain": lineage.get("filterChain"),
            "record": edge.seq if edge else None,
        },
        "kafka": {k: lineage.get(k) for k in ("topic", "partition", "offset")},
        "model": None
        if model is None
        else {
            **model,
            "name": model_name,
            "score": decision.get("score"),
            "confidence": decision.get("confidence"),
            "promotion": None
            if promotion is None
            else {
                "record": promotion.seq,
                "kind": promotion.kind,
                "approver": promotion.details.get("approver") or promotion.actor,
            },
        },
        "decision": {
            "rule": decision.get("rule"),
            "fallback": decision.get("fallback"),
            "fallbackReason": decision.get("fallbackReason"),
        },
        "policyDecisions": [
            {"step": s.details.get("step"), "decisionId": s.policy_decision_id}
            for s in steps
            if s.policy_decision_id
        ],
        "requestedBy": first.details.get("requestedBy"),
        "reason": first.details.get("reason"),
        "reverts": first.details.get("reverts"),
        "revertedBy": next(
            (
                r.details.get("actionId")
                for r in records
                if r.kind == "action-step" and r.details.get("reverts") == action_id
            ),
            None,
        ),
        "approver": next(
            (s.details.get("approver") for s in reversed(steps) if s.details.get("approver")), None
        ),
        "result": last.details.get("result"),
        "steps": [
            {
                "record": s.seq,
                "step": s.details.get("step"),
                "time": s.time,
                "policyDecisionId": s.policy_decision_id,
                "approver": s.details.get("approver"),
                "result": s.details.get("result"),
            }
            for s in steps
        ],
    }


def _latest(
    records: Sequence[AuditRecord],
    before: int,
    kinds: str | tuple[str, ...],
    match: Callable[[dict[str, Any]], bool],
) -> AuditRecord | None:
    """The newest record of ``kinds`` before seq ``before`` whose details ``match``."""
    wanted = (kinds,) if isinstance(kinds, str) else kinds
    found = [r for r in records if r.kind in wanted and r.seq < before and match(r.details)]
    return max(found, key=lambda r: r.seq) if found else None
