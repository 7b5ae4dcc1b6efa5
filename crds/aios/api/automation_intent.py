"""AutomationIntent: sensor streams → models → decision rules → governed actions."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from aios.api.base import (
    AGE,
    IDENTIFIER,
    ApiModel,
    ApprovalRule,
    Count,
    CrdInfo,
    Fraction,
    Invariant,
    KafkaTopic,
    LabelSelector,
    MetricName,
    Name,
    PrinterColumn,
    Resource,
    ResourceStatus,
    condition_column,
    defaults_to,
    exactly_one_of,
    list_map,
    metrics_not_reserved,
    once_each,
)

ActionType = Literal["alert", "webhook", "mqtt", "kafka"]
DeletePolicy = Literal["Retain", "Delete"]
Mode = Literal["active", "shadow", "paused"]

ANOMALY_FEATURES = ("pm25", "pm10", "no2", "o3", "temperature", "humidity")
"""The metrics a model call sends unless it names its own: the example anomaly model's
``features`` columns."""


class Source(ApiModel):
    """A stream of readings: a Kafka topic, or the sink topics of selected EdgeGateways."""

    name: Name = Field(description="Name of this source within the intent.")
    kafka_topic: KafkaTopic | None = Field(default=None, description="Kafka topic to consume.")
    edge_gateway_selector: LabelSelector | None = Field(
        default=None, description="EdgeGateways (same namespace) whose sink topics to consume."
    )

    invariants = (exactly_one_of("kafkaTopic", "edgeGatewaySelector"),)


class Topics(ApiModel):
    """The Kafka topics the operator creates for this intent (decisions, actions, dead letters)."""

    partitions: int = Field(default=6, ge=1, le=1000, description="Partitions per topic.")
    retention_hours: int = Field(
        default=168, ge=1, le=87600, description="How long records are kept."
    )
    delete_policy: DeletePolicy = Field(
        default="Retain", description="Whether deleting the intent deletes its topics."
    )


class ModelCall(ApiModel):
    """A model the intent calls for every batch of readings."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=IDENTIFIER,
        description="Name under which rules read the outputs, e.g. anomaly in anomaly.score.",
    )
    model_deployment: Name = Field(description="Name of the ModelDeployment (same namespace).")
    timeout_ms: int = Field(
        default=200,
        ge=1,
        le=60000,
        description="Inference timeout; on expiry the fallback decides.",
    )
    max_staleness_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="Outputs older than this count as missing and the fallback decides.",
    )
    features: list[MetricName] = Field(
        default_factory=lambda: list(ANOMALY_FEATURES),
        min_length=1,
        max_length=64,
        description="The reading's metrics sent as the model's features input, one column "
        "each, in this order; a reading lacking one is not sent (the fallback decides).",
        json_schema_extra={"default": list(ANOMALY_FEATURES), "x-kubernetes-list-type": "set"},
    )

    invariants: ClassVar[tuple[Invariant, ...]] = (metrics_not_reserved("features"),)

    _once_each = field_validator("features")(once_each)


class FallbackRule(ApiModel):
    """A deterministic rule, used when the model is unsure, stale or down."""

    name: Name = Field(description="Rule name, recorded with every decision it makes.")
    when: str = Field(
        min_length=1,
        max_length=1024,
        description="Condition in CEL over the reading and the model outputs by call name, "
        "e.g. anomaly.score > 0.8 && reading.pm25 > 35.",
    )
    action: Name = Field(description="Name of the action to take when the rule holds.")


class DecisionRule(FallbackRule):
    """A rule on model outputs; it decides only when the model is confident enough."""

    min_confidence: Fraction = Field(
        default=0.7, description="Below this confidence the fallback rules decide instead."
    )
    hysteresis: Fraction = Field(
        default=0.05, description="Margin a value must cross back before the rule re-arms."
    )


class Escalation(ApiModel):
    """Approvers added once an approval has waited long enough."""

    approvers: list[str] = Field(
        min_length=1, max_length=32, description="Groups or users asked at this stage."
    )
    after_seconds: int = Field(ge=1, description="Wait since the request before escalating.")


class ActionApproval(ApprovalRule):
    """Human approval of an action, with timeout and escalation."""

    timeout_seconds: int = Field(
        default=900, ge=1, le=604800, description="How long to wait before the action is dropped."
    )
    escalation: list[Escalation] = Field(
        default_factory=list,
        max_length=8,
        description="Further approvers asked while the approval waits.",
    )

    invariants = (
        *ApprovalRule.invariants,
        Invariant(
            rule="!has(self.escalation) || "
            "self.escalation.all(e, e.afterSeconds < self.timeoutSeconds)",
            message="every escalation must happen before timeoutSeconds",
            check=lambda a: all(e.after_seconds < a.timeout_seconds for e in a.escalation),
            field_path=".escalation",
        ),
    )


class RateLimit(ApiModel):
    """Upper bound on how often an action runs."""

    per_hour: int = Field(ge=1, le=100000, description="Most executions per hour.")


class Action(ApiModel):
    """Something the intent does in the world, executed durably by a workflow."""

    name: Name = Field(description="Action name, referenced by rules.")
    type: ActionType = Field(description="alert, webhook (HTTP POST), mqtt command or kafka.")
    target: str = Field(
        min_length=1,
        max_length=2048,
        description="Webhook URL, MQTT topic, Kafka topic or alert receiver.",
    )
    payload_template: str | None = Field(
        default=None,
        max_length=16384,
        description="Template of the message body; the decision fields are available to it.",
    )
    approval: ActionApproval = defaults_to(ActionApproval, "Human approval before acting.")
    rate_limit: RateLimit | None = Field(default=None, description="Execution rate limit.")
    idempotency_window_seconds: int = Field(
        default=86400,
        ge=0,
        le=2592000,
        description="A repeated decision within this window acts only once.",
    )
    compensation: Name | None = Field(
        default=None,
        description=(
            "The action of this intent that undoes this one (aiosctl revert runs it once, "
            "through policy, approval and audit). Without it, the action cannot be reversed."
        ),
    )

    invariants = (
        Invariant(
            rule="!has(self.compensation) || self.compensation != self.name",
            message="an action cannot be its own compensation",
            check=lambda a: a.compensation != a.name,
            field_path=".compensation",
        ),
        Invariant(
            rule="self.type != 'webhook' || self.target.matches('^https?://')",
            message="a webhook target must be an http(s) URL",
            check=lambda a: a.type != "webhook" or a.target.startswith(("http://", "https://")),
            field_path=".target",
        ),
    )


class Sla(ApiModel):
    """Service level the intent runner is held to."""

    max_latency_ms: int = Field(
        default=2000, ge=1, le=600000, description="Reading-to-decision latency objective."
    )
    max_batch_size: int = Field(
        default=64, ge=1, le=10000, description="Most readings per inference batch."
    )


class DataPolicy(ApiModel):
    """How the intent may use and keep data."""

    personal_data: bool = Field(default=False, description="Whether readings are personal data.")
    retention_days: int | None = Field(
        default=None, ge=1, le=3650, description="How long decisions and actions are kept."
    )
    purpose: str | None = Field(
        default=None, max_length=1024, description="Why the data is processed (purpose limitation)."
    )
    site: str | None = Field(default=None, max_length=253, description="Site the data comes from.")

    invariants = (
        Invariant(
            rule="!self.personalData || (has(self.retentionDays) && has(self.purpose))",
            message="personal data needs retentionDays and purpose",
            check=lambda d: (
                not d.personal_data or (d.retention_days is not None and d.purpose is not None)
            ),
        ),
    )


class Scaling(ApiModel):
    """How many runners share the intent's readings. Between ``minReplicas`` and
    ``maxReplicas``, an autoscaler (KEDA, when the cluster has it) adds a runner for every
    ``lagThreshold`` readings waiting on the sources. A runner beyond the sources'
    partition count has nothing to read."""

    min_replicas: int = Field(default=1, ge=1, le=100, description="Runners always running.")
    max_replicas: int = Field(
        default=1, ge=1, le=100, description="Most runners an autoscaler may run."
    )
    lag_threshold: int = Field(
        default=1000,
        ge=1,
        le=10_000_000,
        description="Readings waiting per runner before another one is added.",
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description=(
            "How long the lag must have asked for fewer runners before one is removed (the"
            " HorizontalPodAutoscaler's scale-down stabilization window): a short lull"
            " costs no rebalance."
        ),
    )

    invariants = (
        Invariant(
            rule="self.maxReplicas >= self.minReplicas",
            message="maxReplicas must not be below minReplicas",
            check=lambda s: s.max_replicas >= s.min_replicas,
            field_path=".maxReplicas",
        ),
    )


def _actions_exist(rule_list: str) -> Invariant:
    """Every rule of the list field `rule_list` names an action declared in the same spec."""
    return Invariant(
        rule=f"!has(self.{rule_list}) || self.{rule_list}.all(r, "
        "has(self.actions) && self.actions.exists(a, a.name == r.action))",
        message=f"every {rule_list} entry must name an action of spec.actions",
        check=lambda s: {r.action for r in getattr(s, rule_list)} <= {a.name for a in s.actions},
        field_path=f".{rule_list}",
    )


class AutomationIntentSpec(ApiModel):
    """What to watch, how to decide and what to do."""

    sources: list[Source] = Field(
        min_length=1,
        max_length=32,
        description="Streams of readings to consume.",
        json_schema_extra=list_map("name"),
    )
    topics: Topics = defaults_to(Topics, "Kafka topics created for this intent.")
    models: list[ModelCall] = Field(
        default_factory=list,
        max_length=16,
        description="Models called for every batch.",
        json_schema_extra=list_map("name"),
    )
    rules: list[DecisionRule] = Field(
        default_factory=list,
        max_length=64,
        description="Decision rules on model outputs, evaluated in order.",
        json_schema_extra=list_map("name"),
    )
    fallback: list[FallbackRule] = Field(
        default_factory=list,
        max_length=64,
        description="Deterministic rules used when the model is unsure, stale or down.",
        json_schema_extra=list_map("name"),
    )
    actions: list[Action] = Field(
        default_factory=list,
        max_length=32,
        description="Actions the rules may take.",
        json_schema_extra=list_map("name"),
    )
    sla: Sla = defaults_to(Sla, "Latency and batching objectives.")
    scaling: Scaling = defaults_to(Scaling, "How many runners share the readings.")
    data_policy: DataPolicy = defaults_to(DataPolicy, "Personal data, retention and purpose.")
    mode: Mode = Field(
        default="active",
        description="active: act; shadow: decide and record, never act; paused: consume nothing.",
    )

    invariants = (
        _actions_exist("rules"),
        _actions_exist("fallback"),
        Invariant(
            rule="!has(self.actions) || self.actions.all(a, !has(a.compensation) || "
            "self.actions.exists(c, c.name == a.compensation))",
            message="every compensation must name an action of spec.actions",
            check=lambda s: (
                {a.compensation for a in s.actions if a.compensation} <= {a.name for a in s.actions}
            ),
            field_path=".actions",
        ),
    )


class Counts(ApiModel):
    """Totals since the intent was created."""

    events: Count = Field(default=0, description="Readings consumed.")
    decisions: Count = Field(default=0, description="Decisions made.")
    actions: Count = Field(default=0, description="Actions executed.")
    fallbacks: Count = Field(default=0, description="Decisions made by fallback rules.")
    overrides: Count = Field(default=0, description="Decisions overridden by a human.")
    dead_letters: Count = Field(default=0, description="Records sent to the dead-letter topic.")


class TopicNames(ApiModel):
    """Names of the Kafka topics serving this intent."""

    source: str | None = Field(default=None, description="Topic the runner consumes.")
    decisions: str | None = Field(default=None, description="Topic of decisions.")
    actions: str | None = Field(default=None, description="Topic of actions handed to workflows.")
    dead_letters: str | None = Field(default=None, description="Topic of unprocessable records.")
    state: str | None = Field(
        default=None,
        description="Compacted topic of each source partition's counts and hysteresis latches.",
    )


class AutomationIntentStatus(ResourceStatus):
    """Observed throughput and wiring."""

    counts: Counts | None = Field(default=None, description="Totals since creation.")
    consumer_lag: Count | None = Field(
        default=None, description="Records not yet consumed, summed over partitions."
    )
    topics: TopicNames | None = Field(default=None, description="Kafka topics in use.")
    runners: Count | None = Field(
        default=None,
        description="Runners the intent's StatefulSet asks for: what the autoscaler set, if any.",
    )


class AutomationIntent(Resource[AutomationIntentSpec, AutomationIntentStatus]):
    """Sensor streams turned into governed decisions and actions."""

    crd = CrdInfo(
        kind="AutomationIntent",
        plural="automationintents",
        short_names=("intent", "ai"),
        printer_columns=(
            PrinterColumn("Mode", ".spec.mode"),
            condition_column("Ready"),
            PrinterColumn("Runners", ".status.runners", "integer"),
            PrinterColumn("Lag", ".status.consumerLag", "integer"),
            AGE,
        ),
    )
