"""What an intent read and decided in a window of time, from Kafka: its readings (the
records of its source topics) and the decisions made on them, matched by source position.

Read with consumers of their own groups that never commit: a replay moves no offset of the
intent's runners, and writes nothing anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from aios.api.events import Decision
from aios.api.runner import RunnerConfig
from aios.connectors import kafka
from aios.runner.records import Position
from aios.runner.replay import Recorded

READ_SECONDS = 120.0
"""How long reading a window may go without a record before it is given up."""


class WindowError(ValueError):
    """A window that cannot be replayed as asked; the message says why."""


@dataclass(frozen=True)
class Window:
    """The readings of ``[since, until)`` on an intent's source topics."""

    since: datetime
    until: datetime
    spans: list[kafka.Span]

    @property
    def readings(self) -> int:
        return sum(s.size for s in self.spans)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def window(bootstrap: str, config: RunnerConfig, since: datetime, until: datetime) -> Window:
    """The window's spans, or why it cannot be replayed: it reaches back past what a
    source topic keeps (and records are gone), or it holds no reading."""
    sources = config.topics.sources
    if not sources:
        raise WindowError(f"intent {config.intent.name} has no source topic (no gateway matches)")
    if since >= until:
        raise WindowError(f"the window is empty: --since {since} is not before --until {until}")
    found = kafka.spans(bootstrap, sources, _ms(since), _ms(until))
    described = kafka.describe_topics(kafka.admin(bootstrap), sources)
    for span in found:
        retention_ms = int(described[span.topic].config.get("retention.ms") or -1)
        if retention_ms < 0 or span.first == 0 or span.start > span.first:
            continue  # kept forever, nothing deleted yet, or the window starts after what was
        kept_from = datetime.now(UTC) - timedelta(milliseconds=retention_ms)
        if since < kept_from:
            raise WindowError(
                f"the window starts at {since:%Y-%m-%d %H:%M:%S}Z, but {span.topic} keeps "
                f"readings for {retention_ms / 3_600_000:g} h: those before "
                f"{kept_from:%Y-%m-%d %H:%M:%S}Z are deleted; start the window later"
            )
    result = Window(since, until, found)
    if not result.readings:
        raise WindowError(
            f"no readings on {', '.join(sources)} between "
            f"{since:%Y-%m-%d %H:%M:%S}Z and {until:%Y-%m-%d %H:%M:%S}Z"
        )
    return result


def decisions(bootstrap: str, config: RunnerConfig, found: Window) -> dict[Position, Recorded]:
    """The decisions made on the window's readings, by the reading's source position. They
    were published after their readings, so reading from ``since`` finds them all; one
    made twice (it cannot be, short of a reset group) counts as the newest."""
    wanted = {(s.topic, s.partition): s for s in found.spans}
    made: dict[Position, Recorded] = {}
    topic = config.topics.decisions
    for message in kafka.read_spans(
        bootstrap, kafka.spans(bootstrap, [topic], _ms(found.since)), READ_SECONDS
    ):
        try:
            decision = Decision.model_validate_json(message.value() or b"")
        except ValidationError:
            continue  # not one of the runner's: nothing to compare with
        lineage = decision.lineage
        span = wanted.get((lineage.topic, lineage.partition))
        if span is not None and span.start <= lineage.offset < span.end:
            made[Position(lineage.topic, lineage.partition, lineage.offset)] = Recorded.of(decision)
    return made


def readings(
    bootstrap: str, found: Window, progress: Callable[[int], None] = lambda _: None
) -> Iterator[tuple[Position, bytes | None]]:
    """Each record of the window with its position, in offset order per partition;
    ``progress`` is told how many were read, every thousand."""
    read = 0
    for message in kafka.read_spans(bootstrap, found.spans, READ_SECONDS):
        position = Position(message.topic() or "", message.partition() or 0, message.offset() or 0)
        yield position, message.value()
        read += 1
        if read % 1000 == 0:
            progress(read)
    progress(read)
