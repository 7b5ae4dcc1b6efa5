"""The edge agent's spans: one ``send`` span per sampled record, the root of its reading's
trace, as long as Kafka takes to acknowledge it.

Every reading got its trace id at ingest (its sender's, from a ``traceparent`` header, or a
new one), and the record keeps it through the buffer. A new trace's id comes from
``RecordIds``, which hands out the id of the record being sent, so the sampler decides on
the reading's own trace id and the record leaves with the ``send`` span's context: sampled
(``-01``) or not (``-00``), which the runner honours. With no exporter configured the record
keeps the context it had.
"""

from __future__ import annotations

import threading

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import Span, SpanKind

from aios.api import tracing
from aios.edge.records import Record

TRACER = trace.get_tracer("aios.edge")


class RecordIds(IdGenerator):
    """Span ids at random; a new trace's id is the record's being sent on this thread."""

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


def sending(record: Record) -> tuple[bytes, Span | None]:
    """The ``traceparent`` the record leaves with, and its ``send`` span if it is recorded."""
    try:
        trace_id = int(record.traceparent[3:35], 16)
    except ValueError:
        return record.traceparent, None
    IDS.pin(trace_id)
    try:
        span = TRACER.start_span(
            f"send {record.topic}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": record.topic,
                "messaging.kafka.message.key": record.key.decode(errors="replace"),
            },
        )
    finally:
        IDS.pin(None)
    context = span.get_span_context()
    if not context.is_valid:  # no tracer provider: tracing is off
        return record.traceparent, None
    return tracing.traceparent_of(context).encode(), span if span.is_recording() else None
