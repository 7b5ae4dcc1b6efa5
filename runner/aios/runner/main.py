"""``aios-intent-runner --config FILE``: decide one AutomationIntent's readings.

Reads Kafka and Temporal addresses from ``AIOS_KAFKA_BOOTSTRAP``, ``AIOS_TEMPORAL_ADDRESS``
(and ``AIOS_TEMPORAL_NAMESPACE``); serves Prometheus metrics on ``POD_IP:--metrics-port``;
exports spans where ``OTEL_EXPORTER_OTLP_ENDPOINT`` says (``aios.api.tracing``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

from prometheus_client import start_http_server

from aios.api import tracing
from aios.api.runner import RunnerConfig
from aios.connectors.temporal import connect
from aios.runner.deployments import DeploymentStatuses
from aios.runner.loop import Runner


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"aios-intent-runner: set {name}")
    return value


async def serve(config: RunnerConfig) -> None:
    bootstrap = _required("AIOS_KAFKA_BOOTSTRAP")
    # Lazy: decisions start without Temporal; hand-offs wait (paused) until it answers.
    temporal = await connect(
        _required("AIOS_TEMPORAL_ADDRESS"),
        os.environ.get("AIOS_TEMPORAL_NAMESPACE", "default"),
        lazy=True,
    )
    statuses = DeploymentStatuses(
        config.intent.namespace, {m.model_deployment for m in config.spec.models}
    ).start()
    await asyncio.to_thread(statuses.wait_synced, 30)
    pod = os.environ.get("POD_NAME") or socket.gethostname()
    runner = Runner(config, bootstrap, temporal, pod, statuses)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await runner.run(stop)
    finally:
        statuses.stop()
        tracing.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aios-intent-runner", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="RunnerConfig JSON file.")
    parser.add_argument("--metrics-port", type=int, default=9102)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format='{"time":"%(asctime)s","level":"%(levelname)s",'
        '"logger":"%(name)s","message":"%(message)s"}',
    )
    config = RunnerConfig.model_validate_json(args.config.read_text())
    tracing.configure("aios-intent-runner")
    start_http_server(args.metrics_port, addr=os.environ.get("POD_IP", "127.0.0.1"))
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
