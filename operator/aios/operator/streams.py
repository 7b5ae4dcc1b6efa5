"""The latest record per key of a Kafka topic, kept in memory by a background thread —
how the operator reads what runners and agents report without polling each of them."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from aios.connectors import kafka

log = logging.getLogger(__name__)


class LatestRecords:
    """Follows ``topic`` from its end; ``get(prefix)`` returns the latest JSON value per key."""

    def __init__(self, bootstrap: str, topic: str,
                 on_record: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.topic = topic
        self.on_record = on_record
        self._consumer = Consumer(kafka.client_config(bootstrap, **{
            # Every operator replica reads everything: a private group, nothing committed.
            "group.id": f"aios-operator-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
        }))
        self._latest: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{topic}", daemon=True)

    def start(self) -> LatestRecords:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def get(self, prefix: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: v for k, (_, v) in self._latest.items() if k.startswith(prefix)}

    def _assign(self) -> None:
        metadata = self._consumer.list_topics(self.topic, timeout=10)
        partitions = metadata.topics[self.topic].partitions
        if not partitions:  # just created: metadata not propagated yet
            raise LookupError(f"{self.topic} has no partitions yet")
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in partitions])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._assign()
                while not self._stop.is_set():
                    message = self._consumer.poll(0.5)
                    if message is None or message.error() is not None:
                        continue
                    key = (message.key() or b"").decode()
                    try:
                        value = json.loads(message.value() or b"null")
                    except ValueError:
                        log.warning("ignoring a malformed record on %s (key %s)", self.topic, key)
                        continue
                    with self._lock:
                        if value is None:
                            self._latest.pop(key, None)
                        else:
                            self._latest[key] = (time.time(), value)
                    if self.on_record is not None and value is not None:
                        self.on_record(key, value)
            except Exception as error:  # the broker restarting must not end the follower
                log.warning("following %s failed, retrying: %s", self.topic, error)
                self._stop.wait(2)
        self._consumer.close()
