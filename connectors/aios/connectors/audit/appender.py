"""The ``Appender``: the one thread that chains events into records, exactly once."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import (
    Consumer,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import Counter, Gauge

from aios.connectors import kafka
from aios.connectors.audit.log import open_reader, read_file, read_raw_log
from aios.connectors.audit.records import (
    DEDUP_WINDOW,
    GENESIS,
    KINDS,
    AuditRecord,
    canonical,
    chain,
    malformed,
)
from aios.connectors.audit.writer import EVENTS_TOPIC, LOG_TOPIC, events_topic_spec, log_topic_spec

logger = logging.getLogger(__name__)

APPENDED = Counter(
    "aios_audit_records_appended", "Records the active appender chained onto the audit log."
)
PENDING = Gauge(
    "aios_audit_events_pending",
    "Audit events stored but not chained yet, as the active appender last measured (0 on a"
    " standby): with none appended meanwhile, the chain is stalled.",
)
PENDING_EVERY_SECONDS = 5.0


class Checkpoints(Protocol):
    """Where the appender reports its head, to be signed and kept outside the log
    (``aios.connectors.audit_checkpoint.Checkpointer``)."""

    def observe(self, seq: int, head: str) -> None:
        """The head now; signed when the last checkpoint is old enough."""

    def flush(self, seq: int, head: str) -> None:
        """The head at shutdown: signed unless it is already."""


class Appender:
    """The one writer of the chain: events → records, exactly once, in a transaction."""

    def __init__(
        self,
        bootstrap: str | None = None,
        events_topic: str = EVENTS_TOPIC,
        log_topic: str = LOG_TOPIC,
        file: Path | None = None,
        batch: int = 500,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.checkpoints = checkpoints
        self.events_topic = events_topic
        self.log_topic = log_topic
        self.file = file
        self.batch = batch
        self.transactional_id = f"aios-audit-appender.{log_topic}"
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._seq = -1
        self._hash = GENESIS
        self._recent: deque[str] = deque(maxlen=DEDUP_WINDOW)
        self._recent_set: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending_measured = 0.0

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> Appender:
        """Join the appenders' consumer group; the one member assigned the events
        partition appends (``_assigned``), the others stand by — so replicas of the
        operator never fence each other, and one takes over when the active one goes."""
        kafka.ensure_topics(
            kafka.admin(self.bootstrap),
            [events_topic_spec(self.events_topic), log_topic_spec(self.log_topic)],
        )
        self._consumer = kafka.consumer(f"aios-audit-appender.{self.log_topic}", self.bootstrap)
        self._consumer.subscribe(
            [self.events_topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._revoked,
        )
        return self

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Fence any earlier appender, learn the chain's head; consumption resumes at the
        group's committed offset, which each transaction advanced."""
        if not partitions:
            return
        self._producer = kafka.producer(
            self.bootstrap,
            **{"transactional.id": self.transactional_id, "transaction.timeout.ms": 60000},
        )
        self._producer.init_transactions(30)
        self._load_head()

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self._producer = None
            PENDING.set(0)

    def _load_head(self) -> None:
        tail = read_raw_log(self.bootstrap, self.log_topic, self._tail_start())
        self._seq, self._hash = -1, GENESIS
        self._recent.clear()
        self._recent_set.clear()
        for raw in tail:
            record = AuditRecord.parse(raw)
            self._seq, self._hash = record.seq, record.hash
            self._remember(record.event_id)
        if self.file is not None:
            self._catch_up_file()

    def _tail_start(self) -> int:
        reader = open_reader(self.bootstrap)
        try:
            low, high = reader.get_watermark_offsets(TopicPartition(self.log_topic, 0), timeout=10)
        finally:
            reader.close()
        return max(low, high - DEDUP_WINDOW)

    def _catch_up_file(self) -> None:
        """The file mirrors the log: append what a crash left out (it never runs ahead)."""
        assert self.file is not None
        last = -1
        if self.file.exists():
            lines = read_file(self.file)
            last = AuditRecord.parse(lines[-1]).seq if lines else -1
        if last >= self._seq:
            return
        missing = [
            raw
            for raw in read_raw_log(self.bootstrap, self.log_topic)
            if AuditRecord.parse(raw).seq > last
        ]
        self._write_file(missing)

    def _write_file(self, lines: list[str]) -> None:
        if self.file is None or not lines:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with self.file.open("a", encoding="utf-8") as out:
            out.write("".join(f"{line}\n" for line in lines))
            out.flush()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._producer = None

    def start(self) -> Appender:
        """Run in a daemon thread until ``stop``; reopens after a Kafka error."""
        self._thread = threading.Thread(target=self._run, name="aios-audit-appender", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._consumer is None:
                    self.open()
                self.run_once(1.0)
            except Exception:
                logger.exception("audit appender failed; reopening")
                self.close()
                self._stop.wait(2)
        if self.checkpoints is not None and self._producer is not None:
            self.checkpoints.flush(self._seq, self._hash)
        self.close()

    # -- the work ---------------------------------------------------------------------
    def _remember(self, event_id: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(event_id)
        self._recent_set.add(event_id)

    def run_once(self, timeout: float = 1.0) -> int:
        """Chain the events available now, in one transaction; returns how many (0 while
        another appender holds the events partition)."""
        if self._consumer is None:
            self.open()
        assert self._consumer is not None
        messages = [m for m in self._consumer.consume(self.batch, timeout) if m.error() is None]
        if self._producer is None:
            return 0  # a standby: the active appender signs the head
        chained = self._append(messages) if messages else 0
        if self.checkpoints is not None:
            self.checkpoints.observe(self._seq, self._hash)
        if time.monotonic() - self._pending_measured >= PENDING_EVERY_SECONDS:
            self._pending_measured = time.monotonic()
            PENDING.set(self._pending())
        return chained

    def _pending(self) -> int:
        """Events past the appender's position (the group's commit before its first read)."""
        assert self._consumer is not None
        events = TopicPartition(self.events_topic, 0)
        low, high = self._consumer.get_watermark_offsets(events, timeout=5)
        (at,) = self._consumer.position([events])
        if at.offset < 0:
            (at,) = self._consumer.committed([events], 5)
        return max(high - (at.offset if at.offset >= 0 else low), 0)

    def _append(self, messages: list[Message]) -> int:
        assert self._producer is not None and self._consumer is not None
        seq, head, lines, added = self._seq, self._hash, [], []
        self._producer.begin_transaction()
        try:
            for message in messages:
                document = self._event_of(message)
                if document["eventId"] in self._recent_set or document["eventId"] in added:
                    continue
                source = {
                    "topic": message.topic(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                }
                record = chain(document, seq + 1, head, source)
                line = canonical(record)
                self._producer.produce(self.log_topic, line.encode(), key=str(seq + 1).encode())
                seq, head = seq + 1, record["hash"]
                lines.append(line)
                added.append(str(document["eventId"]))
            resume = (messages[-1].offset() or 0) + 1
            self._producer.send_offsets_to_transaction(
                [TopicPartition(self.events_topic, 0, resume)],
                self._consumer.consumer_group_metadata(),
                30,
            )
            self._producer.commit_transaction(30)
        except Exception:
            self._producer.abort_transaction(30)
            raise
        self._seq, self._hash = seq, head
        for event_id in added:
            self._remember(event_id)
        self._write_file(lines)
        APPENDED.inc(len(lines))
        return len(lines)

    @staticmethod
    def _event_of(message: Message) -> dict[str, Any]:
        raw = message.value() or b""
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or not isinstance(document.get("eventId"), str):
                raise ValueError("an event is a JSON object with an eventId")
            if document.get("kind") not in KINDS:
                raise ValueError(f"unknown kind {document.get('kind')!r}")
            return document
        except ValueError as error:
            return malformed(raw, str(error))
