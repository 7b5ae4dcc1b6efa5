"""Pure construction of what the runner publishes: decisions, action requests, dead
letters, and the idempotency key that makes a redelivered reading act at most once."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from aios.api.automation_intent import Action
from aios.api.events import (
    ActionRequest,
    Decision,
    DecisionLineage,
    IntentRef,
    ModelRef,
    Reading,
)
from aios.api.runner import RunnerConfig
from aios.connectors.inference import Target
from aios.runner.rules import CallResult, Verdict

DLQ_REASON = "aios-dead-letter-reason"
DLQ_SOURCE = "aios-source"


@dataclass(frozen=True)
class Position:
    """Where a record was read."""

    topic: str
    partition: int
    offset: int


def action_id(intent: IntentRef, action: Action, sensor_id: str, time: datetime) -> str:
    """The idempotency key of an action: the same for every decision on the same sensor
    within one ``idempotencyWindowSeconds`` window, so replays and repeats act once."""
    window = action.idempotency_window_seconds
    bucket = int(time.timestamp()) // window if window else time.isoformat()
    material = f"{intent.namespace}/{intent.name}/{action.name}/{sensor_id}/{bucket}"
    digest = hashlib.sha256(material.encode()).hexdigest()[:24]
    return f"{intent.namespace}.{intent.name}.{action.name}.{digest}"


def decide_record(
    config: RunnerConfig,
    position: Position,
    reading: Reading,
    verdict: Verdict,
    calls: Mapping[str, CallResult],
    targets: Mapping[str, Target | None],
    now: datetime,
    traceparent: str | None = None,
) -> Decision:
    """The decision record of one reading (one per reading, acted on or not)."""
    spec = config.spec
    act = verdict.action is not None and spec.mode == "active"
    action = next((a for a in spec.actions if a.name == verdict.action), None)
    # the rule's models; or, for a decision no model-reading rule made, those that answered
    used = sorted(verdict.calls) or sorted(n for n, r in calls.items() if r.state == "ok")
    model = None
    score = confidence = None
    if used:
        call = used[0]
        deployment = next(m.model_deployment for m in spec.models if m.name == call)
        target = targets.get(call)
        model = ModelRef(
            call=call,
            deployment=deployment,
            version=target.version if target else None,
            canary=bool(target and target.role == "canary"),
        )
        outputs = calls[call].outputs if call in calls else {}
        score, confidence = outputs.get("score"), outputs.get("confidence")
    return Decision(
        decision_id=f"{config.intent.namespace}/{config.intent.name}/{reading.event_id}",
        intent=config.intent,
        event_id=reading.event_id,
        sensor_id=reading.sensor_id,
        time=reading.time,
        decided_at=now,
        outcome="act" if verdict.action else "none",
        rule=verdict.rule,
        action=verdict.action,
        action_id=action_id(config.intent, action, reading.sensor_id, reading.time)
        if act and action is not None
        else None,
        fallback=verdict.fallback,
        fallback_reason=verdict.fallback_reason,
        model=model,
        score=score,
        confidence=confidence,
        outputs={name: dict(r.outputs) for name, r in calls.items() if r.state == "ok"},
        mode="shadow" if spec.mode == "shadow" else "active",
        site=config.site,
        lineage=DecisionLineage(
            topic=position.topic,
            partition=position.partition,
            offset=position.offset,
            event_ids=[reading.event_id],
            gateway=reading.lineage.gateway,
            config_generation=reading.lineage.config_generation,
            filter_chain=reading.lineage.filter_chain,
        ),
        traceparent=traceparent,
    )


def action_request(config: RunnerConfig, decision: Decision) -> ActionRequest | None:
    """The workflow input for a decision that acts (active mode only)."""
    if decision.action_id is None:
        return None
    action = next(a for a in config.spec.actions if a.name == decision.action)
    return ActionRequest(
        action_id=decision.action_id,
        intent=config.intent,
        intent_labels=config.labels,
        data_policy=config.spec.data_policy.model_dump(
            mode="json", by_alias=True, exclude_none=True
        ),
        action=action,
        decision=decision,
        actions_topic=config.topics.actions,
    )
