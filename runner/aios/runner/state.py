"""Each source partition's durable state: its counts and hysteresis latches.

A runner holds one ``Partition`` per source partition assigned to it. Its state goes to the
intent's compacted state topic (key ``<topic>/<partition>``) in the same transaction as the
decisions and the consumer offset, so the state on record always matches the committed
offset. A replica that gets a partition — after a restart, a rebalance or a scale-out —
reads the record whose offset equals the group's committed offset and goes on from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import Message, TopicPartition

from aios.api.runner import PartitionCounts, PartitionReport, PartitionState
from aios.connectors import kafka
from aios.runner.rules import Decider, RuleSet

NOT_COMMITTED = -1
RESTORE_SECONDS = 15.0
"""How long a replica waits for the state record of the committed offset to become readable
(its transaction's marker may land a moment after the offset) before going on from the
newest record it has, with a warning."""
READ_SECONDS = 60.0
log = logging.getLogger(__name__)

SourcePartition = tuple[str, int]


def state_key(source: SourcePartition) -> str:
    return f"{source[0]}/{source[1]}"


def source_of(message: Message) -> SourcePartition:
    """The source partition a record was read from."""
    return message.topic() or "", message.partition() or 0


@dataclass
class Partition:
    """A source partition in the hands of this replica: its offset, counts and decider."""

    offset: int
    counts: PartitionCounts
    decider: Decider
    saved: bool = field(default=True)

    @classmethod
    def start(cls, rules: RuleSet, state: PartitionState) -> Partition:
        return cls(
            state.offset,
            state.counts.model_copy(),
            Decider(rules, {(sensor, rule) for sensor, rule in state.latched}),
        )

    def report(self, end: int) -> PartitionReport:
        """Its heartbeat entry, given the partition's end as the last fetch saw it (-1: none)."""
        lag = max(0, end - self.offset) if end >= 0 and self.offset >= 0 else None
        return PartitionReport(offset=self.offset, counts=self.counts, lag=lag)

    def state(self) -> PartitionState:
        return PartitionState(
            offset=self.offset, counts=self.counts, latched=sorted(self.decider.latched)
        )


def committed_offset(found: TopicPartition) -> int:
    """The group's next offset for a partition, or ``NOT_COMMITTED``."""
    return found.offset if found.offset >= 0 else NOT_COMMITTED


@dataclass(frozen=True)
class Restored:
    """The state of each partition as of its committed offset; ``unmatched`` names those
    whose record was not found, whose counts go on from the newest record or zero and are
    written again at once."""

    states: dict[SourcePartition, PartitionState]
    unmatched: frozenset[SourcePartition]


def restore(bootstrap: str, topic: str, committed: Mapping[SourcePartition, int]) -> Restored:
    """Read each partition's state as of its committed offset.

    A partition never committed starts from nothing. One committed before the state topic
    had its record (an intent older than the topic), or whose record does not match after
    ``RESTORE_SECONDS``, goes on from the newest record or zero — logged, never silent."""
    found: dict[SourcePartition, PartitionState] = {
        source: PartitionState(offset=NOT_COMMITTED)
        for source, offset in committed.items()
        if offset == NOT_COMMITTED
    }
    wanted = {state_key(s): s for s in committed if s not in found}
    latest: dict[str, PartitionState] = {}
    deadline = time.monotonic() + RESTORE_SECONDS
    while wanted:
        latest = _read_latest(bootstrap, topic, set(wanted))
        for key, state in latest.items():
            if state.offset == committed[wanted[key]]:
                found[wanted.pop(key)] = state
        if not wanted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for key, source in wanted.items():
        newest = latest.get(key)
        log.warning(
            "no state of %s at offset %d (newest: %s); its counts go on from %s",
            key,
            committed[source],
            "none" if newest is None else newest.offset,
            "zero" if newest is None else "the newest",
        )
        found[source] = (newest or PartitionState(offset=0)).model_copy(
            update={"offset": committed[source]}
        )
    return Restored(found, frozenset(wanted.values()))


def _read_latest(bootstrap: str, topic: str, keys: set[str]) -> dict[str, PartitionState]:
    """The newest committed record of each of ``keys``."""
    latest: dict[str, PartitionState] = {}
    for message in kafka.read_to_end(bootstrap, topic, READ_SECONDS):
        key, value = (message.key() or b"").decode(), message.value()
        if value is not None and key in keys:
            latest[key] = PartitionState.model_validate_json(value)
    return latest
