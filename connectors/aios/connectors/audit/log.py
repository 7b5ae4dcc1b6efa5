"""Reading the audit log back: from its topic, or from its file mirror."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from aios.connectors import kafka
from aios.connectors.audit.records import AuditRecord
from aios.connectors.audit.writer import LOG_TOPIC


def _watermarks(consumer: Consumer, partition: TopicPartition, timeout: float) -> tuple[int, int]:
    """The partition's first and next offsets, once the client knows its leader (they are
    invalid, negative, until then)."""
    deadline = time.monotonic() + timeout
    while True:
        low, high = consumer.get_watermark_offsets(partition, timeout=timeout, cached=False)
        if low >= 0 and high >= 0:
            return low, high
        if time.monotonic() > deadline:
            raise TimeoutError(f"no leader known for {partition.topic} within {timeout}s")
        time.sleep(0.2)


def _read(consumer: Consumer, partition: TopicPartition, timeout: float) -> Iterable[Message]:
    """Every committed message of one partition from its assigned offset to the end."""
    consumer.assign([partition])
    low, high = _watermarks(consumer, partition, timeout)
    if high <= low:
        return
    while True:
        message = consumer.poll(timeout)
        if message is None:
            raise TimeoutError(f"no message from {partition.topic} within {timeout}s")
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            raise KafkaException(error)
        yield message


def open_reader(bootstrap: str | None) -> Consumer:
    return kafka.consumer(
        f"aios-audit-reader-{uuid.uuid4().hex[:8]}",
        bootstrap,
        **{"enable.partition.eof": True},
    )


def read_raw_log(
    bootstrap: str | None = None,
    topic: str = LOG_TOPIC,
    start: int = OFFSET_BEGINNING,
    timeout: float = 10.0,
) -> list[str]:
    """The stored text of every committed record, in log order. A transaction becomes
    readable once Kafka has written its markers, a moment after its commit returned."""
    reader = open_reader(bootstrap)
    try:
        return [
            (m.value() or b"").decode("utf-8", errors="replace")
            for m in _read(reader, TopicPartition(topic, 0, start), timeout)
        ]
    finally:
        reader.close()


def read_log(bootstrap: str | None = None, topic: str = LOG_TOPIC) -> list[AuditRecord]:
    """Every record of the audit log, parsed (``verify`` the raw text to detect tampering)."""
    return [AuditRecord.parse(raw) for raw in read_raw_log(bootstrap, topic)]


class AuditTail:
    """The latest records of the log, read by one reader kept open that fetches only what
    was appended since the last look: every dry-run Policy looks back at the same records
    on each audit tick, and a reader and a parse per Policy and tick cost a city's
    operator more than its reconciles."""

    def __init__(
        self,
        bootstrap: str | None,
        count: int,
        topic: str = LOG_TOPIC,
        timeout: float = 10.0,
        fresh_for: float = 0.0,
    ) -> None:
        self._bootstrap, self._topic, self._timeout = bootstrap, topic, timeout
        self._fresh_for = fresh_for
        """Seconds a look stands for the next ones: a look at the end of the log waits
        for the broker's fetch wait (half a second), and a thousand Policies asking in
        the same tick would wait for each other's."""
        self._looked = -float("inf")
        self._records: deque[AuditRecord] = deque(maxlen=count)
        self._next = -1
        """The offset to read from next; -1 before the first look."""
        self._reader: Consumer | None = None
        self._lock = threading.Lock()

    def latest(self) -> list[AuditRecord]:
        """The last ``count`` records (at most), parsed, in log order."""
        with self._lock:
            if time.monotonic() - self._looked < self._fresh_for:
                return list(self._records)
            if self._reader is None:
                self._reader = open_reader(self._bootstrap)
            low, high = _watermarks(self._reader, TopicPartition(self._topic, 0), self._timeout)
            # The appender commits in transactions, whose markers take offsets too (at
            # most one per record): twice as many offsets hold the last ``count`` records.
            first = max(low, high - 2 * (self._records.maxlen or 0))
            if not first <= self._next <= high:  # the first look, records gone, or a new log
                self._records.clear()
                self._next = first
            if self._next < high:
                start = TopicPartition(self._topic, 0, self._next)
                for message in _read(self._reader, start, self._timeout):
                    self._records.append(AuditRecord.parse((message.value() or b"").decode()))
                    self._next = (message.offset() or 0) + 1
            self._looked = time.monotonic()
            return list(self._records)

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


def read_file(path: Path) -> list[str]:
    """The records of a local audit file (one per line)."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]
