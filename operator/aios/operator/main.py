"""The aios operator's entry point: ``aios-operator`` (or ``python -m aios.operator.main``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client

from aios.api import KINDS, tracing
from aios.connectors.kube import api_client
from aios.operator import metrics

# Importing a handler module registers its kind with kopf.
from aios.operator.handlers import (  # noqa: F401
    admission,
    approval,
    automation_intent,
    edge_gateway,
    manual_action,
    model_deployment,
    policy,
)
from aios.operator.runtime.children import ADD_ON_DEFINITIONS, HELD_KINDS
from aios.operator.runtime.heap import trim_forever
from aios.operator.runtime.leadership import Leadership
from aios.operator.runtime.queue import DEFAULT_WORKERS
from aios.operator.runtime.runtime import Runtime
from aios.operator.runtime.supervisor import Supervisor
from aios.operator.runtime.watching import Watching, watch_targets
from aios.operator.settings import OperatorSettings, WebhookSettings


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf's part: the webhooks, start-up and clean-up, and its watches of definitions
    and namespaces (aios's objects come through the operator's own, ``runtime.watching``)."""
    settings.posting.reporting_component = "aios-operator"
    settings.posting.level = logging.WARNING  # Events only for warnings and errors
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aios-operator", description=__doc__)
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="Watch only these namespaces (repeatable; globs allowed). Default: the whole cluster.",
    )
    parser.add_argument(
        "--liveness-port", type=int, default=8080, help="Serve /healthz on 127.0.0.1 at this port."
    )
    parser.add_argument("--liveness-host", default="127.0.0.1")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Serve Prometheus /metrics at this port (on --liveness-host); default: off.",
    )
    parser.add_argument(
        "--lease",
        default=None,
        help="Name of the Lease (in $POD_NAMESPACE) this shard's replicas elect a leader "
        "with: only its holder reconciles, the others keep their caches warm and serve the "
        "admission webhook. Without it the operator acts alone.",
    )
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="Concurrent reconciles per kind."
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


KINDS_RECONCILED = len(KINDS)
KINDS_WATCHED = KINDS_RECONCILED + 1 + len(HELD_KINDS)
"""aios's kinds, the ModelRollouts and the children held (workloads, Services): watched in
each namespace watched."""


def leadership(name: str | None, namespace: str, api: client.ApiClient) -> Leadership | None:
    if name is None:
        return None
    identity = os.environ.get("POD_NAME") or os.uname().nodename
    return Leadership(client.CoordinationV1Api(api), namespace, name, identity)


async def run(args: argparse.Namespace) -> int:
    """The operator until it is stopped (0), or until it loses the lead or a background
    task fails (1: it comes back, as a standby, with nothing in flight)."""
    # Blocking client calls run on threads: as many as reconciles may run at once, each
    # with its own connection (the defaults, a few of each, serialise them).
    threads = args.workers * KINDS_RECONCILED
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads))
    api = api_client(connections=threads)
    webhook = WebhookSettings.from_env()
    admission.register(webhook)
    approval.register_webhooks(webhook)
    manual_action.register_webhooks(webhook)
    settings = OperatorSettings.from_env()
    # The watches on clients of their own: each holds a connection for its life.
    watches = len(watch_targets(args.namespace)) * KINDS_WATCHED + len(ADD_ON_DEFINITIONS)
    watching = Watching(api_client(connections=watches), args.namespace)
    runtime = Runtime(
        settings,
        webhook,
        api,
        leadership(args.lease, settings.namespace, api),
        args.workers,
        watching,
    )
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ready = asyncio.Event()
    background = Supervisor(stop)
    background.start("the watches' start", watch_once_ready(watching, ready))
    background.start("the heap trim", trim_forever())
    if runtime.leadership is not None:
        background.start("the lease's renewal", runtime.leadership.run())
        background.start("the lead's hand-over", act_once_leading(runtime, stop))
    try:
        await kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=f"http://{args.liveness_host}:{args.liveness_port}/healthz",
            standalone=True,
            memo=kopf.Memo(runtime=runtime),
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        background.cancel()
        if runtime.leadership is not None:  # first: a standby waits for it
            await runtime.leadership.release()
        await watching.stop()
    lost = runtime.leadership is not None and runtime.leadership.lost.is_set()
    return 1 if lost or background.failed else 0


async def watch_once_ready(watching: Watching, ready: asyncio.Event) -> None:
    """The watches start once every start-up handler has run (each kind's controller, the
    state its reconciles use), as kopf's own would."""
    await ready.wait()
    watching.start()


async def act_once_leading(runtime: Runtime, stop: asyncio.Future[None]) -> None:
    """Once the lead is ours, every object is looked at (what the standby saw and left);
    when it is lost, the operator stops."""
    assert runtime.leadership is not None
    await runtime.leadership.acquired.wait()
    for controller in runtime.controllers.values():
        controller.tick()
    await runtime.leadership.lost.wait()
    if not stop.done():
        stop.set_result(None)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.FULL)
    if not args.verbose:
        # A line per watch event ("Handler ... succeeded.") and per admission review (the
        # webhook's access log): two or three per object a city creates, and measured at
        # 3-4 % of the operator's time at 10,000 objects. Warnings and errors still show.
        for chatty in ("kopf.objects", "aiohttp.access"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    if args.metrics_port is not None:
        metrics.serve(args.liveness_host, args.metrics_port)
    tracing.configure("aios-operator")
    try:
        code = asyncio.run(run(args))
    finally:
        tracing.shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
