"""The records that flow between components on Kafka: the wire contract, as models.

``Reading`` is what an edge agent forwards (key: ``sensorId``; W3C ``traceparent`` in the
headers) and what an intent runner consumes; a record that does not parse goes to the
intent's dead-letter topic with pydantic's message as the reason. ``Decision`` is what
the runner publishes for every reading, and ``ActionRequest`` what it hands to the action
workflow; ``ActionState`` and ``ActionOutcome`` are what that workflow tells its clients.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from aios.api.approval import User
from aios.api.automation_intent import Action
from aios.api.base import RESERVED_METRIC_NAMES, ApiModel, MetricName, exactly_one_of


class ReadingLineage(ApiModel):
    """Where a reading came from, so an action can be traced back to the sensor."""

    gateway: str | None = Field(default=None, description="EdgeGateway name.")
    config_generation: int | None = Field(
        default=None, ge=0, description="EdgeGateway generation whose filter chain produced it."
    )
    filter_chain: str | None = Field(
        default=None, description="Digest of the filter chain configuration that was applied."
    )


class Reading(ApiModel):
    """One sensor reading (or one window aggregate) after the edge filter chain."""

    event_id: str = Field(min_length=1, max_length=128, description="Unique id; dedup key.")
    sensor_id: str = Field(
        min_length=1, max_length=128, description="Device id, or its keyed hash if anonymised."
    )
    time: datetime = Field(description="When it was measured (RFC 3339, with offset).")
    metrics: dict[MetricName, float] = Field(
        min_length=1, description="Measured values by metric (µg/m³, °C, %)."
    )
    site: str | None = Field(default=None, description="Site (city district) of the gateway.")
    cell: str | None = Field(
        default=None, description="Generalised location (grid cell id) when anonymised."
    )
    lat: float | None = Field(default=None, ge=-90, le=90, description="Exact latitude.")
    lon: float | None = Field(default=None, ge=-180, le=180, description="Exact longitude.")
    flags: list[str] = Field(
        default_factory=list, description="Edge annotations, e.g. 'anomaly', 'aggregate'."
    )
    lineage: ReadingLineage = Field(
        default_factory=ReadingLineage, description="Edge provenance of this reading."
    )

    @field_validator("metrics")
    @classmethod
    def _finite(cls, values: dict[str, float]) -> dict[str, float]:
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            raise ValueError(f"non-finite values for {', '.join(sorted(bad))}")
        return values

    @field_validator("metrics")
    @classmethod
    def _not_reserved(cls, values: dict[str, float]) -> dict[str, float]:
        reserved = sorted(set(values) & set(RESERVED_METRIC_NAMES))
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: the reading's own fields, not metrics")
        return values

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time needs a UTC offset")
        return value


FallbackReason = Literal["unsure", "unavailable", "stale", "incomplete", "no-model"]


class ModelRef(ApiModel):
    """Which model (and which side of a rollout) produced the outputs a rule used."""

    call: str = Field(description="Name of the model call in the intent.")
    deployment: str = Field(description="ModelDeployment name.")
    version: str | None = Field(default=None, description="Model version that answered.")
    canary: bool = Field(default=False, description="Whether the canary answered.")


class DecisionLineage(ApiModel):
    """Where the decided reading sits in Kafka and where it came from at the edge."""

    topic: str = Field(description="Source topic.")
    partition: int = Field(ge=0, description="Source partition.")
    offset: int = Field(ge=0, description="Source offset.")
    event_ids: list[str] = Field(default_factory=list, description="Readings decided on.")
    gateway: str | None = Field(default=None, description="EdgeGateway of the reading.")
    config_generation: int | None = Field(default=None, description="Gateway config generation.")
    filter_chain: str | None = Field(default=None, description="Digest of the edge filter chain.")


class IntentRef(ApiModel):
    namespace: str = Field(description="Namespace of the AutomationIntent.")
    name: str = Field(description="Name of the AutomationIntent.")
    generation: int = Field(ge=0, description="Generation whose rules decided.")


class Decision(ApiModel):
    """One decision per reading, published to the intent's decisions topic."""

    decision_id: str = Field(description="`<namespace>/<intent>/<eventId>`: stable across replays.")
    intent: IntentRef
    event_id: str
    sensor_id: str
    time: datetime = Field(description="Time of the reading.")
    decided_at: datetime
    outcome: Literal["act", "none"] = Field(description="Whether an action follows.")
    rule: str | None = Field(default=None, description="Rule (or fallback rule) that decided.")
    action: str | None = Field(default=None, description="Action named by the rule.")
    action_id: str | None = Field(
        default=None, description="Idempotency key of the action; the workflow id."
    )
    fallback: bool = Field(default=False, description="Whether the fallback rules decided.")
    fallback_reason: FallbackReason | None = None
    model: ModelRef | None = Field(
        default=None,
        description="Model whose outputs decided: the deciding rule's, or the first that "
        "answered when no rule reading a model decided (which version saw the reading).",
    )
    score: float | None = None
    confidence: float | None = None
    outputs: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Model outputs by call name."
    )
    mode: Literal["active", "shadow"] = "active"
    lineage: DecisionLineage
    traceparent: str | None = Field(
        default=None, description="W3C trace context of the reading, carried to the action."
    )
    site: str | None = Field(
        default=None, description="The site that decided (the chart's site.name)."
    )

    @property
    def trace_id(self) -> str | None:
        """The trace id of ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
        parts = (self.traceparent or "").split("-")
        return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class ManualRequest(ApiModel):
    """A person's request (a ManualAction, admitted for the user the API server
    authenticated) that starts an action instead of a decision."""

    manual_action: str = Field(description="The ManualAction's name (same namespace).")
    requested_by: User
    reason: str
    requested_at: datetime = Field(description="When the ManualAction was created.")
    sensor_id: str | None = Field(default=None, description="The sensor it is about.")
    reverts: str | None = Field(
        default=None, description="The action this one undoes (its compensation)."
    )


class ActionRequest(ApiModel):
    """What an intent runner (or the operator, for a person) hands to the action workflow
    (its input, durable in Temporal)."""

    action_id: str = Field(description="Idempotency key; also the workflow id.")
    intent: IntentRef
    intent_labels: dict[str, str] = Field(default_factory=dict)
    data_policy: dict[str, Any] = Field(
        default_factory=dict, description="The intent's dataPolicy."
    )
    action: Action = Field(description="The action as declared in the intent.")
    decision: Decision | None = Field(default=None, description="The decision that acts.")
    manual: ManualRequest | None = Field(default=None, description="The person who asks.")
    actions_topic: str | None = Field(
        default=None, description="Topic where the workflow records the action's lifecycle."
    )

    invariants = (exactly_one_of("decision", "manual"),)

    @property
    def sensor_id(self) -> str:
        """The sensor the action is about ('' when a person named none)."""
        if self.decision is not None:
            return self.decision.sensor_id
        return (self.manual.sensor_id if self.manual else None) or ""

    @property
    def trace_id(self) -> str | None:
        return self.decision.trace_id if self.decision else None


class Review(ApiModel):
    """A human's answer to an approval request: read from an Approval object. (Workflows
    started before approvals were read through the API took it from a ``review`` signal.)"""

    approver: str
    approved: bool
    groups: list[str] = Field(default_factory=list)
    reason: str = ""


Outcome = Literal[
    "executed", "denied", "rejected", "expired", "policy-unavailable", "rate-limited", "failed"
]
"""How an action ended; also its ``AiosOutcome`` search attribute and last audit step."""


class ActionState(ApiModel):
    """The action workflow's ``state`` query: where the action is, and who may still decide
    on it. (camelCase in JSON, as ``temporal workflow query`` shows it.)"""

    model_config = ConfigDict(serialize_by_alias=True)

    phase: str = Field(description="A step in progress, or the outcome once it ended.")
    allowed_approvers: list[str]
    refused: list[str] = Field(description="Who claimed a decision that was not theirs.")
    review: Review | None = None
    policy_decision_id: str | None = Field(
        default=None, description="OPA's latest decision on the action (its decision id)."
    )
    policy_warnings: list[str] = Field(
        default_factory=list, description="What that decision warned of (allowed, with a note)."
    )


class ActionOutcome(ApiModel):
    """The action workflow's result: its outcome, and the fields its last audit step
    recorded (which depend on the outcome: a denial's reasons, a webhook's HTTP status…)."""

    model_config = ConfigDict(extra="allow")

    status: Outcome
