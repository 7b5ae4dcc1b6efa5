"""The edge agent's spans, per sampled reading: ``ingest``, the root of its trace, from
when the agent accepted the reading until its record was buffered, with the ``filter
chain`` its batch went through under it; and ``send``, under ``ingest``, as long as Kafka
takes to acknowledge the record.

Every reading got its trace id at ingest (its sender's, from a ``traceparent`` header, or a
new one), and the record keeps it through the buffer. ``RecordIds`` hands a new trace the id
of the reading it is for, so the sampler decides on the reading's own trace id, and the
record leaves with its span's context: sampled (``-01``) or not (``-00``), which the runner
honours. Only the readings the ratio may keep are looked at, a vector test per batch. With
no exporter configured there are no spans and the records keep the context they had
(the runner then decides by the same ratio).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import Span, SpanKind

from aios.api import tracing
from aios.edge.columns import Batch
from aios.edge.records import Record

TRACER = trace.get_tracer("aios.edge")


class RecordIds(IdGenerator):
    """Span ids at random; a new trace's id is the reading's being traced on this thread."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._pinned = threading.local()

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        pinned: int | None = getattr(self._pinned, "trace_id", None)
        return pinned or self._random.generate_trace_id()

    def pin(self, trace_id: int | None) -> None:
        self._pinned.trace_id = trace_id


IDS = RecordIds()


def candidates(batch: Batch) -> list[int]:
    """The rows whose trace the installed sampler may keep (none while tracing is off)."""
    provider = tracing.installed()
    if provider is None or not len(batch):
        return []
    sampler = provider.sampler
    if not isinstance(sampler, tracing.RatioSampler):
        return list(range(len(batch)))
    low = np.frombuffer(batch.trace.tobytes(), dtype=">u8")[1::2]
    return [int(row) for row in np.flatnonzero(low < sampler.by_id.bound)]


def ingested(
    batch: Batch, chain: tuple[int, int], generation: int, digest: str
) -> dict[int, bytes]:
    """The ``ingest`` and ``filter chain`` spans of each sampled row of ``batch`` (what the
    chain put out; ``chain``: when it ran, ns), ended now; the ``traceparent`` of each
    one's record."""
    ended = time.time_ns()
    traces = batch.trace.tobytes()
    found: dict[int, bytes] = {}
    for row in candidates(batch):
        IDS.pin(int.from_bytes(traces[16 * row : 16 * row + 16], "big"))
        try:
            span = TRACER.start_span(
                "ingest",
                kind=SpanKind.CONSUMER,
                start_time=int(batch.recv[row] * 1e9),
                attributes={"aios.edge.config.generation": generation},
            )
        finally:
            IDS.pin(None)
        if not span.is_recording():
            continue
        TRACER.start_span(
            "filter chain",
            context=trace.set_span_in_context(span),
            start_time=chain[0],
            attributes={"aios.edge.filter_chain": digest},
        ).end(end_time=chain[1])
        span.end(end_time=ended)
        found[row] = tracing.traceparent_of(span.get_span_context()).encode()
    return found


def sending(record: Record) -> tuple[bytes, Span | None]:
    """The ``traceparent`` the record leaves with, and its ``send`` span if it is recorded."""
    parent = tracing.parent(record.traceparent)
    if parent is None or tracing.installed() is None:
        return record.traceparent, None
    span = TRACER.start_span(
        f"send {record.topic}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            **tracing.messaging("kafka", "send", record.topic),
            "messaging.kafka.message.key": record.key.decode(errors="replace"),
        },
    )
    context = span.get_span_context()
    if not span.is_recording():  # not sampled: the runner is told so
        return record.traceparent[:-2] + b"00", None
    return tracing.traceparent_of(context).encode(), span
