"""``aios-worker``: one Temporal worker process for aios's workflows and activities.

Each feature contributes a ``Registration`` (its workflow classes and a factory for its
activities, which receive their clients from the worker's settings) to ``REGISTRATIONS``;
the worker runs them all on one task queue.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.worker import Worker

TEMPORAL_ADDRESS_ENV = "AIOS_TEMPORAL_ADDRESS"
TEMPORAL_NAMESPACE_ENV = "AIOS_TEMPORAL_NAMESPACE"
DEFAULT_TASK_QUEUE = "aios"


@dataclass(frozen=True)
class WorkerSettings:
    """What activities may need to reach; read from the environment the operator renders."""

    temporal_address: str
    namespace: str = "default"
    task_queue: str = DEFAULT_TASK_QUEUE
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, task_queue: str | None = None) -> WorkerSettings:
        address = os.environ.get(TEMPORAL_ADDRESS_ENV)
        if not address:
            raise RuntimeError(f"set {TEMPORAL_ADDRESS_ENV} to the Temporal frontend (host:port)")
        return cls(
            temporal_address=address,
            namespace=os.environ.get(TEMPORAL_NAMESPACE_ENV, "default"),
            task_queue=task_queue or DEFAULT_TASK_QUEUE,
            env=dict(os.environ),
        )


@dataclass(frozen=True)
class Registration:
    """A feature's workflows and the activities built for a worker's settings."""

    workflows: Sequence[type]
    activities: Callable[[WorkerSettings], Sequence[Callable[..., Any]]]
    search_attributes: Sequence[SearchAttributeKey[Any]] = ()
    """Custom search attributes the feature's workflows set (registered at start-up)."""


REGISTRATIONS: list[Registration] = []
"""Filled by the feature modules imported in ``registrations()``."""


def registrations() -> list[Registration]:
    """Every feature's registration. A feature module appends to ``REGISTRATIONS`` when
    imported; add its import here."""
    from aios.workflows import (
        action_activities,  # noqa: F401
        approval_activities,  # noqa: F401
        rollout_activities,  # noqa: F401
    )

    return REGISTRATIONS


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register the features' search attributes; already registered ones are kept."""
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    wanted = {k.name: k for r in registrations() for k in r.search_attributes}
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = [key for name, key in wanted.items() if name not in listed.custom_attributes]
    await add_search_attributes(client, namespace, missing)


async def add_search_attributes(
    client: Client, namespace: str, keys: Sequence[SearchAttributeKey[Any]]
) -> None:
    """Register ``keys`` (which must not be registered yet)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

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
            return await Client.connect(settings.temporal_address, namespace=settings.namespace)
        except RuntimeError as error:
            logging.getLogger(__name__).warning("Temporal unreachable, retrying: %s", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


def build_worker(client: Client, settings: WorkerSettings) -> Worker:
    regs = registrations()
    if not regs:
        raise RuntimeError("no workflows are registered")
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[w for r in regs for w in r.workflows],
        activities=[a for r in regs for a in r.activities(settings)],
    )


async def serve(settings: WorkerSettings) -> None:
    client = await connect(settings)
    await ensure_search_attributes(client, settings.namespace)
    worker = build_worker(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with worker:
        logging.getLogger(__name__).info("worker on task queue %s", settings.task_queue)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aios-worker", description=__doc__)
    parser.add_argument("--task-queue", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(WorkerSettings.from_env(args.task_queue)))


if __name__ == "__main__":
    main()
