"""Store and forward: the buffer's records go to Kafka in order, in transactions that
commit with them the buffer position they reach (``ForwardedPosition``). A crash or an
outage aborts at most the open transaction, and a restart resumes where Kafka says the last
committed one ended, so nothing delivered is sent again and nothing undelivered is lost."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry.trace import Span, Status, StatusCode

from aios.edge import spans
from aios.edge.kafka import ForwardedPosition
from aios.edge.records import Record
from aios.edge.segments import NO_SPACE, SegmentLog
from aios.edge.telemetry import Counters

log = logging.getLogger("aios.edge.forwarder")
TRANSACTION_RECORDS = 5000
"""The most records one transaction carries."""
KAFKA_TIMEOUT_SECONDS = 30.0
RETRY_SECONDS = 2.0
PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}
"""What an aborted transaction's records report: sent again from the buffer."""
REJECTED = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG_SIZE}
"""Errors that say Kafka will never take the record; after any other, it is sent again."""


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` whole or not at all; a failed write (a full disk) leaves no
    temporary file taking the space."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def save_offset(path: Path, offset: int) -> None:
    """Record ``offset`` in place: one write of the same 21 bytes, synced. It needs no new
    space on the disk (a write-and-rename would), so on a full disk the forwarder can still
    record its progress, and so free the buffer it has delivered."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, f"{offset:020d}\n".encode(), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def buffer_id(path: Path) -> str:
    """This buffer's id, made once: the forwarded position Kafka keeps is this buffer's
    only if it carries it."""
    if not path.exists():
        write_atomic(path, uuid.uuid4().hex.encode())
    return path.read_text().strip()


class Forwarder:
    """Reads the buffer up to what the processor checkpointed and sends it on, one
    transaction at a time."""

    def __init__(
        self,
        outbox: SegmentLog,
        offset_file: Path,
        make_producer: Callable[[], Producer],
        position: ForwardedPosition,
        readable_end: Callable[[], int],
        counters: Counters,
    ) -> None:
        """``offset_file``: the position as last seen committed, kept on the gateway so the
        buffer can be freed up to it, and the start while Kafka cannot say."""
        self.outbox, self.offset_file, self.position = outbox, offset_file, position
        self.make_producer, self.readable_end, self.counters = make_producer, readable_end, counters
        saved = int(offset_file.read_text().strip() or 0) if offset_file.exists() else 0
        self.buffer = buffer_id(offset_file.with_name("outbox.id"))
        self.committed = max(saved, outbox.start)
        save_offset(offset_file, self.committed)  # its bytes exist before the disk may fill
        self.producer: Producer | None = None
        self.rejected: set[int] = set()
        """Records Kafka refused for good (too large): counted as dropped, left out."""
        self._stop = threading.Event()
        self._renew = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-forwarder", daemon=True)

    @property
    def backlog(self) -> int:
        return max(0, self.outbox.end - self.committed)

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def stop(self) -> None:
        """After the transaction under way: the next start goes on from its end."""
        self._stop.set()
        self._thread.join(timeout=KAFKA_TIMEOUT_SECONDS * 2)
        self.position.close()

    def renew_producer(self) -> None:
        """Ask for a new producer (the sink's compression changed); done between two
        transactions."""
        self._renew.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._renew.is_set():
                self._renew.clear()
                self._retire()
            if self.producer is None and not self._connect():
                self._stop.wait(RETRY_SECONDS)
                continue
            if not self._forward():
                self._stop.wait(0.05)

    def _connect(self) -> bool:
        """A producer whose transactions are ready (the previous one's, even of a process
        that crashed, aborted), and the position Kafka has committed."""
        producer = self.make_producer()
        try:
            producer.init_transactions(KAFKA_TIMEOUT_SECONDS)
            committed = self.position.read(self.buffer, KAFKA_TIMEOUT_SECONDS)
        except KafkaException as error:
            log.warning("Kafka not ready for transactions", extra={"error": str(error)})
            return False
        if committed is not None and committed > self.committed:
            self._advance(committed)
        self.producer = producer
        return True

    def _forward(self) -> int:
        """One transaction of what the buffer holds; returns how many records it carried."""
        assert self.producer is not None
        first, payloads = self.outbox.read(self.committed, TRANSACTION_RECORDS, self.readable_end())
        if first > self.committed:  # dropped by the buffer's overflow policy meanwhile
            self._advance(first)
        if not payloads:
            return 0
        end = first + len(payloads)
        failed: dict[int, KafkaError] = {}
        sent = 0
        try:
            self.producer.begin_transaction()
            for seq, payload in enumerate(payloads, start=first):
                if seq not in self.rejected:
                    sent += self._produce(seq, Record.unframe(payload), failed)
            self.producer.flush(KAFKA_TIMEOUT_SECONDS)  # delivery reports before the commit
            self.position.commit_with(self.producer, self.buffer, end, KAFKA_TIMEOUT_SECONDS)
            self.producer.commit_transaction(KAFKA_TIMEOUT_SECONDS)
        except KafkaException as exception:
            self._failed(exception.args[0], failed)
            return 0
        self.counters.add("forwarded", sent)
        self._advance(end)
        return sent

    def _produce(self, seq: int, record: Record, failed: dict[int, KafkaError]) -> bool:
        """Whether the record went into the transaction (one too large never does)."""
        assert self.producer is not None
        traceparent, span = spans.sending(record)
        while True:
            try:
                self.producer.produce(
                    record.topic,
                    key=record.key,
                    value=record.value,
                    headers=[("traceparent", traceparent)],
                    on_delivery=self._delivered(seq, span, failed),
                )
                return True
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.1)
            except KafkaException as refused:
                if refused.args[0].code() not in REJECTED:
                    raise
                self._reject(seq, refused.args[0])
                return False

    def _delivered(
        self, seq: int, span: Span | None, failed: dict[int, KafkaError]
    ) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, message: Message) -> None:
            if span is not None:
                if error is not None:
                    span.set_status(Status(StatusCode.ERROR, error.str()))
                span.end()
            if error is not None and error.code() not in PURGED:
                failed[seq] = error

        return report

    def _reject(self, seq: int, reason: KafkaError) -> None:
        log.error("record rejected by Kafka", extra={"error": str(reason), "seq": seq})
        self.counters.add("dropped", 1, f"kafka_{reason.name().lower()}")
        self.rejected.add(seq)

    def _failed(self, error: KafkaError, failed: dict[int, KafkaError]) -> None:
        """The transaction did not commit. A record Kafka can never take is left out from
        then on; the producer is retired, and its successor's ``init_transactions`` settles
        what it left open (aborted, or committed if the commit got through: Kafka's
        position then says so)."""
        for seq, reason in failed.items():
            if reason.code() in REJECTED:
                self._reject(seq, reason)
        log.warning("transaction not committed, will resend", extra={"error": str(error)})
        self._retire()
        self._stop.wait(RETRY_SECONDS)

    def _retire(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:  # one holding undeliverable records would never be destroyed
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.flush(0)

    def _advance(self, position: int) -> None:
        """Kafka has everything before ``position``: note it and free the buffer before it."""
        self.committed = position
        self.rejected = {seq for seq in self.rejected if seq >= position}
        try:
            save_offset(self.offset_file, position)
        except OSError as error:
            if error.errno not in NO_SPACE:
                raise
            log.warning("delivery progress not saved, the disk is full; freed on the next")
            return
        self.outbox.release(position)
