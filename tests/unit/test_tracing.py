"""Trace context from the edge to the action: the edge agent's ``send`` span roots each
sampled reading's trace under the reading's own trace id, and the runner's spans hang
under it; an unsampled reading leaves with ``-00`` and costs no span downstream."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
from confluent_kafka import Message
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aios.api import tracing
from aios.api.events import Decision
from aios.connectors.inference import Target
from aios.edge import spans as edge_spans
from aios.edge.columns import Batch, new_batch
from aios.edge.records import Record
from aios.runner.records import Position
from aios.runner.spans import BatchSpans

EXPORTED = InMemorySpanExporter()
SAMPLED_TRACE = "0" * 16 + "0" * 15 + "1"  # low half far under a ratio of 0.5
UNSAMPLED_TRACE = "0" * 16 + "f" * 16  # low half over it


@pytest.fixture(scope="module", autouse=True)
def provider() -> Iterator[None]:
    """One provider for the process (OpenTelemetry allows one): half of new traces sampled,
    new trace ids as the edge agent gives them."""
    sdk = TracerProvider(sampler=tracing.RatioSampler(0.5), id_generator=edge_spans.IDS)
    sdk.add_span_processor(SimpleSpanProcessor(EXPORTED))
    trace.set_tracer_provider(sdk)
    yield


@pytest.fixture(autouse=True)
def clear() -> None:
    EXPORTED.clear()


def exported(name: str) -> list[ReadableSpan]:
    return [s for s in EXPORTED.get_finished_spans() if s.name == name]


def test_no_endpoint_installs_no_provider() -> None:
    assert tracing.configure("aios-test", env={}) is None
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318"})


def test_every_process_samples_a_trace_by_its_id_even_under_a_sampled_parent() -> None:
    """The runner of an edge agent that does not trace (its records say sampled) traces its
    readings at the ratio, not all; where the edge agent decided, the two agree."""
    ratio = tracing.sampler(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    )
    assert ratio is not None
    for trace_id, expected in ((SAMPLED_TRACE, True), (UNSAMPLED_TRACE, False)):
        for flags in ("01", "00"):
            parent = tracing.parent(f"00-{trace_id}-00f067aa0ba902b7-{flags}")
            decided = ratio.should_sample(parent, int(trace_id, 16), "process").decision
            assert decided.is_sampled() == (expected and flags == "01"), (trace_id, flags)
        root = ratio.should_sample(None, int(trace_id, 16), "reconcile").decision
        assert root.is_sampled() == expected
    assert tracing.sampler({"OTEL_TRACES_SAMPLER": "always_on"}) is None


def test_trace_context_is_read_as_w3c_says() -> None:
    assert tracing.parent(None) is None
    assert tracing.parent("00-not-a-trace-01") is None
    assert tracing.sampled(f"00-{SAMPLED_TRACE}-00f067aa0ba902b7-01")
    assert not tracing.sampled(f"00-{SAMPLED_TRACE}-00f067aa0ba902b7-00")
    context = trace.get_current_span(
        tracing.parent(f"00-{SAMPLED_TRACE}-00f067aa0ba902b7-01")
    ).get_span_context()
    assert tracing.traceparent_of(context) == f"00-{SAMPLED_TRACE}-00f067aa0ba902b7-01"


def batch_of(*trace_ids: str) -> Batch:
    """Rows with these trace ids, received a second ago."""
    n = len(trace_ids)
    now = time.time()
    batch = new_batch(
        np.zeros(n, np.int32), np.full(n, now), np.full((n, 6), 10.0), recv=np.full(n, now - 1)
    )
    batch.trace[:] = np.frombuffer(b"".join(bytes.fromhex(t) for t in trace_ids), dtype="V16")
    return batch


def test_a_sampled_reading_is_ingested_then_filtered_under_its_own_trace_id() -> None:
    batch = batch_of(UNSAMPLED_TRACE, SAMPLED_TRACE)
    chain = (time.time_ns() - 2_000_000, time.time_ns() - 1_000_000)
    traced = edge_spans.ingested(batch, chain, 3, "sha256:4be1")
    [ingest] = exported("ingest")
    [filtered] = exported("filter chain")
    assert list(traced) == [1], "only the row the ratio keeps"
    assert ingest.parent is None and ingest.context is not None
    assert f"{ingest.context.trace_id:032x}" == SAMPLED_TRACE
    assert ingest.start_time == int(batch.recv[1] * 1e9)
    assert filtered.parent is not None and filtered.parent.span_id == ingest.context.span_id
    assert (filtered.start_time, filtered.end_time) == chain
    assert traced[1] == tracing.traceparent_of(ingest.context).encode()


def record(trace_id: str, span_id: str = "1111111111111111") -> Record:
    traceparent = f"00-{trace_id}-{span_id}-01".encode()
    return Record("city.readings", b"sensor-1", traceparent, b"{}")


def test_a_sampled_record_is_sent_under_its_ingest_span() -> None:
    header, span = edge_spans.sending(record(SAMPLED_TRACE, "2222222222222222"))
    assert span is not None
    span.end()
    [sent] = exported("send city.readings")
    assert sent.parent is not None and sent.parent.span_id == int("2222222222222222", 16)
    assert sent.kind is SpanKind.PRODUCER
    assert sent.context is not None
    assert f"{sent.context.trace_id:032x}" == SAMPLED_TRACE
    assert header == tracing.traceparent_of(sent.context).encode()
    assert header.endswith(b"-01")
    assert sent.attributes is not None
    assert sent.attributes["messaging.destination.name"] == "city.readings"


def test_an_unsampled_record_keeps_its_trace_id_and_says_not_sampled() -> None:
    header, span = edge_spans.sending(record(UNSAMPLED_TRACE))
    assert span is None
    assert header == f"00-{UNSAMPLED_TRACE}-1111111111111111-00".encode()
    assert not tracing.sampled(header)
    assert exported("send city.readings") == []


def test_a_new_trace_elsewhere_gets_a_random_id() -> None:
    ids = {trace.get_tracer("t").start_span("x").get_span_context().trace_id for _ in range(3)}
    assert len(ids) == 3


def message(offset: int, traceparent: bytes) -> Message:
    return Message(
        topic="city.readings", partition=0, offset=offset, headers=[("traceparent", traceparent)]
    )


async def test_the_runner_traces_sampled_readings_under_the_span_that_sent_them() -> None:
    header, send = edge_spans.sending(record(SAMPLED_TRACE))
    assert send is not None
    unsampled, _ = edge_spans.sending(record(UNSAMPLED_TRACE))
    batch = BatchSpans("city/air", "aios.city.air")
    batch.consumed(message(7, header), header.decode())
    batch.consumed(message(8, unsampled), unsampled.decode())
    target = Target("stable", "v2", "anomaly", "http://anomaly:8000", "anomaly:8001")
    async with batch.inference("anomaly") as call:
        carried = call.headers()
        call.target = target
    first, second = Position("city.readings", 0, 7), Position("city.readings", 0, 8)
    with batch.deciding(first):
        pass
    assert batch.traceparent(second) is None
    decided = batch.traceparent(first)
    assert decided is not None
    batch.finish(committed=True)
    send.end()

    [process] = exported("process city.readings")
    [infer] = exported("infer anomaly")
    [decide] = exported("decide")
    assert process.parent is not None and process.context is not None
    assert process.parent.span_id == send.get_span_context().span_id
    assert process.kind is SpanKind.CONSUMER
    assert infer.parent is not None and infer.context is not None
    assert decide.parent is not None
    assert infer.parent.span_id == decide.parent.span_id == process.context.span_id
    assert infer.attributes is not None
    assert infer.attributes[tracing.VERSION_ATTRIBUTE] == "v2"
    assert carried["traceparent"] == tracing.traceparent_of(infer.context)
    assert decided == tracing.traceparent_of(process.context)


async def test_an_aborted_batch_ends_its_spans_in_error() -> None:
    header, send = edge_spans.sending(record(SAMPLED_TRACE))
    assert send is not None
    batch = BatchSpans("city/air", "aios.city.air")
    batch.consumed(message(9, header), header.decode())
    async with batch.inference("anomaly") as call:
        call.error = "anomaly: no answer within 0.5s"
    batch.finish(committed=False)
    [process] = exported("process city.readings")
    [infer] = exported("infer anomaly")
    assert process.status.status_code is StatusCode.ERROR
    assert infer.status.status_code is StatusCode.ERROR
    assert infer.status.description == "anomaly: no answer within 0.5s"


def test_without_a_provider_the_runner_records_nothing_and_decisions_keep_their_context() -> None:
    """Tracing off (no endpoint): a sampled reading gets no span, and its decision carries
    the edge's context on, not an invalid one (its own process: one provider per process)."""
    script = f"""
from confluent_kafka import Message
from aios.runner.records import Position
from aios.runner.spans import BatchSpans
header = "00-{SAMPLED_TRACE}-1111111111111111-01"
batch = BatchSpans("city/air", "aios.city.air")
batch.consumed(Message(topic="t", partition=0, offset=1, headers=[("traceparent", header)]), header)
assert batch.spans == {{}}, batch.spans
assert batch.traceparent(Position("t", 0, 1)) is None
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_untraced_readings_action_is_not_traced_either() -> None:
    """The hand-off of an unsampled reading runs in its context: the workflow's spans
    follow its decision instead of starting a trace of their own."""
    header, _ = edge_spans.sending(record(UNSAMPLED_TRACE))
    batch = BatchSpans("city/air", "aios.city.air")
    batch.consumed(message(3, header), header.decode())
    decision = Decision.model_validate(
        {
            "decisionId": "city/air/e-1",
            "intent": {"namespace": "city", "name": "air", "generation": 1},
            "eventId": "e-1",
            "sensorId": "s-1",
            "time": "2026-12-02T10:00:00Z",
            "decidedAt": "2026-12-02T10:00:01Z",
            "outcome": "act",
            "lineage": {"topic": "city.readings", "partition": 0, "offset": 3},
            "traceparent": header.decode(),
        }
    )
    with batch.handing_off(decision):
        started = trace.get_tracer("t").start_span("StartWorkflow:ActionWorkflow")
    assert not started.is_recording()
    assert f"{started.get_span_context().trace_id:032x}" == UNSAMPLED_TRACE
