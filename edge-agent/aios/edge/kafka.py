"""The agent's Kafka clients: its only link to the cluster (no Kubernetes credentials).

The agent does not import ``aios.connectors`` (it runs on a gateway with a small dependency
set), so it reads the same ``AIOS_KAFKA_CONFIG`` security settings itself.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from aios.edge.protocol import (
    CONFIG_TOPIC,
    STATUS_TOPIC,
    AgentConfig,
    Heartbeat,
    config_partition,
    parse_config,
)

log = logging.getLogger("aios.edge.kafka")
REASSIGN_SECONDS = 30.0
"""How often the agent checks that the config topic's partition count has not changed."""


def client_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 3}
    config.update(json.loads(os.environ.get("AIOS_KAFKA_CONFIG") or "{}"))
    config.update(overrides)
    return config


def reading_producer(bootstrap: str, gateway: str, compression: str) -> Producer:
    """Transactional (so idempotent, acks=all, ordered per key), its id the gateway's own: a
    restarted agent fences its previous self, and what that one left open is aborted. A
    transaction's records time out with it; the forwarder sends them again after an abort."""
    return Producer(
        client_config(
            bootstrap,
            **{
                "transactional.id": f"aios-edge.{gateway}",
                "compression.type": compression,
                "linger.ms": 20,
                "max.in.flight.requests.per.connection": 5,
                "queue.buffering.max.messages": 200_000,
                "reconnect.backoff.max.ms": 2000,
                "topic.metadata.refresh.interval.ms": 10_000,  # a sink topic created later
            },
        )
    )


FORWARDED_PARTITION = 0
"""The config topic's partition under which the forwarded position is committed."""


class ForwardedPosition:
    """How far the forwarder's transactions got in the buffer, kept by Kafka: the offset of
    group ``aios-edge.<gateway>.forwarded`` on a partition of the config topic (one the
    gateway may read). Each transaction commits it with the records it covers, so the
    position and the records are in Kafka together or not at all."""

    def __init__(self, bootstrap: str, gateway: str) -> None:
        self.consumer = Consumer(
            client_config(
                bootstrap,
                **{"group.id": f"aios-edge.{gateway}.forwarded", "enable.auto.commit": False},
            )
        )

    def read(self, buffer: str, timeout: float) -> int | None:
        """The position committed for ``buffer`` (an id of the gateway's buffer, kept with
        the position: a gateway with a new disk starts numbering again); ``None`` when the
        group has none for it (yet, or no more)."""
        [found] = self.consumer.committed(
            [TopicPartition(CONFIG_TOPIC, FORWARDED_PARTITION)], timeout=timeout
        )
        if found.error is not None:
            raise KafkaException(found.error)
        return found.offset if found.offset >= 0 and found.metadata == buffer else None

    def commit_with(self, producer: Producer, buffer: str, position: int, timeout: float) -> None:
        """Add ``buffer``'s ``position`` to ``producer``'s open transaction."""
        offsets = [TopicPartition(CONFIG_TOPIC, FORWARDED_PARTITION, position, metadata=buffer)]
        producer.send_offsets_to_transaction(
            offsets, self.consumer.consumer_group_metadata(), timeout
        )

    def close(self) -> None:
        self.consumer.close()


class ConfigWatcher:
    """Reads this gateway's record from the compacted config topic (only the partition
    its key lives in) and hands every new generation to ``apply``."""

    def __init__(
        self,
        bootstrap: str,
        gateway: str,
        apply: Callable[[AgentConfig], None],
        report_error: Callable[[str], None],
    ) -> None:
        self.gateway, self.apply, self.report_error = gateway, apply, report_error
        self.consumer = Consumer(
            client_config(
                bootstrap,
                **{
                    "group.id": f"aios-edge.{gateway}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "topic.metadata.refresh.interval.ms": 10_000,
                },
            )
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-config", daemon=True)

    def start(self) -> ConfigWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.consumer.close()

    def _partition(self) -> int | None:
        """The partition of this gateway's key, once every partition of the topic has a
        leader (while the broker creates the topic, metadata lists only some)."""
        try:
            metadata = self.consumer.list_topics(CONFIG_TOPIC, timeout=5)
        except Exception as error:  # the broker may be away: try again later
            log.info("config topic not reachable", extra={"error": str(error)})
            return None
        topic = metadata.topics.get(CONFIG_TOPIC)
        if topic is None or topic.error is not None or not topic.partitions:
            return None
        if any(p.leader < 0 for p in topic.partitions.values()):
            return None
        return config_partition(self.gateway, len(topic.partitions))

    def _run(self) -> None:
        assigned: int | None = None
        checked = 0.0
        while not self._stop.is_set():
            if time.monotonic() - checked > (REASSIGN_SECONDS if assigned is not None else 2):
                checked = time.monotonic()
                partition = self._partition()
                if partition is not None and partition != assigned:
                    self.consumer.assign(
                        [TopicPartition(CONFIG_TOPIC, partition, OFFSET_BEGINNING)]
                    )
                    assigned = partition
            if assigned is None:
                self._stop.wait(0.5)
                continue
            message = self.consumer.poll(0.5)
            if message is not None:
                self._handle(message)

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("config consumer error", extra={"error": str(error)})
            return
        key = message.key()
        if key is None or key.decode() != self.gateway:
            return
        value = message.value()
        if value is None:
            log.warning("the gateway was deleted; keeping the last configuration")
            return
        try:
            config = parse_config(value)
        except ValueError as error:
            self.report_error(f"config record rejected: {error}"[:1000])
            return
        self.apply(config)


class HeartbeatSender:
    """Heartbeats on the status topic; a heartbeat that cannot go out within two periods is
    dropped (a stale one is worth nothing)."""

    def __init__(self, bootstrap: str, gateway: str, build: Callable[[], Heartbeat]) -> None:
        self.gateway, self.build = gateway, build
        self.producer = Producer(
            client_config(bootstrap, **{"linger.ms": 0, "message.timeout.ms": 10_000})
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-heartbeat", daemon=True)

    def start(self) -> HeartbeatSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.send()
        self.producer.flush(2)

    def send(self) -> Heartbeat:
        heartbeat = self.build()
        try:
            self.producer.produce(
                STATUS_TOPIC, key=self.gateway.encode(), value=heartbeat.to_bytes()
            )
        except BufferError:
            log.warning("heartbeat queue full")
        self.producer.poll(0)
        return heartbeat

    def _run(self) -> None:
        while not self._stop.is_set():
            heartbeat = self.send()
            self._stop.wait(heartbeat.heartbeat_seconds)
