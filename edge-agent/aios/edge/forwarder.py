"""Store and forward: the buffer's records go to Kafka in order, and the buffer's read
offset moves only over records Kafka acknowledged, in order, so a crash or an outage
resends nothing that was delivered and loses nothing that was not."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry.trace import Span, Status, StatusCode

from aios.edge import spans
from aios.edge.records import Record
from aios.edge.segments import NO_SPACE, SegmentLog
from aios.edge.telemetry import Counters

log = logging.getLogger("aios.edge.forwarder")
IN_FLIGHT = 50_000
RESEND_DELAY_SECONDS = 2.0
RESEND = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._MSG_TIMED_OUT}
"""Delivery errors after which the record is sent again rather than given up."""
PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}


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


class Forwarder:
    """Reads the buffer up to what the processor checkpointed, produces, tracks delivery."""

    def __init__(
        self,
        outbox: SegmentLog,
        offset_file: Path,
        make_producer: Callable[[], Producer],
        readable_end: Callable[[], int],
        counters: Counters,
    ) -> None:
        self.outbox, self.offset_file = outbox, offset_file
        self.make_producer, self.readable_end, self.counters = make_producer, readable_end, counters
        saved = int(offset_file.read_text().strip() or 0) if offset_file.exists() else 0
        self.committed = max(saved, outbox.start)
        save_offset(offset_file, self.committed)  # its bytes exist before the disk may fill
        self.next = self.committed
        self.in_flight: deque[int] = deque()
        self.delivered: set[int] = set()
        self.producer = make_producer()
        self.connected = False
        self._saved = self.committed
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._renew = threading.Event()
        self._resend = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-forwarder", daemon=True)

    @property
    def backlog(self) -> int:
        return max(0, self.outbox.end - self.committed)

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def stop(self, flush_seconds: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.producer.flush(flush_seconds)
        self._advance()
        self._save()

    def renew_producer(self) -> None:
        """Ask for a new producer (the sink's compression changed); done between polls."""
        self._renew.set()

    def _replace_producer(self, flush: bool) -> None:
        """Whatever was in flight and not acknowledged is sent again from the committed
        offset (after a fatal error that may repeat a record; its eventId tells)."""
        with self._lock:
            if flush:
                self.producer.flush(30)
            else:  # a producer holding undeliverable records would never be destroyed
                self.producer.purge(in_queue=True, in_flight=True, blocking=False)
                self.producer.flush(0)
            self._advance()
            self.producer = self.make_producer()
            self.in_flight.clear()
            self.delivered.clear()
            self.next = self.committed

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._renew.is_set():
                self._renew.clear()
                self._replace_producer(flush=True)
            if self._resend.is_set():
                self._stop.wait(RESEND_DELAY_SECONDS)
                self._resend.clear()
                self._replace_producer(flush=False)
            sent = self._produce_some()
            try:
                self.producer.poll(0.05 if not sent else 0)
            except KafkaException:
                self._replace_producer(flush=False)
            self._advance()
            if self.committed != self._saved and sent < 1000:
                self._save()

    def _produce_some(self) -> int:
        with self._lock:
            room = IN_FLIGHT - len(self.in_flight)
            if room <= 0:
                return 0
            first, payloads = self.outbox.read(self.next, min(room, 5000), self.readable_end())
            if first > self.next:  # dropped by the buffer's overflow policy meanwhile
                self.committed = max(self.committed, first)
            sent = 0
            for seq, payload in enumerate(payloads, start=first):
                record = Record.unframe(payload)
                traceparent, span = spans.sending(record)
                try:
                    self.producer.produce(
                        record.topic,
                        key=record.key,
                        value=record.value,
                        headers=[("traceparent", traceparent)],
                        on_delivery=self._delivered(seq, span),
                    )
                except BufferError:  # not sent now; its span is never ended, so never exported
                    break
                self.in_flight.append(seq)
                self.next = seq + 1
                sent += 1
            return sent

    def _delivered(
        self, seq: int, span: Span | None
    ) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, message: Message) -> None:
            if span is not None:
                if error is not None:
                    span.set_status(Status(StatusCode.ERROR, error.str()))
                span.end()
            if error is None:
                self.delivered.add(seq)
                self.counters.add("forwarded", 1)
                self.connected = True
                return
            if error.code() in PURGED:
                return  # dropped from a replaced producer: sent again from the buffer
            if error.fatal():
                log.error("producer fatal error; restarting it", extra={"error": str(error)})
                raise KafkaException(error)
            if error.retriable() or error.code() in RESEND:
                # e.g. the sink topic does not exist yet: keep it, send again later
                if not self._resend.is_set():
                    log.warning("delivery failed, will resend", extra={"error": str(error)})
                self._resend.set()
                return
            # permanent (e.g. record too large): it can never be delivered
            log.error("record rejected by Kafka", extra={"error": str(error), "seq": seq})
            self.counters.add("dropped", 1, f"kafka_{error.name().lower()}")
            self.delivered.add(seq)

        return report

    def _advance(self) -> None:
        with self._lock:
            while self.in_flight and self.in_flight[0] in self.delivered:
                self.delivered.discard(self.in_flight.popleft())
            done = self.in_flight[0] if self.in_flight else self.next
            self.committed = max(self.committed, done)

    def _save(self) -> None:
        try:
            save_offset(self.offset_file, self.committed)
        except OSError as error:
            if error.errno not in NO_SPACE:
                raise
            log.warning("delivery progress not saved, the disk is full; retrying")
            return
        self._saved = self.committed
        self.outbox.release(self.committed)

    def wait_idle(self, timeout: float) -> bool:
        """Whether every readable record was delivered within ``timeout`` (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.committed >= self.readable_end():
                return True
            time.sleep(0.05)
        return False
