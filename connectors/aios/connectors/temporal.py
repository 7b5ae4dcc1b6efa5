"""The one way aios connects to Temporal: with pydantic's data converter, so a workflow's
input and its activities' arguments and results cross as the typed models they are (the
API's pydantic models, dataclasses) and are checked when they arrive; and with
OpenTelemetry's interceptor, so a workflow started inside a span is traced as its child,
activities included, in the worker that runs it (spans are exported where
``aios.api.tracing`` configured an exporter, else dropped)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter

DATA_CONVERTER = pydantic_data_converter


async def connect(address: str, namespace: str = "default", lazy: bool = False) -> Client:
    """A client of ``address`` (``host:port``) in ``namespace``; ``lazy``: at first use."""
    return await Client.connect(
        address,
        namespace=namespace,
        lazy=lazy,
        data_converter=DATA_CONVERTER,
        interceptors=[TracingInterceptor()],
    )
