"""Kafka topics as aios wants them, and the plan to get there: pure (no client), so the
operator's reconcile functions can render topics and the plan is unit-tested."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    """A topic as aios wants it: partitions and the configs it manages (others untouched)."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = -1  # the broker's default.replication.factor


@dataclass(frozen=True)
class ExistingTopic:
    name: str
    partitions: int
    config: Mapping[str, str]


@dataclass(frozen=True)
class TopicPlan:
    """What the Admin API must do; empty when the topics already match."""

    create: tuple[TopicSpec, ...] = ()
    grow: tuple[tuple[str, int], ...] = ()
    reconfigure: tuple[tuple[str, Mapping[str, str]], ...] = ()
    cannot_shrink: tuple[tuple[str, int, int], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.create or self.grow or self.reconfigure)


def plan_topics(desired: Iterable[TopicSpec], existing: Mapping[str, ExistingTopic]) -> TopicPlan:
    """Compare desired topics with the broker's. Kafka cannot remove partitions, so a lower
    count is reported (``cannot_shrink``) rather than attempted."""
    create, grow, reconfigure, shrink = [], [], [], []
    for spec in desired:
        current = existing.get(spec.name)
        if current is None:
            create.append(spec)
            continue
        if spec.partitions > current.partitions:
            grow.append((spec.name, spec.partitions))
        elif spec.partitions < current.partitions:
            shrink.append((spec.name, current.partitions, spec.partitions))
        changed = {k: v for k, v in spec.config.items() if current.config.get(k) != v}
        if changed:
            reconfigure.append((spec.name, changed))
    return TopicPlan(tuple(create), tuple(grow), tuple(reconfigure), tuple(shrink))
