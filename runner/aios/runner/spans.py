"""The runner's spans: one ``process`` span per sampled reading, a child of the span that
sent it (the edge agent's), with the steps the reading went through under it.

A batch is decided together, so its inference calls are shared: each sampled reading gets
its own ``infer`` span with the call's times, and the request carries the first one's
context to the model server. The action a reading leads to is handed off inside its
``process`` span, so the action workflow (and its policy check and sink) join the trace.
Unsampled readings cost a flag test each.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import astuple, dataclass, field

from confluent_kafka import Message
from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from aios.api import tracing
from aios.api.events import Decision
from aios.connectors.inference import Target
from aios.runner.records import Position

TRACER = trace.get_tracer("aios.runner")


@dataclass
class BatchSpans:
    """The ``process`` spans of one batch's sampled readings, by source position."""

    intent: str
    group: str
    started: int = field(default_factory=time.time_ns)
    spans: dict[tuple[str, int, int], Span] = field(default_factory=dict)

    def consumed(self, message: Message, traceparent: str | None) -> None:
        """Open the reading's ``process`` span if its trace is sampled and recorded."""
        if not tracing.sampled(traceparent):
            return
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset()
        span = TRACER.start_span(
            f"process {topic}",
            context=tracing.parent(traceparent),
            kind=SpanKind.CONSUMER,
            start_time=self.started,
            attributes={
                **tracing.messaging("kafka", "process", topic),
                "messaging.destination.partition.id": str(partition),
                "messaging.kafka.offset": offset or 0,
                "messaging.consumer.group.name": self.group,
                tracing.INTENT_ATTRIBUTE: self.intent,
            },
        )
        if span.is_recording():  # not without a tracer provider: tracing is off
            self.spans[(topic, partition, offset or 0)] = span

    def traceparent(self, position: Position) -> str | None:
        """The trace context a reading's decision carries on: its ``process`` span's."""
        span = self.spans.get(astuple(position))
        return tracing.traceparent_of(span.get_span_context()) if span else None

    @asynccontextmanager
    async def inference(self, call: str) -> AsyncIterator[InferenceSpans]:
        """Time one model call of the batch; yields the headers its request carries."""
        calls = InferenceSpans(call, list(self.spans.values()))
        try:
            yield calls
        finally:
            calls.finish()

    @contextmanager
    def deciding(self, position: Position) -> Iterator[None]:
        """The ``decide`` step of one reading (rules, thresholds, hysteresis)."""
        span = self.spans.get(astuple(position))
        if span is None:
            yield
            return
        with TRACER.start_as_current_span("decide", context=trace.set_span_in_context(span)):
            yield

    @contextmanager
    def handing_off(self, decision: Decision) -> Iterator[None]:
        """The reading's span is current while its action's workflow is started; for an
        untraced reading its context is, so the workflow is not traced either (rather
        than sampled anew as a trace of its own)."""
        span = self.spans.get(_position(decision))
        if span is not None:
            with trace.use_span(span, end_on_exit=False):
                yield
            return
        carried = tracing.parent(decision.traceparent)
        token = context.attach(carried) if carried is not None else None
        try:
            yield
        finally:
            if token is not None:
                context.detach(token)

    def finish(self, committed: bool) -> None:
        """End every ``process`` span once its batch is committed (or aborted)."""
        for span in self.spans.values():
            if not committed:
                span.set_status(Status(StatusCode.ERROR, "transaction aborted; decided again"))
            span.end()
        self.spans.clear()


@dataclass
class InferenceSpans:
    """One model call's ``infer`` span per sampled reading of the batch."""

    call: str
    parents: list[Span]
    started: int = field(default_factory=time.time_ns)
    target: Target | None = None
    error: str | None = None
    first: Span | None = None

    def __post_init__(self) -> None:
        if self.parents:
            self.first = self._start(self.parents[0])

    def headers(self) -> dict[str, str]:
        """The trace context the request carries to the model server (the first reading's)."""
        return tracing.headers(self.first) if self.first else {}

    def _start(self, parent: Span) -> Span:
        return TRACER.start_span(
            f"infer {self.call}",
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            start_time=self.started,
        )

    def finish(self) -> None:
        ended = time.time_ns()
        others = [self._start(parent) for parent in self.parents[1:]]
        for span in [self.first, *others] if self.first else []:
            if self.target is not None:
                span.set_attributes(
                    {
                        tracing.MODEL_ATTRIBUTE: self.target.model,
                        tracing.VERSION_ATTRIBUTE: self.target.version,
                        "aios.model.role": self.target.role,
                        "server.address": self.target.http,
                    }
                )
            if self.error:
                span.set_status(Status(StatusCode.ERROR, self.error))
            span.end(end_time=ended)


def _position(decision: Decision) -> tuple[str, int, int]:
    lineage = decision.lineage
    return lineage.topic, lineage.partition, lineage.offset
