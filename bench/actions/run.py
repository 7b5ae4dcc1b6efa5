"""Actions benchmark: aios's action workflow beside a bare Temporal workflow, in one run.

Both run on the same Temporal server, each with its own worker in this process, and both
post the same webhook to the same local receiver:

* **aios**: the ``ActionWorkflow`` started as the intent runner starts it (its
  ``ActionRequest``, the action id as workflow id), with everything an action does —
  the policy check in OPA, the rate-limit count in Temporal's visibility, the webhook with
  its ``Idempotency-Key``, the audit record and the lifecycle record on Kafka;
* **peer**: a bare temporalio client and worker running a one-activity workflow that posts
  the webhook (the least any durable action costs on this server).

Printed: completed workflows/s with ``--in-flight`` at a time (ratio aios / peer), then the
latency from the decision (the start request) to the action's start (its webhook arriving),
p50 / p99, with actions offered at a fixed rate: half what aios completed.

    .venv/bin/python bench/actions/run.py [--actions 400] [--in-flight 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bare import POST, BareAction
from temporalio import activity
from temporalio.worker import Worker

from aios.api.events import ActionRequest
from aios.connectors import kafka
from aios.connectors.temporal import connect
from aios.operator.handlers.policy import ensure_system
from aios.runner.loop import ACTION_WORKFLOW
from aios.stack.site import Site
from aios.workflows.settings import WorkerSettings
from aios.workflows.worker import build_worker, ensure_search_attributes

IDEMPOTENCY_HEADER = "Idempotency-Key"


class Receiver:
    """A local webhook target that notes when each action's request arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        arrived = self.arrived

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrived.setdefault(self.headers.get(IDEMPOTENCY_HEADER, ""), time.perf_counter())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/actions"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def peer_post(http: httpx.AsyncClient) -> Callable[[list[str]], Awaitable[None]]:
    """The peer's one activity: the webhook on one kept-alive client."""

    @activity.defn(name=POST)
    async def post(url_and_key: list[str]) -> None:
        url, key = url_and_key
        response = await http.post(url, content=b"{}", headers={IDEMPOTENCY_HEADER: key})
        response.raise_for_status()

    return post


def action_request(url: str) -> ActionRequest:
    """An action as the runner hands it off: a webhook acting on one decision."""
    key = f"bench.pm25.notify.{uuid.uuid4().hex[:24]}"
    now = datetime.now(UTC).isoformat()
    intent = {"namespace": "bench", "name": "pm25", "generation": 1}
    return ActionRequest.model_validate(
        {
            "actionId": key,
            "intent": intent,
            "action": {"name": "notify", "type": "webhook", "target": url},
            "decision": {
                "decisionId": f"bench/pm25/{key}",
                "eventId": key,
                "sensorId": f"s-{key[-3:]}",
                "intent": intent,
                "time": now,
                "decidedAt": now,
                "outcome": "act",
                "rule": "pm25-spike",
                "action": "notify",
                "actionId": key,
                "lineage": {"topic": "bench", "partition": 0, "offset": 0, "eventIds": [key]},
            },
            "actionsTopic": "bench.actions",
        }
    )


async def measure(
    count: int, in_flight: int, act: Callable[[int], Awaitable[str]], receiver: Receiver
) -> tuple[float, list[float]]:
    """Run ``count`` actions, ``in_flight`` at a time: completed/s and each one's latency
    from its start request to its webhook's arrival."""
    started: dict[str, float] = {}
    slots = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with slots:
            started_at = time.perf_counter()
            key = await act(i)
            started[key] = started_at

    begin = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    rate = count / (time.perf_counter() - begin)
    return rate, [receiver.arrived[k] - t for k, t in started.items()]


async def paced(
    count: int, rate: float, act: Callable[[int], Awaitable[str]], receiver: Receiver
) -> list[float]:
    """Start ``count`` actions at ``rate`` per second, whatever is still running: each
    one's latency from its start request to its webhook's arrival."""
    started: dict[str, float] = {}

    async def one(started_at: float, i: int) -> None:
        started[await act(i)] = started_at

    tasks = []
    begin = time.perf_counter()
    for i in range(count):
        await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(time.perf_counter(), i)))
    await asyncio.gather(*tasks)
    return [receiver.arrived[k] - t for k, t in started.items()]


async def run(site: Site, count: int, in_flight: int) -> None:
    endpoints = site.endpoints
    await ensure_system(endpoints.opa_url)
    client = await connect(endpoints.temporal_address)
    await ensure_search_attributes(client, "default")
    receiver = Receiver()
    settings = WorkerSettings(
        endpoints.temporal_address,
        task_queue=f"bench-aios-{uuid.uuid4().hex[:6]}",
        env={"AIOS_OPA_URL": endpoints.opa_url, "AIOS_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap},
    )
    kafka.ensure_topics(
        kafka.admin(endpoints.kafka_bootstrap), [kafka.TopicSpec("bench.actions", 3)]
    )

    async def aios_action(_: int) -> str:
        request = action_request(receiver.url)
        handle = await client.start_workflow(
            ACTION_WORKFLOW, request, id=request.action_id, task_queue=settings.task_queue
        )
        await handle.result()
        return request.action_id

    peer_queue = f"bench-bare-{uuid.uuid4().hex[:6]}"

    async def bare_action(_: int) -> str:
        key = uuid.uuid4().hex
        await client.execute_workflow(
            BareAction.run, [receiver.url, key], id=f"bare-{key}", task_queue=peer_queue
        )
        return key

    async with (
        httpx.AsyncClient(timeout=10) as http,
        Worker(client, task_queue=peer_queue, workflows=[BareAction], activities=[peer_post(http)]),
        build_worker(client, settings),
    ):
        await measure(20, in_flight, bare_action, receiver)  # warm-up
        await measure(20, in_flight, aios_action, receiver)
        peer, _ = await measure(count, in_flight, bare_action, receiver)
        ours, _ = await measure(count, in_flight, aios_action, receiver)
        rate = ours / 2
        peer_latency = await paced(count // 2, rate, bare_action, receiver)
        our_latency = await paced(count // 2, rate, aios_action, receiver)
    print(f"\nActions benchmark — {count} actions, {in_flight} in flight, one worker each")
    print(f"{'path':52} {'actions/s':>10} {'of peer':>8}")
    print(f"{'bare temporalio: one-activity workflow (the peer)':52} {peer:10.1f} {1:8.2f}")
    print(f"{'aios ActionWorkflow: policy, rate limit, audit':52} {ours:10.1f} {ours / peer:8.2f}")
    print(
        f"\nFrom the decision (start request) to the action (webhook arriving),"
        f" {rate:.1f}/s offered:"
    )
    for label, latencies in [("peer", peer_latency), ("aios", our_latency)]:
        ms = np.array(latencies) * 1000
        print(
            f"  {label}: p50 {np.percentile(ms, 50):7.1f} ms, p99 {np.percentile(ms, 99):7.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--actions", type=int, default=400)
    parser.add_argument("--in-flight", type=int, default=32)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="aios-bench-actions-"))
    site = Site(directory)
    try:
        site.start(only={"kafka", "temporal", "opa"})
        os.environ[kafka.EXTRA_CONFIG_ENV] = site.endpoints.kafka_config
        asyncio.run(run(site, args.actions, args.in_flight))
    finally:
        site.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
