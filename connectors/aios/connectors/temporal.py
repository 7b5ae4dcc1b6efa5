"""The one way aios connects to Temporal: with pydantic's data converter, so a workflow's
input and its activities' arguments and results cross as the typed models they are (the
API's pydantic models, dataclasses) and are checked when they arrive; and with
OpenTelemetry's interceptor, so a workflow started inside a span is traced as its child,
activities included, in the worker that runs it (spans are exported where
``aios.api.tracing`` configured an exporter, else dropped)."""

from __future__ import annotations

from typing import TypeVar

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

Input = TypeVar("Input")

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


async def started_input(client: Client, workflow_id: str, kind: type[Input]) -> Input | None:
    """The input the workflow ``workflow_id`` was started with, as ``kind`` (None: no
    such workflow)."""
    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    started = history.events[0].workflow_execution_started_event_attributes
    decoded = await client.data_converter.decode(started.input.payloads, [kind])
    found: Input = decoded[0]
    return found
