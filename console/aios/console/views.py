"""What each page shows, from what the sources read: pure, so every rule the console applies
(who is asked, by when, what counts as a rate) is stated once and unit-tested."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aios.api import AutomationIntent, EdgeGateway, ModelDeployment
from aios.api.approval import permits
from aios.api.events import ActionRequest, ActionState

RUNNING = "running"
NAMESPACED_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
SIMPLE = re.compile(r"[a-z][-a-z]*")


@dataclass(frozen=True)
class Deadline:
    at: datetime
    what: str  # "escalates" | "expires"


@dataclass(frozen=True)
class PendingAction:
    """An action waiting for a human decision, with where it came from."""

    action_id: str
    namespace: str
    intent: str
    action: str
    target: str
    since: datetime
    approvers: tuple[str, ...]
    deadline: Deadline
    lineage: tuple[tuple[str, str], ...]

    def waits_for(self, user: str, groups: Iterable[str]) -> bool:
        return permits(self.approvers, user, groups)


def deadline(request: ActionRequest, since: datetime, now: datetime) -> Deadline:
    """The next thing that happens to a waiting action: its next escalation, or its expiry."""
    approval = request.action.approval
    waited = (now - since).total_seconds()
    for stage in sorted(approval.escalation, key=lambda e: e.after_seconds):
        if stage.after_seconds > waited:
            return Deadline(since + timedelta(seconds=stage.after_seconds), "escalates")
    return Deadline(since + timedelta(seconds=approval.timeout_seconds), "expires")


def lineage(request: ActionRequest, state: ActionState) -> tuple[tuple[str, str], ...]:
    """The reading, the model's answer, the rule and the policy decision, in words."""
    rows: list[tuple[str, str]] = []
    decision = request.decision
    if decision is not None:
        where = f" via gateway {decision.lineage.gateway}" if decision.lineage.gateway else ""
        rows.append(
            ("Reading", f"{decision.event_id} from sensor {decision.sensor_id}{where}, "
             f"{decision.time.isoformat(timespec='seconds')}")
        )  # fmt: skip
        values = ", ".join(
            f"{name}={value:g}"
            for call in decision.outputs.values()
            for name, value in call.items()
        )
        if decision.model is not None:
            model = decision.model
            side = " (canary)" if model.canary else ""
            scored = f"score {decision.score:.2f}" if decision.score is not None else "no score"
            sure = (
                f", confidence {decision.confidence:.2f}" if decision.confidence is not None else ""
            )
            rows.append(("Model", f"{model.deployment}@{model.version}{side}: {scored}{sure}"))
        if values:
            rows.append(("Outputs", values))
        rule = decision.rule or "none"
        fallback = f" (fallback: {decision.fallback_reason})" if decision.fallback else ""
        rows.append(("Rule", f"{rule}{fallback}"))
        if decision.trace_id:
            rows.append(("Trace", decision.trace_id))
    if request.manual is not None:
        manual = request.manual
        rows.append(("Requested by", manual.requested_by.username))
        rows.append(("Reason", manual.reason))
        if manual.sensor_id:
            rows.append(("Sensor", manual.sensor_id))
        if manual.reverts:
            rows.append(("Reverts", manual.reverts))
    if state.policy_decision_id:
        warned = f"; warnings: {'; '.join(state.policy_warnings)}" if state.policy_warnings else ""
        rows.append(("Policy", f"allowed (OPA decision {state.policy_decision_id}){warned}"))
    return tuple(rows)


def pending_action(
    request: ActionRequest, state: ActionState, since: datetime, now: datetime
) -> PendingAction:
    return PendingAction(
        action_id=request.action_id,
        namespace=request.intent.namespace,
        intent=request.intent.name,
        action=request.action.name,
        target=request.action.target,
        since=since,
        approvers=tuple(state.allowed_approvers),
        deadline=deadline(request, since, now),
        lineage=lineage(request, state),
    )


@dataclass(frozen=True)
class PendingVersion:
    """A model version whose rollout waits for a human decision."""

    namespace: str
    name: str
    version: str
    weight: int
    message: str
    approvers: tuple[str, ...]

    def waits_for(self, user: str, groups: Iterable[str]) -> bool:
        return permits(self.approvers, user, groups)


def pending_version(raw: Mapping[str, Any]) -> PendingVersion | None:
    model = ModelDeployment.model_validate(dict(raw))
    rollout = model.status.rollout if model.status else None
    if rollout is None or rollout.phase != "AwaitingApproval":
        return None
    return PendingVersion(
        namespace=model.metadata["namespace"],
        name=model.metadata["name"],
        version=rollout.version,
        weight=rollout.weight,
        message=rollout.message or "",
        approvers=tuple(model.spec.approval.approvers),
    )


@dataclass(frozen=True)
class ActionRow:
    """One action of the timeline."""

    action_id: str
    namespace: str
    intent: str
    action: str
    started: datetime
    outcome: str
    decided_by: str  # the approver, or the person who asked; "" for neither
    trace_id: str
    site: str
    compensation: str | None

    @property
    def revertible(self) -> bool:
        return self.outcome == "executed" and self.compensation is not None


def action_row(
    request: ActionRequest, approver: str, outcome: str | None, started: datetime
) -> ActionRow:
    asker = request.manual.requested_by.username if request.manual else ""
    decision = request.decision
    return ActionRow(
        action_id=request.action_id,
        namespace=request.intent.namespace,
        intent=request.intent.name,
        action=request.action.name,
        started=started,
        outcome=outcome or RUNNING,
        decided_by=approver or asker,
        trace_id=request.trace_id or "",
        site=(decision.site if decision else None) or "",
        compensation=None
        if request.manual and request.manual.reverts
        else request.action.compensation,
    )


@dataclass(frozen=True)
class Filters:
    intent: str = ""
    site: str = ""
    outcome: str = ""

    def visibility_query(self) -> str:
        """The part Temporal's visibility can filter (so the newest N are of this intent or
        outcome, not the newest N overall): the intent (``namespace/name``) and the
        outcome are search attributes; the site is filtered here."""
        terms = []
        if NAMESPACED_NAME.fullmatch(self.intent):
            terms.append(f"AiosIntent = '{self.intent}'")
        if self.outcome == RUNNING:
            terms.append("ExecutionStatus = 'Running'")
        elif SIMPLE.fullmatch(self.outcome):
            terms.append(f"AiosOutcome = '{self.outcome}'")
        return " AND ".join(terms)

    def keep(self, row: ActionRow) -> bool:
        return (
            (not self.intent or self.intent in (row.intent, f"{row.namespace}/{row.intent}"))
            and (not self.site or row.site == self.site)
            and (not self.outcome or row.outcome == self.outcome)
        )


@dataclass(frozen=True)
class Counted:
    """A counter's value when it was read."""

    value: int
    at: datetime


def per_minute(before: Counted | None, now: Counted) -> float | None:
    """The counter's rate between two reads; None without an earlier read (or a reset)."""
    if before is None or now.value < before.value:
        return None
    seconds = (now.at - before.at).total_seconds()
    return (now.value - before.value) * 60 / seconds if seconds > 0 else None


@dataclass(frozen=True)
class IntentRow:
    namespace: str
    name: str
    ready: str
    mode: str
    decisions: int
    actions: int
    actions_declared: tuple[str, ...]
    decisions_per_minute: float | None = None
    actions_per_minute: float | None = None


def ready_of(status: Any) -> str:
    """The Ready condition's status and reason, as ``kubectl get`` shows it."""
    conditions = getattr(status, "conditions", None) or []
    ready = next((c for c in conditions if c.type == "Ready"), None)
    return f"{ready.status} ({ready.reason})" if ready else "Unknown"


def intent_row(raw: Mapping[str, Any]) -> IntentRow:
    intent = AutomationIntent.model_validate(dict(raw))
    counts = intent.status.counts if intent.status else None
    return IntentRow(
        namespace=intent.metadata["namespace"],
        name=intent.metadata["name"],
        ready=ready_of(intent.status),
        mode=intent.spec.mode,
        decisions=counts.decisions if counts else 0,
        actions=counts.actions if counts else 0,
        actions_declared=tuple(a.name for a in intent.spec.actions),
    )


@dataclass
class Rates:
    """Each intent's counters as last read, so each refresh shows rates since the last."""

    seen: dict[tuple[str, str, str], Counted] = field(default_factory=dict)

    def add(self, row: IntentRow, at: datetime) -> IntentRow:
        rates = []
        for counter, value in (("decisions", row.decisions), ("actions", row.actions)):
            key = (row.namespace, row.name, counter)
            now = Counted(value, at)
            before = self.seen.get(key)
            rates.append(per_minute(before, now))
            if before is None or (at - before.at).total_seconds() >= 10 or value < before.value:
                self.seen[key] = now
        return IntentRow(**{**row.__dict__, "decisions_per_minute": rates[0],
                            "actions_per_minute": rates[1]})  # fmt: skip


@dataclass(frozen=True)
class ModelRow:
    namespace: str
    name: str
    ready: str
    active: str
    rollout: str  # "2024.11.2 Progressing, step 2 at 25%"


def model_row(raw: Mapping[str, Any]) -> ModelRow:
    model = ModelDeployment.model_validate(dict(raw))
    status = model.status
    rollout = status.rollout if status else None
    step = f", step {rollout.steps[-1].step}" if rollout and rollout.steps else ""
    described = (
        f"{rollout.version} {rollout.phase}{step} at {rollout.weight}%" if rollout else "none"
    )
    return ModelRow(
        namespace=model.metadata["namespace"],
        name=model.metadata["name"],
        ready=ready_of(status),
        active=(status.active_version if status else None) or "—",
        rollout=described,
    )


@dataclass(frozen=True)
class GatewayRow:
    namespace: str
    name: str
    ready: str
    last_seen: datetime | None
    buffer_fill: float | None


def gateway_row(raw: Mapping[str, Any]) -> GatewayRow:
    gateway = EdgeGateway.model_validate(dict(raw))
    status = gateway.status
    return GatewayRow(
        namespace=gateway.metadata["namespace"],
        name=gateway.metadata["name"],
        ready=ready_of(status),
        last_seen=status.last_seen if status else None,
        buffer_fill=status.buffer_fill_ratio if status else None,
    )


def span(seconds: int) -> str:
    """``2h 5m``: the two largest units, as people read a duration at a glance."""
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or parts:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts) or "0s"


def ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "never"
    return f"{span(max(int((now - then).total_seconds()), 0))} ago"


def left(until: datetime, now: datetime) -> str:
    seconds = int((until - now).total_seconds())
    return f"in {span(seconds)}" if seconds > 0 else "now"
