"""The latest record per key of a Kafka topic, kept in memory by a background thread —
how the operator reads what runners and agents report without polling each of them.

It reads every partition from the beginning (the topics it follows are compacted, so
that is the latest record per key plus a short tail) and looks for new partitions every
``RESCAN_SECONDS``: right after a topic is created its metadata may list only some.

``Heartbeats`` turns such a topic into reports: what follows a heartbeat is refreshed when
it arrives and when it is missed, not on a short poll of every object."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from aios.connectors import kafka

log = logging.getLogger(__name__)
RESCAN_SECONDS = 30.0
MISSED_MARGIN_SECONDS = 1.0
"""After a heartbeat's deadline, before it is reported missed: the sender's clock and the
operator's differ a little."""


class LatestRecords:
    """Follows ``topic`` from its end; ``get(prefix)`` returns the latest JSON value per key.
    ``on_record(key)`` is called (on the follower's thread) after each record is kept."""

    def __init__(
        self, bootstrap: str, topic: str, on_record: Callable[[str], None] | None = None
    ) -> None:
        self.topic = topic
        self._on_record = on_record
        self._consumer = Consumer(
            kafka.client_config(
                bootstrap,
                **{
                    # Every operator replica reads everything: a private group, nothing committed.
                    "group.id": f"aios-operator-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                },
            )
        )
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

    def latest(self, key: str) -> dict[str, Any] | None:
        """The latest value of exactly ``key`` (a lookup, not a scan of every key)."""
        with self._lock:
            found = self._latest.get(key)
        return found[1] if found is not None else None

    def get(self, prefix: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: v for k, (_, v) in self._latest.items() if k.startswith(prefix)}

    def _assign(self, assigned: set[int]) -> set[int]:
        """Add partitions not followed yet (from their beginning); return all followed."""
        metadata = self._consumer.list_topics(self.topic, timeout=10)
        found = set(metadata.topics[self.topic].partitions)
        if not found:  # just created: metadata not propagated yet
            raise LookupError(f"{self.topic} has no partitions yet")
        new = sorted(found - assigned)
        if new:
            self._consumer.incremental_assign(
                [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in new]
            )
        return assigned | found

    def _run(self) -> None:
        assigned: set[int] = set()
        rescan = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= rescan:
                    assigned = self._assign(assigned)
                    rescan = time.monotonic() + RESCAN_SECONDS
                message = self._consumer.poll(0.5)
                if message is None or message.error() is not None:
                    continue
                self._store(message.key(), message.value())
            except Exception as error:  # the broker restarting must not end the follower
                log.warning("following %s failed, retrying: %s", self.topic, error)
                self._stop.wait(2)
        self._consumer.close()

    def _store(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        key = (raw_key or b"").decode()
        try:
            value = json.loads(raw_value or b"null")
        except ValueError:
            log.warning("ignoring a malformed record on %s (key %s)", self.topic, key)
            return
        with self._lock:
            if value is None:
                self._latest.pop(key, None)
            else:
                self._latest[key] = (time.time(), value)
        if self._on_record is not None and value is not None:
            self._on_record(key)


class Heartbeats:
    """Heartbeats on ``topic``, followed into ``records``; each key is ``report``-ed (on the
    event loop) when its heartbeat arrives, and again when that heartbeat passes the deadline
    ``expires`` gives it, unless a newer one came first."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        report: Callable[[str], None],
        expires: Callable[[dict[str, Any]], datetime | None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._report = report
        self._expires = expires
        self._missed_checks: dict[str, asyncio.TimerHandle] = {}
        self.records = LatestRecords(bootstrap, topic, self._received).start()

    def stop(self) -> None:
        for check in self._missed_checks.values():
            check.cancel()
        self.records.stop()

    def _received(self, key: str) -> None:
        """On the follower's thread, for each heartbeat."""
        self._loop.call_soon_threadsafe(self._arrived, key)

    def _arrived(self, key: str) -> None:
        self._report(key)
        previous = self._missed_checks.pop(key, None)
        if previous is not None:
            previous.cancel()
        value = self.records.latest(key)
        deadline = self._expires(value) if value is not None else None
        if deadline is not None:
            delay = (deadline - datetime.now(UTC)).total_seconds()
            self._missed_checks[key] = self._loop.call_later(
                max(delay, 0.0) + MISSED_MARGIN_SECONDS, self._missed, key
            )

    def _missed(self, key: str) -> None:
        del self._missed_checks[key]
        self._report(key)
