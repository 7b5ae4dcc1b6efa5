"""Kafka: client configuration, topic reconciliation and the producer/consumer defaults
every aios component shares.

Topic reconciliation is split in two: ``plan_topics`` (pure: what must be created, grown
or reconfigured) and ``apply_topic_plan`` (the Admin API calls), so the decisions are
unit-tested and the I/O is tested against the real broker.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from aios.connectors.topics import ExistingTopic, TopicPlan, plan_topics
from aios.connectors.topics import TopicSpec as TopicSpec  # callers name it kafka.TopicSpec

BOOTSTRAP_ENV = "AIOS_KAFKA_BOOTSTRAP"
EXTRA_CONFIG_ENV = "AIOS_KAFKA_CONFIG"
"""JSON object of librdkafka settings (security.protocol, sasl.*, ssl.*) merged into every
client, so a site's Kafka security lives in one place (the chart's values)."""


def client_config(bootstrap: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Settings for any client: bootstrap from the argument or the environment, the
    site's security settings, then ``overrides`` (dots spelled as in librdkafka)."""
    servers = bootstrap or os.environ.get(BOOTSTRAP_ENV)
    if not servers:
        raise RuntimeError(f"no Kafka bootstrap servers: set {BOOTSTRAP_ENV}")
    config: dict[str, Any] = {"bootstrap.servers": servers}
    config.update(json.loads(os.environ.get(EXTRA_CONFIG_ENV) or "{}"))
    config.update(overrides)
    return config


def producer_config(bootstrap: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all, compressed: a retry never duplicates or reorders a record."""
    return client_config(
        bootstrap,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "zstd",
            "linger.ms": 5,
            "max.in.flight.requests.per.connection": 5,
            **overrides,
        },
    )


def consumer_config(group: str, bootstrap: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Manual commits after the work is durable; read only committed transactional data."""
    return client_config(
        bootstrap,
        **{
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
            **overrides,
        },
    )


def producer(bootstrap: str | None = None, **overrides: Any) -> Producer:
    return Producer(producer_config(bootstrap, **overrides))


ANY_PARTITION = -1
"""librdkafka's RD_KAFKA_PARTITION_UA: the partitioner chooses (by key)."""


class NotDelivered(Exception):
    """The broker did not acknowledge a record: its error, or no answer in time."""


class AcknowledgedProducer:
    """A producer whose ``send`` returns once the broker has that one record (acks=all).

    ``Producer.flush`` waits until nothing at all is in flight: with several threads
    producing, each one waits for the others' records too, and under steady load that
    wait has no end. Here one thread serves the delivery reports, and each sender waits
    for its own record only."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self._stopping = threading.Event()
        self._reports = threading.Thread(
            target=self._serve, args=(weakref.ref(self),), name="kafka-reports", daemon=True
        )
        self._reports.start()

    @staticmethod
    def _serve(owner: weakref.ref[AcknowledgedProducer]) -> None:
        """Serve reports until closed, or until nothing else holds the owner: a forgotten
        producer is then freed, not polled on until the interpreter's end (where a
        librdkafka thread calling into a finalizing interpreter can crash it)."""
        while (this := owner()) is not None and not this._stopping.is_set():
            producer = this.producer
            del this
            producer.poll(0.1)

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes,
        timeout: float | None,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Produce one record and wait for its acknowledgement; ``NotDelivered`` if none.

        ``timeout`` None waits for librdkafka's own report, which comes within the
        producer's ``message.timeout.ms``: a record reported failed is no longer queued, so
        sending it again cannot race an earlier copy (with a timeout, it still may be)."""
        acknowledged = threading.Event()
        errors: list[KafkaError] = []

        def report(error: KafkaError | None, _message: Any) -> None:
            if error is not None:
                errors.append(error)
            acknowledged.set()

        try:
            self.producer.produce(
                topic,
                value,
                key,
                partition=ANY_PARTITION if partition is None else partition,
                on_delivery=report,
                headers=headers,
            )
        except (KafkaException, BufferError) as error:
            raise NotDelivered(str(error)) from error
        if not acknowledged.wait(timeout):
            raise NotDelivered(f"not delivered within {timeout:.0f}s")
        if errors:
            raise NotDelivered(str(errors[0]))

    def close(self, timeout: float) -> None:
        """Deliver what is in flight, then stop serving reports."""
        self.producer.flush(timeout)
        self._stopping.set()
        self._reports.join()


def consumer(group: str, bootstrap: str | None = None, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(group, bootstrap, **overrides))


@dataclass(frozen=True)
class Span:
    """The records ``[start, end)`` of one partition; ``first`` is its oldest kept offset
    (above 0 once retention or a deletion removed records)."""

    topic: str
    partition: int
    start: int
    end: int
    first: int = 0

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def _reader(bootstrap: str) -> Consumer:
    """A consumer of its own group that never commits: reading moves nobody's offsets."""
    return Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": f"read-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
        )
    )


def spans(
    bootstrap: str,
    topics: Iterable[str],
    since_ms: int | None = None,
    until_ms: int | None = None,
    timeout: float = 10,
) -> list[Span]:
    """Each partition's records with a timestamp in ``[since_ms, until_ms)`` (None: from its
    beginning, up to the end it has now), found by the broker's time index."""
    reader = _reader(bootstrap)
    try:
        found: list[Span] = []
        for topic in topics:
            described = reader.list_topics(topic, timeout=timeout).topics[topic]
            if described.error is not None:
                raise KafkaException(described.error)
            for partition in sorted(described.partitions):
                low, high = reader.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout, cached=False
                )
                start = low if since_ms is None else _offset_at(reader, topic, partition, since_ms)
                end = high if until_ms is None else _offset_at(reader, topic, partition, until_ms)
                found.append(Span(topic, partition, max(start, low), min(end, high), low))
        return found
    finally:
        reader.close()


def _offset_at(reader: Consumer, topic: str, partition: int, time_ms: int) -> int:
    """The first offset whose timestamp is ``time_ms`` or later (the end if none is)."""
    (found,) = reader.offsets_for_times([TopicPartition(topic, partition, time_ms)], timeout=10)
    if found.offset >= 0:
        return int(found.offset)
    return int(reader.get_watermark_offsets(found, timeout=10, cached=False)[1])


def read_spans(bootstrap: str, wanted: Sequence[Span], timeout: float = 60) -> Iterator[Message]:
    """The committed records of each span, in offset order per partition (read by position,
    so transaction markers at a span's end do not hold it up); ``TimeoutError`` when none
    comes for ``timeout`` seconds."""
    ends = {(s.topic, s.partition): s.end for s in wanted if s.size}
    if not ends:
        return
    reader = _reader(bootstrap)
    try:
        reader.assign([TopicPartition(s.topic, s.partition, s.start) for s in wanted if s.size])
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                unread = ", ".join(sorted({t for t, _ in ends}))
                raise TimeoutError(f"nothing read from {unread} for {timeout:.0f}s")
            for message in reader.consume(1000, 0.5):
                end = ends.get((message.topic() or "", message.partition() or 0), 0)
                if message.error() is None and (message.offset() or 0) < end:
                    deadline = time.monotonic() + timeout
                    yield message
            held = [TopicPartition(t, p) for t, p in ends]
            for position in reader.position(held):
                if position.offset >= ends[(position.topic, position.partition)]:
                    del ends[(position.topic, position.partition)]
                    reader.incremental_unassign(
                        [TopicPartition(position.topic, position.partition)]
                    )
    finally:
        reader.close()


def read_to_end(bootstrap: str, topic: str, timeout: float = 60) -> Iterator[Message]:
    """Every committed record of ``topic``, from its beginning up to the end it had when
    asked."""
    return read_spans(bootstrap, spans(bootstrap, [topic]), timeout)


def live_keys(bootstrap: str, topic: str, timeout: float = 60) -> set[str]:
    """The keys of a compacted topic whose latest record is not a tombstone."""
    live: set[str] = set()
    for message in read_to_end(bootstrap, topic, timeout):
        key = (message.key() or b"").decode()
        if message.value() is None:
            live.discard(key)
        else:
            live.add(key)
    return live


def admin(bootstrap: str | None = None) -> AdminClient:
    return AdminClient(client_config(bootstrap))


def describe_topics(
    client: AdminClient, names: Iterable[str], timeout: float = 10
) -> dict[str, ExistingTopic]:
    """The named topics that exist, with partition counts and their current configs.

    Asked for these topics only: a city's broker holds thousands of topics, and the
    metadata of all of them at every reconcile costs both sides more than the work."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    partitions: dict[str, int] = {}
    described = client.describe_topics(TopicCollection(wanted), request_timeout=timeout)
    for name, future in described.items():
        if (found := unless_unknown(future, timeout)) is not None:
            partitions[name] = len(found.partitions)
    if not partitions:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in partitions]
    configs = {}
    for resource, future in client.describe_configs(resources).items():
        # deleted since it was described: gone, like one never there
        if (entries := unless_unknown(future, timeout)) is not None:
            configs[resource.name] = {k: v.value for k, v in entries.items()}
    return {n: ExistingTopic(n, partitions[n], config) for n, config in configs.items()}


def unless_unknown(future: Any, timeout: float) -> Any:
    """A per-topic admin answer; None when the broker does not know the topic."""
    try:
        return future.result(timeout)
    except KafkaException as error:
        if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise
        return None


def apply_topic_plan(client: AdminClient, plan: TopicPlan, timeout: float = 30) -> None:
    """Carry out a plan; "already exists" from a concurrent creator counts as success."""
    if plan.create:
        new = [
            NewTopic(t.name, t.partitions, t.replication_factor, config=dict(t.config))
            for t in plan.create
        ]
        for name, future in client.create_topics(new, request_timeout=timeout).items():
            _result_allowing(future, "TOPIC_ALREADY_EXISTS", name, timeout)
    if plan.grow:
        parts = [NewPartitions(name, count) for name, count in plan.grow]
        for name, future in client.create_partitions(parts, request_timeout=timeout).items():
            _result_allowing(future, "INVALID_PARTITIONS", name, timeout)
    if plan.reconfigure:
        resources = [
            ConfigResource(
                ConfigResource.Type.TOPIC,
                name,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                    for k, v in changes.items()
                ],
            )
            for name, changes in plan.reconfigure
        ]
        for future in client.incremental_alter_configs(resources).values():
            future.result(timeout)


def ensure_topics(client: AdminClient, desired: list[TopicSpec], timeout: float = 30) -> TopicPlan:
    """Make the broker match ``desired``; return the plan that was carried out."""
    plan = plan_topics(desired, describe_topics(client, [t.name for t in desired], timeout))
    apply_topic_plan(client, plan, timeout)
    return plan


def delete_topics(client: AdminClient, names: list[str], timeout: float = 30) -> None:
    """Delete topics; one already gone counts as deleted."""
    if not names:
        return
    for name, future in client.delete_topics(names, request_timeout=timeout).items():
        _result_allowing(future, "UNKNOWN_TOPIC_OR_PART", name, timeout)


def _result_allowing(future: Any, tolerated: str, name: str, timeout: float) -> None:
    try:
        future.result(timeout)
    except KafkaException as error:
        if error.args[0].name() != tolerated:
            raise RuntimeError(f"Kafka admin operation on {name} failed: {error}") from error


def consumer_groups(client: AdminClient, timeout: float = 10) -> set[str]:
    """The groups the cluster knows (ListGroups, one request for all of them): a group
    that has no member and never committed an offset is not one, so it has no lag to
    look up."""
    listed = client.list_consumer_groups(request_timeout=timeout).result(timeout)
    if listed.errors:
        raise RuntimeError(f"Kafka could not list every consumer group: {listed.errors[0]}")
    return {group.group_id for group in listed.valid}


def member(bootstrap: str, group: str) -> Consumer:
    """A consumer of ``group`` that never joins it: it asks what a member would ask
    (OffsetFetch), not the admin API's ListConsumerGroupOffsets, with which librdkafka
    crashes the process when the group's coordinator is still loading
    (confluentinc/librdkafka#5040)."""
    return Consumer(client_config(bootstrap, **{"group.id": group, "enable.auto.commit": False}))


def committed_by(
    client: Consumer, topics: Iterable[str], timeout: float = 10
) -> list[TopicPartition]:
    """The committed offset of ``client``'s group on each partition of ``topics`` (-1001:
    none)."""
    partitions = [
        TopicPartition(topic, partition)
        for topic in topics
        for partition in sorted(client.list_topics(topic, timeout=timeout).topics[topic].partitions)
    ]
    return list(client.committed(partitions, timeout=timeout)) if partitions else []


def committed_offsets(
    bootstrap: str, group: str, topics: Iterable[str], timeout: float = 10
) -> list[TopicPartition]:
    """The group's committed offset on each partition of ``topics`` (-1001: none)."""
    client = member(bootstrap, group)
    try:
        return committed_by(client, topics, timeout)
    finally:
        client.close()


def consumer_lag(
    bootstrap: str, group: str, topics: Iterable[str], timeout: float = 10
) -> int | None:
    """Records of ``topics`` the group has not consumed yet, summed over their partitions
    (None: no committed offsets yet); one client asks both the offsets and the ends."""
    client = member(bootstrap, group)
    try:
        committed = [tp for tp in committed_by(client, topics, timeout) if tp.offset >= 0]
        return (
            sum(
                max(
                    0,
                    client.get_watermark_offsets(tp, timeout=timeout, cached=False)[1] - tp.offset,
                )
                for tp in committed
            )
            if committed
            else None
        )
    finally:
        client.close()
