"""The agent: journal → filter chain → buffer → Kafka, configured from the config topic.

Data directory::

    journal/      accepted raw readings (acknowledged once here), until checkpointed
    outbox/       the store-and-forward buffer: filtered, anonymised Kafka records
    quarantine/   what was rejected, with the reason (bounded, oldest dropped)
    checkpoint.npz  journal position, buffer end, filter state, sensor table, counters
    config.json   the configuration last applied (the agent restarts without Kafka)
    outbox.offset records of the buffer Kafka acknowledged
    hash.key      the key of device-id pseudonyms (created once, never leaves the gateway)

The processor checkpoints every ``checkpoint_seconds``; the forwarder sends only records
written before the last checkpoint. After a crash the buffer is cut back to the
checkpoint and the journal replayed from there, so every acknowledged reading is processed
exactly once and no record reaches Kafka twice.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from aios.edge import spans
from aios.edge.columns import Batch, Chunk, NameTable, metric_table
from aios.edge.filters import Chain, Context, PrivacyLedger
from aios.edge.forwarder import Forwarder, write_atomic
from aios.edge.protocol import AgentConfig, Heartbeat, parse_config
from aios.edge.records import Lineage, encode
from aios.edge.segments import DiskFull, LogFull, SegmentLog, free_bytes
from aios.edge.telemetry import Counters

log = logging.getLogger("aios.edge.agent")
MIB = 1 << 20
JOURNAL_BYTES = 64 * MIB
QUARANTINE_BYTES = 8 * MIB
BATCH_ROWS = 8192
SEQ_SHIFT = 16  # eventId seq = journal record number << 16 | row in the record
OUTPUT_BYTES_PER_ROW = 512  # a generous bound of one buffered Kafka record
DISK_RESERVE = 2 * BATCH_ROWS * OUTPUT_BYTES_PER_ROW
"""Free disk space ingest leaves to the processor: a batch's output and its checkpoint.
Without it the journal could fill the disk and the readings in it could never move on."""


@dataclass(frozen=True)
class Options:
    gateway: str
    data_dir: Path
    checkpoint_seconds: float = 0.5
    heartbeat_seconds: float | None = None


def load_key(path: Path) -> bytes:
    """The gateway's pseudonym key: from ``AIOS_EDGE_HASH_KEY`` or created once on disk."""
    env = os.environ.get("AIOS_EDGE_HASH_KEY")
    if env:
        return env.encode()
    if not path.exists():
        write_atomic(path, os.urandom(32))
        path.chmod(0o600)
    return path.read_bytes()


class Processor:
    """Runs the chain over the journal, writes the buffer, checkpoints, swaps configs."""

    def __init__(self, options: Options, counters: Counters) -> None:
        self.options, self.counters = options, counters
        root = options.data_dir
        root.mkdir(parents=True, exist_ok=True)
        self.journal = SegmentLog(
            root / "journal", JOURNAL_BYTES, "rejectNew", "interval", reserve_bytes=DISK_RESERVE
        )
        self.quarantine = SegmentLog(root / "quarantine", QUARANTINE_BYTES, "dropOldest", "never")
        self.config_path = root / "config.json"
        self.checkpoint_path = root / "checkpoint.npz"
        self.hash_key = load_key(root / "hash.key")
        self.table = NameTable()
        self.metrics = metric_table()
        """Only grows (state and journaled chunks are indexed by it); ingest reads it."""
        self.ledger = PrivacyLedger()
        self.config: AgentConfig | None = None
        self.chain: Chain | None = None
        self.offered: AgentConfig | None = None
        self.config_error: str | None = None
        self.lock = threading.Lock()
        self.on_config: list[Callable[[AgentConfig, AgentConfig | None], None]] = []
        self.committed_end = 0
        self.position = self.journal.start
        self._last_checkpoint = time.monotonic()
        self._restore_config()
        buffer = self.config.buffer if self.config else None
        self.outbox = SegmentLog(
            root / "outbox",
            buffer.max_bytes if buffer else 256 * MIB,
            buffer.overflow_policy if buffer else "dropOldest",
            buffer.fsync if buffer else "interval",
        )
        if buffer is not None:  # acknowledgements are as durable as the config asks
            self.journal.fsync = buffer.fsync
        self.recovered_uncommitted = 0
        self._restore_checkpoint()

    # -- restart -----------------------------------------------------------------------
    def _restore_config(self) -> None:
        if self.config_path.exists():
            self.config = parse_config(self.config_path.read_bytes())

    def _restore_checkpoint(self) -> None:
        if not self.checkpoint_path.exists():
            self.committed_end = self.outbox.end
            self._build_chain(None)
            return
        with np.load(self.checkpoint_path) as saved:
            meta = json.loads(bytes(saved["meta"]).decode())
            state = {k: saved[k] for k in saved.files if k != "meta"}
        self.table = NameTable()
        self.table.lookup(meta["sensors"])
        self.metrics.lookup(meta.get("metrics", []))
        self.counters.restore(meta["counters"])
        self.ledger = PrivacyLedger.restore(meta.get("privacyLedger") or {})
        self.position = max(int(meta["journal"]), self.journal.start)
        self.recovered_uncommitted = self.outbox.truncate(int(meta["outbox"]))
        self.committed_end = self.outbox.end
        self._build_chain(None)
        if self.chain is not None and self.config and meta.get("digest") == self.config.digest:
            self.chain.load(state)
        log.info(
            "restored",
            extra={
                "journal": self.position,
                "buffer_end": self.committed_end,
                "torn_records": self.outbox.recovery.torn_records
                + self.journal.recovery.torn_records,
                "uncommitted_records_cut": self.recovered_uncommitted,
            },
        )

    def _build_chain(self, previous: Chain | None) -> None:
        if self.config is None:
            self.chain = None
            return
        self.chain = Chain(
            self.config.filters,
            self.config.sensors,
            self.table,
            self.hash_key,
            previous,
            self.ledger,
            self.metrics,
        )

    # -- configuration -----------------------------------------------------------------
    def offer(self, config: AgentConfig) -> None:
        """A config record arrived; it is applied between two batches."""
        with self.lock:
            current = self.offered or self.config
            if current is not None and (config.generation, config.digest) == (
                current.generation,
                current.digest,
            ):
                return
            self.offered = config

    def _apply_offered(self) -> None:
        with self.lock:
            config, self.offered = self.offered, None
        if config is None:
            return
        previous = self.config
        if self.chain is not None and previous is not None:
            started = time.time_ns()
            drained = self.chain.drain(self._context())
            self._emit(drained, previous, (started, time.time_ns()))
        write_atomic(self.config_path, config.to_bytes())
        self.config = config
        self._build_chain(self.chain)
        self.outbox.max_bytes = config.buffer.max_bytes
        self.outbox.overflow = config.buffer.overflow_policy
        self.outbox.fsync = self.journal.fsync = config.buffer.fsync
        self.config_error = None
        self.checkpoint()
        log.info(
            "configuration applied",
            extra={"generation": config.generation, "digest": config.digest},
        )
        for callback in self.on_config:
            callback(config, previous)

    # -- processing --------------------------------------------------------------------
    def _context(self) -> Context:
        return Context(now=time.time(), table=self.table)

    def step(self) -> int:
        """Process what the journal holds (up to a batch); return readings processed."""
        self._apply_offered()
        if self.chain is None or self.config is None:
            return 0
        first, payloads = self.journal.read(self.position, 256)
        chunks = []
        rows = 0
        for payload in payloads:
            chunks.append(Chunk.decode(payload))
            rows += len(chunks[-1])
            if rows >= BATCH_ROWS:
                break
        batches = [
            chunk.to_batch(self.table, self.metrics, (first + i) << SEQ_SHIFT)
            for i, chunk in enumerate(chunks)
        ]
        ctx = self._context()
        if batches:
            ctx.now = max(ctx.now, float(max(b.recv.max() for b in batches if len(b)) or 0))
        buffer = self.config.buffer
        needed = rows * OUTPUT_BYTES_PER_ROW
        if buffer.overflow_policy == "rejectNew" and (
            self.outbox.size_bytes + needed > buffer.max_bytes
        ):
            return 0  # the buffer is full: readings wait in the journal, ingest pushes back
        if rows and free_bytes(self.outbox.directory) < needed + MIB:
            return 0  # the disk is full: likewise, until delivery frees some
        batch = Batch.concat(batches) if batches else Batch.empty()
        started = time.time_ns()
        out = self.chain.process(batch, ctx)
        chain = (started, time.time_ns())
        try:
            self._emit(out, self.config, chain)
        except DiskFull:  # more than the bound above foresaw: counted, never silent
            self.counters.add("dropped", len(out), "disk_full")
        except LogFull:
            self.counters.add("dropped", len(out), "buffer_full")
        self.counters.add_all("dropped", ctx.dropped)
        self.counters.add_all("quarantined", ctx.quarantined)
        self._quarantine(ctx)
        self.position = first + len(chunks) if chunks else self.position
        if time.monotonic() - self._last_checkpoint >= self.options.checkpoint_seconds:
            self.checkpoint()
        return rows

    def _emit(self, out: Batch, config: AgentConfig, chain: tuple[int, int]) -> None:
        """Buffer the chain's output (``chain``: when it ran, ns, for the spans)."""
        assert self.chain is not None
        lineage = Lineage(
            gateway=config.gateway.split("/")[-1],
            site=config.site,
            generation=config.generation,
            digest=config.digest,
            topic=config.sink.kafka_topic,
        )
        traced = spans.ingested(out, chain, config.generation, config.digest)
        records = encode(out, self.chain.presentation(), lineage, traced)
        if records:
            before = self.outbox.dropped
            self.outbox.append([r.frame() for r in records])
            self.counters.add("emitted", len(records))
            self.counters.add("dropped", self.outbox.dropped - before, "buffer_overflow")

    def _quarantine(self, ctx: Context) -> None:
        entries = []
        for reason, rows in ctx.quarantine:
            for i in range(len(rows)):
                metrics = {
                    self.metrics.ids[c]: float(value)
                    for c, value in enumerate(rows.values[i])
                    if not math.isnan(value)
                }
                entry = {
                    "time": ctx.now,
                    "reason": reason,
                    "sensorId": self.table.ids[rows.sid[i]],
                    "readingTime": float(rows.time[i]),
                    "metrics": metrics,
                }
                entries.append(json.dumps(entry).encode())
        if entries:
            self.quarantine.append(entries)

    def checkpoint(self) -> None:
        """Make the buffer durable, then record where the journal and the buffer stand."""
        self.outbox.sync()
        meta = {
            "journal": self.position,
            "outbox": self.outbox.end,
            "digest": self.config.digest if self.config else None,
            "generation": self.config.generation if self.config else None,
            "sensors": self.table.ids,
            "metrics": self.metrics.ids,
            "counters": self.counters.snapshot(),
            "privacyLedger": self.ledger.snapshot(),
        }
        arrays = self.chain.state() if self.chain else {}
        data = io.BytesIO()
        np.savez(data, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        write_atomic(self.checkpoint_path, data.getvalue())
        self.committed_end = self.outbox.end
        self.journal.release(self.position)
        self._last_checkpoint = time.monotonic()

    @property
    def privacy(self) -> tuple[float | None, float, int]:
        """Epsilon left in the current window, spent in all, sensors out of lifetime budget."""
        step = self.chain.privacy if self.chain else None
        return (step.remaining, step.spent_total, step.exhausted) if step else (None, 0.0, 0)


class Agent:
    """Every part of one gateway's agent, and the threads that drive them."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.counters = Counters()
        self.processor = Processor(options, self.counters)
        self.agent_id = f"{socket.gethostname()}/{os.getpid()}"
        self.forwarder: Forwarder | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-processor", daemon=True)

    def attach_forwarder(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def start(self) -> Agent:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.processor.checkpoint()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processed = self.processor.step()
            except Exception:
                log.exception("processing failed; retrying")
                processed = 0
                self._stop.wait(1)
            self.processor.outbox.sync_if_due()
            if not processed:
                self._stop.wait(0.05)

    def heartbeat(self) -> Heartbeat:
        processor = self.processor
        config = processor.config
        remaining, spent, exhausted = processor.privacy
        backlog = self.forwarder.backlog if self.forwarder else processor.outbox.end
        return Heartbeat(
            gateway=self.options.gateway,
            agent=self.agent_id,
            time=datetime.now(UTC),
            heartbeat_seconds=self.options.heartbeat_seconds
            or (config.heartbeat_seconds if config else 5.0),
            applied_generation=config.generation if config else None,
            applied_digest=config.digest if config else None,
            config_error=processor.config_error,
            buffer_bytes=processor.outbox.size_bytes,
            buffer_capacity_bytes=processor.outbox.max_bytes,
            buffer_records=backlog,
            forwarded=self.counters.total("forwarded"),
            dropped=self.counters.total("dropped"),
            quarantined=self.counters.total("quarantined"),
            reasons=self.counters.reasons(),
            privacy_budget_remaining=remaining,
            privacy_epsilon_spent=spent,
            privacy_sensors_exhausted=exhausted,
        )

    def gauges(self) -> dict[str, float]:
        processor = self.processor
        remaining, spent, exhausted = processor.privacy
        gauges = {
            "aios_edge_buffer_bytes": float(processor.outbox.size_bytes),
            "aios_edge_buffer_capacity_bytes": float(processor.outbox.max_bytes),
            "aios_edge_buffer_records": float(self.forwarder.backlog if self.forwarder else 0),
            "aios_edge_buffer_overflow_dropped_total": float(processor.outbox.dropped),
            "aios_edge_buffer_torn_records_total": float(
                processor.outbox.recovery.torn_records + processor.journal.recovery.torn_records
            ),
            "aios_edge_journal_bytes": float(processor.journal.size_bytes),
            "aios_edge_config_generation": float(
                processor.config.generation if processor.config else -1
            ),
            "aios_edge_privacy_epsilon_spent_total": spent,
            "aios_edge_privacy_sensors_exhausted": float(exhausted),
        }
        if remaining is not None:
            gauges["aios_edge_privacy_budget_remaining"] = remaining
        return gauges
