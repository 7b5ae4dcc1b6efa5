"""Traces: one OpenTelemetry set-up for every aios process, and the W3C trace context as
the records, HTTP calls and workflows carry it.

A process exports spans over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set — the OpenTelemetry SDK's own variables, as
are ``OTEL_TRACES_SAMPLER`` and its argument (see ``sampler``). Without one no provider is
installed, the API's tracers hand out non-recording spans, and tracing costs next to
nothing. Every span carries the site (``aios.site``) and the service's name and instance.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aios.api.base import DEFAULT_SITE, SITE_ENV

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SITE_ATTRIBUTE = "aios.site"
INTENT_ATTRIBUTE = "aios.intent"
MODEL_ATTRIBUTE = "aios.model"
VERSION_ATTRIBUTE = "aios.model.version"
GATEWAY_ATTRIBUTE = "aios.gateway"
_PROPAGATOR = TraceContextTextMapPropagator()


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process has somewhere to send its spans."""
    return any(env.get(name) for name in ENDPOINT_ENVS)


def configure(
    service: str,
    attributes: Mapping[str, str] | None = None,
    ids: IdGenerator | None = None,
    env: Mapping[str, str] = os.environ,
) -> TracerProvider | None:
    """Install the process's tracer provider (once, at start-up), exporting over OTLP/HTTP
    in batches; None when no endpoint is set. ``attributes``: what every span of the
    process shares (an edge agent's gateway); ``ids``: how new traces get their ids."""
    if not enabled(env):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create(
        {
            "service.name": env.get("OTEL_SERVICE_NAME") or service,
            "service.namespace": "aios",
            "service.instance.id": env.get("POD_NAME") or f"{os.uname().nodename}-{os.getpid()}",
            SITE_ATTRIBUTE: env.get(SITE_ENV) or DEFAULT_SITE,
            **(attributes or {}),
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=sampler(env), id_generator=ids or RandomIdGenerator()
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


class RatioSampler(ParentBased):
    """Parent-based, deciding by trace id at one ratio both where a trace starts and under a
    parent of another process that says it is sampled (``sampler`` says why)."""

    def __init__(self, ratio: float) -> None:
        self.by_id = TraceIdRatioBased(ratio)
        super().__init__(root=self.by_id, remote_parent_sampled=self.by_id)


def sampler(env: Mapping[str, str] = os.environ) -> Sampler | None:
    """For ``parentbased_traceidratio`` (the chart's), every process samples a trace by its
    id at the same ratio, so they agree without asking each other: the edge agent decides,
    the runner and the workers find the same. A parent that says "not sampled" is honoured,
    but one that says "sampled" is checked too, so the readings of an edge agent that does
    not trace (its records say sampled) are traced at the ratio, not all of them. Any other
    sampler: the SDK's own reading of the variables (None)."""
    name = env.get("OTEL_TRACES_SAMPLER") or "parentbased_traceidratio"
    if name != "parentbased_traceidratio":
        return None
    return RatioSampler(float(env.get("OTEL_TRACES_SAMPLER_ARG") or 1.0))


def installed() -> TracerProvider | None:
    """The provider ``configure`` installed, if it did (else tracing is off)."""
    provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None


def shutdown() -> None:
    """Send what is still batched (at the process's end)."""
    provider = installed()
    if provider is not None:
        provider.shutdown()


def parent(traceparent: str | bytes | None) -> Context | None:
    """The context a W3C ``traceparent`` names (None if absent or malformed): spans
    started in it are its children, sampled as it says."""
    if not traceparent:
        return None
    value = traceparent.decode(errors="replace") if isinstance(traceparent, bytes) else traceparent
    context = _PROPAGATOR.extract({"traceparent": value})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def sampled(traceparent: str | bytes | None) -> bool:
    """Whether the trace context says its spans are recorded."""
    context = parent(traceparent)
    if context is None:
        return False
    return trace.get_current_span(context).get_span_context().trace_flags.sampled


def traceparent_of(context: SpanContext) -> str:
    """The W3C ``traceparent`` of a span context."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def messaging(system: str, operation: str, destination: str) -> dict[str, str]:
    """OpenTelemetry's messaging attributes of a span that sends (``send``, ``publish``) or
    processes (``process``) a message of ``destination``."""
    return {
        "messaging.system": system,
        "messaging.operation.name": operation,
        "messaging.operation.type": "send" if operation == "publish" else operation,
        "messaging.destination.name": destination,
    }


def headers(span: trace.Span) -> dict[str, str]:
    """The trace context headers of ``span`` for an outgoing call (none for an invalid one)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier
