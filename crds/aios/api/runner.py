"""The intent runner's configuration: rendered by the operator into a ConfigMap, read by
``aios-intent-runner``. Addresses of Kafka and Temporal come from the environment."""

from __future__ import annotations

from pydantic import Field

from aios.api.automation_intent import AutomationIntentSpec
from aios.api.base import DEFAULT_SITE, ApiModel
from aios.api.events import IntentRef

HEARTBEAT_TOPIC = "aios.intents.status"
"""Runners report health here (key: ``<namespace>/<intent>/<pod>``); the operator reads it."""


def runner_name(intent: str) -> str:
    """The name of an intent's runner StatefulSet, its ConfigMap and ServiceAccount."""
    return f"{intent}-runner"


class RunnerTopics(ApiModel):
    """The topics of one intent. No source is a valid state (no gateway matches its
    selector yet): the operator then reports ``NoSource`` and renders no runner."""

    sources: list[str] = Field(default_factory=list, description="Topics to consume.")
    decisions: str
    actions: str
    dead_letters: str
    state: str = Field(
        description="Compacted: each source partition's counts and hysteresis latches."
    )


class RunnerConfig(ApiModel):
    """Everything a runner needs to decide for one intent generation."""

    intent: IntentRef
    labels: dict[str, str] = Field(default_factory=dict)
    spec: AutomationIntentSpec
    topics: RunnerTopics
    consumer_group: str = Field(description="Kafka consumer group shared by the intent's runners.")
    task_queue: str = Field(description="Temporal task queue of the action workflows.")
    heartbeat_topic: str = HEARTBEAT_TOPIC
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    site: str = Field(default=DEFAULT_SITE, description="The site every decision names.")

    @property
    def transactional_id_prefix(self) -> str:
        """What each runner pod's transactional id starts with (its pod name follows): no
        other intent's does, since a name has no ``/``. Its Kafka ACL is on this prefix."""
        return f"aios-runner.{self.intent.namespace}/{self.intent.name}/"


class PartitionCounts(ApiModel):
    """What one source partition's readings have come to since the intent began."""

    events: int = Field(default=0, ge=0, description="Readings read, good or not.")
    decisions: int = Field(default=0, ge=0)
    dead_letters: int = Field(default=0, ge=0)
    fallbacks: int = Field(default=0, ge=0, description="Decisions by the fallback rules.")


class PartitionProgress(ApiModel):
    """A source partition's counts as of ``offset``, the next record to read (-1 before
    the first commit). What a runner reports in its heartbeat for each partition it holds:
    the operator sums the newest report of every partition."""

    offset: int = Field(ge=-1)
    counts: PartitionCounts = Field(default_factory=PartitionCounts)


class PartitionReport(PartitionProgress):
    """What a runner's heartbeat says of a source partition it holds: its progress, and how
    far behind the partition's end that is, so the operator reads an intent's consumer lag
    from the heartbeats it follows anyway instead of asking Kafka for each intent."""

    lag: int | None = Field(
        default=None,
        ge=0,
        description="Records after ``offset`` as of the runner's last fetch (None: no commit "
        "or no fetch yet).",
    )


class PartitionState(PartitionProgress):
    """A source partition's record in the intent's state topic (key ``<topic>/<partition>``),
    written in the same Kafka transaction as its decisions and consumer offset: whichever
    replica holds the partition next goes on from exactly the last commit."""

    latched: list[tuple[str, str]] = Field(
        default_factory=list, description="(sensor, rule) pairs a hysteresis keeps firing."
    )
