"""``aios-worker``: one Temporal worker process for aios's workflows and activities.

The worker runs, on one task queue, the workflows in ``WORKFLOWS`` and the activities
``activities`` builds for its settings (their clients: OPA, Kafka, MQTT, the API server).
A new workflow or activity class is added to both lists here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from aios.api import tracing
from aios.connectors import opa, temporal
from aios.workflows.action import ActionWorkflow
from aios.workflows.action_activities import ActionActivities
from aios.workflows.action_io import SEARCH_ATTRIBUTES
from aios.workflows.approval_activities import ApprovalActivities
from aios.workflows.replay_gate import ReplayGateActivities
from aios.workflows.rollout import ModelRollout
from aios.workflows.rollout_activities import RolloutActivities
from aios.workflows.settings import WorkerSettings

WORKFLOWS = (ActionWorkflow, ModelRollout)


def activities(settings: WorkerSettings) -> list[Callable[..., Any]]:
    """Every activity, bound to clients made from ``settings``."""
    return [
        *ActionActivities(settings).all(),
        *ApprovalActivities(settings).all(),
        *RolloutActivities().all(),
        ReplayGateActivities().replay_gate,
    ]


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register the workflows' search attributes; already registered ones are kept."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = [k for k in SEARCH_ATTRIBUTES if k.name not in listed.custom_attributes]
    await add_search_attributes(client, namespace, missing)


async def add_search_attributes(
    client: Client, namespace: str, keys: Sequence[SearchAttributeKey[Any]]
) -> None:
    """Register ``keys`` (which must not be registered yet)."""
    if keys:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
                    for key in keys
                },
            )
        )


async def connect(settings: WorkerSettings) -> Client:
    """Connect, retrying while Temporal is away (a restart loop would back off for
    minutes after it is back)."""
    delay = 1.0
    while True:
        try:
            return await temporal.connect(settings.temporal_address, settings.namespace)
        except RuntimeError as error:
            logging.getLogger(__name__).warning("Temporal unreachable, retrying: %s", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


def build_worker(client: Client, settings: WorkerSettings) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=activities(settings),
        # The tracing interceptor's spans are made inside workflows: one OpenTelemetry.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("opentelemetry")
        ),
    )


async def serve(settings: WorkerSettings) -> None:
    client = await connect(settings)
    await ensure_search_attributes(client, settings.namespace)
    worker = build_worker(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with worker:
            logging.getLogger(__name__).info("worker on task queue %s", settings.task_queue)
            await stop.wait()
    finally:
        await opa.close_clients()  # the connections the authorize activity kept open
        tracing.shutdown()


def serve_metrics(port: int) -> None:
    """The Temporal SDK's own metrics on ``POD_IP:port``, Prometheus-named: workflows and
    activities completed and failed (``temporal_workflow_completed_total``,
    ``temporal_activity_execution_failed_total``…) and their latency in seconds
    (``temporal_activity_execution_latency_seconds``…), by workflow type, activity type
    and task queue. Set before the first client: every client shares the runtime."""
    address = f"{os.environ.get('POD_IP') or '127.0.0.1'}:{port}"
    metrics = PrometheusConfig(
        bind_address=address,
        counters_total_suffix=True,
        unit_suffix=True,
        durations_as_seconds=True,
    )
    Runtime.set_default(
        Runtime(telemetry=TelemetryConfig(metrics=metrics)), error_if_already_set=True
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aios-worker", description=__doc__)
    parser.add_argument("--task-queue", default=None)
    parser.add_argument("--metrics-port", type=int, default=None, help="Serve metrics here.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.metrics_port is not None:
        serve_metrics(args.metrics_port)
    tracing.configure("aios-worker")
    asyncio.run(serve(WorkerSettings.from_env(args.task_queue)))


if __name__ == "__main__":
    main()
