"""The aios operator's entry point: ``aios-operator`` (or ``python -m aios.operator.main``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
from typing import Any

import kopf

from aios.operator import metrics

# Importing a handler module registers its kind with kopf.
from aios.operator.handlers import (  # noqa: F401
    admission,
    automation_intent,
    edge_gateway,
    model_deployment,
    policy,
)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Settings tuned for thousands of objects per operator (see DESIGN.md, Scale)."""
    settings.posting.reporting_component = "aios-operator"
    # Kubernetes Events only for warnings and errors: an Event per handler success (every
    # timer run of every object) would load the API server more than the objects do.
    settings.posting.level = logging.WARNING
    settings.persistence.finalizer = "aios.dev/operator"
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf")
    settings.batching.batch_window = 0.01  # kopf's 100 ms default delays every event
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10


def peering_priority(value: str) -> int:
    """An integer, or ``random``: a draw from [1, 2**31) per process."""
    return random.randrange(1, 2**31) if value == "random" else int(value)


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
        "--peering",
        default=None,
        help="Name of the kopf peering object shared by this shard's replicas; "
        "without it the operator runs standalone.",
    )
    parser.add_argument(
        "--priority",
        type=peering_priority,
        default=None,
        help="This replica's peering priority: the highest live one acts, the others wait. "
        "'random' draws one, so replicas of one Deployment never tie (kopf pauses every "
        "replica of a tie).",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.FULL)
    if args.metrics_port is not None:
        metrics.serve(args.liveness_host, args.metrics_port)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=f"http://{args.liveness_host}:{args.liveness_port}/healthz",
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority,
        )
    )


if __name__ == "__main__":
    main()
