"""Governance benchmark, side by side, printed as ratios.

1. Runtime authorisation: ``aios.connectors.opa.authorize_action`` (opa-python-client,
   one session per call, decision ids on) vs the floor, a raw POST of the same input to
   the same OPA on one kept-alive aiohttp session. Same policy, same input.
2. Audit verification: ``aios.connectors.audit.verify`` (canonical form + SHA-256 +
   links) vs only parsing the same records with ``json.loads`` (the physical floor of
   reading them).
3. The appender chaining events vs a plain transactional copy of the same events
   (consume → produce → commit offsets, no hashing), on the same broker: the one at
   ``AIOS_KAFKA_BOOTSTRAP`` (``eval "$(aiosctl env)"``), else a local site started here.

OPA runs here as a host process on loopback (``aios.stack.components.OPA``).

    .venv/bin/python bench/policy/run.py [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from confluent_kafka import TopicPartition

from aios.api import Policy
from aios.connectors import audit, kafka, opa
from aios.operator.handlers.policy import library, load
from aios.operator.reconcile.policy import load_plan
from aios.stack.components import OPA
from aios.stack.process import ManagedProcess, free_port
from aios.stack.site import Site, http_ok

ACTION: dict[str, Any] = {
    "kind": "Action",
    "namespace": "city",
    "intent": {"name": "pm25-alerting", "labels": {}, "dataPolicy": {"personalData": False}},
    "action": {
        "name": "dispatch-street-cleaning",
        "type": "mqtt",
        "target": "city/district-7/street-cleaning/dispatch",
        "idempotencyKey": "bench",
        "approvalRequired": True,
    },
    "decision": {"rule": "pm25-sustained", "fallback": False, "model": None, "lineage": {}},
    "approver": None,
    "recentActuations": 0,
    "time": "2026-11-27T10:00:00Z",
}


def report(title: str, ours: tuple[str, float], peer: tuple[str, float], unit: str) -> None:
    """``ours`` and ``peer`` in ``unit`` (lower is better)."""
    print(f"{title}")
    print(f"  {ours[0]:<44} {ours[1]:10.3f} {unit}")
    print(f"  {peer[0]:<44} {peer[1]:10.3f} {unit}")
    print(f"  ratio (aios / peer): {ours[1] / peer[1]:.2f}x")


async def authorisation(url: str, requests: int) -> None:
    policy = Policy.model_validate(
        {"metadata": {"name": "ana"}, "spec": {"module": {"name": "actuation-needs-approval"}}}
    )
    await load(url, load_plan("city", "ana", policy, library()), opa.LoadedModules())
    ours = []
    for _ in range(requests):
        start = time.perf_counter()
        await opa.authorize_action(url, ACTION)
        ours.append(time.perf_counter() - start)
    await opa.close_clients()
    peer = []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            start = time.perf_counter()
            async with session.post(
                f"{url}/v1/data/aios/system/decision", json={"input": ACTION}
            ) as response:
                await response.json()
            peer.append(time.perf_counter() - start)
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        report(
            f"authorise one action, {name} latency ({requests} sequential requests)",
            ("authorize_action", quantile(ours, q) * 1000),
            ("raw POST on a kept-alive session", quantile(peer, q) * 1000),
            "ms",
        )


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1]


def chain_of(n: int) -> list[str]:
    raws, head = [], audit.GENESIS
    for seq in range(n):
        event = audit.event("action-step", f"action/{seq}", {"step": "executed", "seq": seq})
        record = audit.chain(event, seq, head, {"topic": "e", "partition": 0, "offset": seq})
        raws.append(audit.canonical(record))
        head = record["hash"]
    return raws


def verification(n: int) -> None:
    raws = chain_of(n)
    start = time.perf_counter()
    assert audit.verify(raws).ok
    ours = time.perf_counter() - start
    start = time.perf_counter()
    for raw in raws:
        json.loads(raw)
    peer = time.perf_counter() - start
    report(
        f"verify {n} records (seconds)",
        ("audit.verify (hash + links)", ours),
        ("json.loads only", peer),
        "s",
    )


def appending(bootstrap: str, n: int) -> None:
    suffix = uuid.uuid4().hex[:8]
    events, log, copy = f"bench.events.{suffix}", f"bench.log.{suffix}", f"bench.copy.{suffix}"
    kafka.ensure_topics(kafka.admin(bootstrap), [audit.events_topic_spec(events)])
    producer = kafka.producer(bootstrap)
    for i in range(n):
        document = audit.event("action-step", f"action/{i}", {"step": "executed", "i": i})
        producer.produce(events, audit.canonical(document).encode(), document["eventId"].encode())
    producer.flush(30)
    appender = audit.Appender(bootstrap, events, log).open()
    start = time.perf_counter()
    chained = 0
    while chained < n:
        chained += appender.run_once(1.0)
    ours = time.perf_counter() - start
    appender.close()

    kafka.ensure_topics(kafka.admin(bootstrap), [audit.log_topic_spec(copy)])
    copier = kafka.producer(bootstrap, **{"transactional.id": f"bench-copy-{suffix}"})
    copier.init_transactions(30)
    consumer = kafka.consumer(f"bench-copy-{suffix}", bootstrap)
    consumer.assign([TopicPartition(events, 0, 0)])
    start = time.perf_counter()
    copied = 0
    while copied < n:
        batch = [m for m in consumer.consume(500, 1.0) if m.error() is None]
        if not batch:
            continue
        copier.begin_transaction()
        for message in batch:
            copier.produce(copy, message.value())
        copier.send_offsets_to_transaction(
            [TopicPartition(events, 0, (batch[-1].offset() or 0) + 1)],
            consumer.consumer_group_metadata(),
        )
        copier.commit_transaction()
        copied += len(batch)
    peer = time.perf_counter() - start
    consumer.close()
    report(
        f"append {n} events to the log (seconds)",
        ("Appender (chain, hash, transaction)", ours),
        ("transactional copy, no hashing", peer),
        "s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--records", type=int, default=20000)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = ManagedProcess(
            "opa",
            [
                str(OPA.binary()),
                "run",
                "--server",
                f"--addr=127.0.0.1:{port}",
                "--set=decision_logs.console=true",
            ],
            Path(tmp) / "opa.log",
        ).start()
        url = f"http://127.0.0.1:{port}"
        try:
            server.wait_healthy(lambda: http_ok(f"{url}/health"), 30)
            asyncio.run(authorisation(url, args.requests))
        finally:
            server.stop()
    verification(args.records)
    bootstrap = os.environ.get(kafka.BOOTSTRAP_ENV)
    if bootstrap:
        appending(bootstrap, args.records // 4)
        return
    with tempfile.TemporaryDirectory() as tmp:
        site = Site(Path(tmp))
        try:
            endpoints = site.start(only={"kafka"})
            os.environ[kafka.EXTRA_CONFIG_ENV] = endpoints.kafka_config  # the site's admin
            appending(endpoints.kafka_bootstrap, args.records // 4)
        finally:
            site.stop()


if __name__ == "__main__":
    main()
