"""What a replay found: the readings of a window decided again with a candidate (a changed
spec of an intent), held against the decisions actually made. ``aiosctl replay`` prints it;
it is data (JSON or YAML) for a GitOps repository's CI and for reviewers."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from aios.api.base import ApiModel


class Outcome(ApiModel):
    """What decided a reading: a rule (or fallback rule) and its action, or nothing."""

    model_config = ConfigDict(frozen=True)  # a key of the tally of changes

    rule: str | None = None
    action: str | None = None

    def __str__(self) -> str:
        if self.rule is None:
            return "no rule"
        return f"{self.rule} → {self.action}" if self.action else self.rule


class Example(ApiModel):
    """One reading whose decision changed, with what the rules saw."""

    sensor_id: str
    time: datetime = Field(description="Time of the reading.")
    source: str = Field(description="Where it was read: ``<topic>/<partition>/<offset>``.")
    metrics: dict[str, float]
    outputs: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="The model outputs the decision was made on."
    )


class Change(ApiModel):
    """Readings decided one way, and by the candidate another."""

    before: Outcome
    after: Outcome
    count: int = Field(ge=1)
    examples: list[Example] = Field(default_factory=list)


class RuleTally(ApiModel):
    """How many readings a rule decided, before and with the candidate."""

    rule: str
    before: int = Field(ge=0)
    after: int = Field(ge=0)


class ActionTally(ApiModel):
    """One action's runs (distinct action ids, as its workflows are started), before and
    with the candidate: those the candidate would start that did not run (``added``), and
    those that ran that it would not start (``removed``)."""

    action: str
    before: int = Field(ge=0)
    after: int = Field(ge=0)
    added: list[str] = Field(default_factory=list, description="Action ids, the first few.")
    removed: list[str] = Field(default_factory=list, description="Action ids, the first few.")
    added_count: int = Field(default=0, ge=0)
    removed_count: int = Field(default=0, ge=0)


class Denial(ApiModel):
    """An action the candidate would start that the candidate Policy denies."""

    action_id: str
    action: str
    sensor_id: str
    messages: list[str] = Field(description="What the Policy objects to.")


class ReplayReport(ApiModel):
    """The outcome of one replay of an intent's readings."""

    namespace: str
    intent: str
    since: datetime
    until: datetime
    candidate: str = Field(description="What was decided with, as the user gave it.")
    readings: int = Field(ge=0, description="Records of the window on the source topics.")
    dead_letters: int = Field(ge=0, description="Records that are no reading.")
    undecided: int = Field(
        ge=0, description="Readings with no recorded decision to compare (not yet decided)."
    )
    compared: int = Field(ge=0, description="Readings decided again and compared.")
    changed: int = Field(ge=0, description="Compared readings decided differently.")
    changes: list[Change] = Field(default_factory=list, description="Most frequent first.")
    rules: list[RuleTally] = Field(default_factory=list)
    actions: list[ActionTally] = Field(default_factory=list)
    policy: str | None = Field(
        default=None, description="The candidate Policy the actions were asked of, if any."
    )
    denied_count: int = Field(default=0, ge=0, description="Actions it denies.")
    denied: list[Denial] = Field(default_factory=list, description="The first few of them.")

    @property
    def change_ratio(self) -> float:
        """The share of compared readings decided differently (0 when none compared)."""
        return self.changed / self.compared if self.compared else 0.0
