"""What a replay found: the readings of a window decided again with a candidate (a changed
spec of an intent), held against the decisions actually made. ``aiosctl replay`` prints it;
it is data (JSON or YAML) for a GitOps repository's CI, and an IntentReplay object, owned by
the intent, for reviewers and dashboards (``kubectl get intentreplays``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from aios.api.base import (
    AGE,
    ApiModel,
    CrdInfo,
    PrinterColumn,
    Resource,
    ResourceStatus,
    immutable,
)


class Outcome(ApiModel):
    """What decided a reading: a rule (or fallback rule) and its action, or nothing."""

    model_config = ConfigDict(frozen=True)  # a key of the tally of changes

    rule: str | None = Field(default=None, description="The rule that decided, if any.")
    action: str | None = Field(default=None, description="The action it named, if any.")

    def __str__(self) -> str:
        if self.rule is None:
            return "no rule"
        return f"{self.rule} → {self.action}" if self.action else self.rule


class Example(ApiModel):
    """One reading whose decision changed, with what the rules saw."""

    sensor_id: str = Field(description="The reading's sensor.")
    time: datetime = Field(description="Time of the reading.")
    source: str = Field(description="Where it was read: ``<topic>/<partition>/<offset>``.")
    metrics: dict[str, float] = Field(description="The reading's values by metric.")
    outputs: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="The model outputs the decision was made on."
    )


class Change(ApiModel):
    """Readings decided one way, and by the candidate another."""

    before: Outcome = Field(description="How they were decided.")
    after: Outcome = Field(description="How the candidate decides them.")
    count: int = Field(ge=1, description="How many readings.")
    examples: list[Example] = Field(default_factory=list, description="A few of them.")


class RuleTally(ApiModel):
    """How many readings a rule decided, before and with the candidate."""

    rule: str = Field(description="The rule (or fallback rule).")
    before: int = Field(ge=0, description="Readings it decided.")
    after: int = Field(ge=0, description="Readings it decides with the candidate.")


class ActionTally(ApiModel):
    """One action's runs (distinct action ids, as its workflows are started), before and
    with the candidate: those the candidate would start that did not run (``added``), and
    those that ran that it would not start (``removed``)."""

    action: str = Field(description="The action.")
    before: int = Field(ge=0, description="Runs it had.")
    after: int = Field(ge=0, description="Runs it has with the candidate.")
    added: list[str] = Field(default_factory=list, description="Action ids, the first few.")
    removed: list[str] = Field(default_factory=list, description="Action ids, the first few.")
    added_count: int = Field(default=0, ge=0, description="How many would run anew.")
    removed_count: int = Field(default=0, ge=0, description="How many would not run.")


class Denial(ApiModel):
    """An action the candidate would start that the candidate Policy denies."""

    action_id: str = Field(description="The action's id.")
    action: str = Field(description="The action.")
    sensor_id: str = Field(description="The sensor it is about.")
    messages: list[str] = Field(description="What the Policy objects to.")


class ReplayReport(ApiModel):
    """The outcome of one replay of an intent's readings."""

    namespace: str = Field(description="The intent's namespace.")
    intent: str = Field(description="The AutomationIntent replayed.")
    since: datetime = Field(description="The window's start.")
    until: datetime = Field(description="The window's end.")
    candidate: str = Field(description="What was decided with, as the user gave it.")
    readings: int = Field(ge=0, description="Records of the window on the source topics.")
    dead_letters: int = Field(ge=0, description="Records that are no reading.")
    undecided: int = Field(
        ge=0, description="Readings with no recorded decision to compare (not yet decided)."
    )
    compared: int = Field(ge=0, description="Readings decided again and compared.")
    changed: int = Field(ge=0, description="Compared readings decided differently.")
    changes: list[Change] = Field(default_factory=list, description="Most frequent first.")
    rules: list[RuleTally] = Field(default_factory=list, description="Per rule.")
    actions: list[ActionTally] = Field(default_factory=list, description="Per action.")
    policy: str | None = Field(
        default=None, description="The candidate Policy the actions were asked of, if any."
    )
    denied_count: int = Field(default=0, ge=0, description="Actions it denies.")
    denied: list[Denial] = Field(default_factory=list, description="The first few of them.")

    @property
    def change_ratio(self) -> float:
        """The share of compared readings decided differently (0 when none compared)."""
        return self.changed / self.compared if self.compared else 0.0


class IntentReplaySpec(ReplayReport):
    """One replay's report, as ``aiosctl replay`` made it, and the limit it was held to."""

    max_change: float | None = Field(
        default=None, ge=0, le=1, description="--max-change, as a share, if one was given."
    )
    exceeded: bool = Field(default=False, description="Whether the changes exceeded it.")


class IntentReplay(Resource[IntentReplaySpec, ResourceStatus]):
    """What a replay of an intent found, kept with the intent (its owner) for review."""

    spec: IntentReplaySpec = Field(
        json_schema_extra=immutable("an IntentReplay records one replay for good")
    )

    crd = CrdInfo(
        kind="IntentReplay",
        plural="intentreplays",
        short_names=("irpl",),
        printer_columns=(
            PrinterColumn("Intent", ".spec.intent"),
            PrinterColumn("Candidate", ".spec.candidate"),
            PrinterColumn("Compared", ".spec.compared", "integer"),
            PrinterColumn("Changed", ".spec.changed", "integer"),
            PrinterColumn("Exceeded", ".spec.exceeded", "boolean"),
            AGE,
        ),
    )
