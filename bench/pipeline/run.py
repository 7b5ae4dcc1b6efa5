"""Pipeline benchmark: the intent runner beside the physical limit, in one run, as ratios.

1. Throughput on the same pre-filled topic of readings, consumed from the start:
   * the limit — a bare confluent-kafka loop: consume a batch, produce one record per
     reading, commit the offsets (the least any consume → decide → publish must do);
   * the runner deciding with its fallback rules only (parse, decide, publish decisions
     and offsets in a Kafka transaction);
   * the runner deciding with the anomaly model on Triton (plus batched V2 inference).
2. Latency at a fixed offered load (``--rate``, 2,000 readings/s), the model on Triton:
   reading produced → decision committed and visible to a read_committed consumer,
   p50 / p99 / p99.9.
3. Scale-out: N runner replicas beside N bare loops sharing one consumer group on a topic of
   six partitions, each in a process of its own as each pod is (``--replicas 1 2 3``).
4. The cost of tracing: the runner with the model again, its spans exported to the site's
   Jaeger, for 1 % of readings traced (the chart's default) and for every one, against the
   same runner untraced (every reading carries an edge agent's ``traceparent`` throughout).
5. Kafka's own tools beside the bench's (``org.apache.kafka:kafka-tools``): the readings
   sent by ProducerPerformance, an independent load generator, then consumed by the bare
   loop and the runner; EndToEndLatency's produce → consume latency as the floor under the
   runner's.

The runner runs in this process (shadow mode: decisions, no action hand-off; actions are
measured by the tests). Kafka, Triton and Jaeger are the local site's, started here.

    .venv/bin/python bench/pipeline/run.py [--readings 20000] [--rate 2000] [--seconds 10]
                                           [--replicas 1 2 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as triton_http
from confluent_kafka import Consumer, Producer, TopicPartition
from temporalio.client import Client

from aios.api import tracing
from aios.api.automation_intent import AutomationIntentSpec
from aios.api.events import IntentRef
from aios.api.runner import RunnerConfig, RunnerTopics
from aios.connectors import kafka
from aios.runner.loop import Runner
from aios.stack.kafka_broker import java_client_properties, tool_command
from aios.stack.models import repository
from aios.stack.site import Site

MODEL, VERSION = "pm25-anomaly", "2024.11.2"
PARTITIONS = 3
SCALE_PARTITIONS = 6
NORMAL = [12.0, 20.0, 25.0, 45.0, 14.0, 65.0]
TRACED = 0.01
"""The share of readings the chart traces by default (``tracing.samplerRatio``)."""
METRICS = ["pm25", "pm10", "no2", "o3", "temperature", "humidity"]


def reading(i: int, rng: np.random.Generator) -> bytes:
    values = [v * float(rng.uniform(0.8, 1.2)) for v in NORMAL]
    if i % 50 == 0:
        values[0] *= 6
    return json.dumps(
        {
            "eventId": f"bench-{i}",
            "sensorId": f"s-{i % 500}",
            "time": datetime.now(UTC).isoformat(),
            "metrics": dict(zip(METRICS, values, strict=True)),
        }
    ).encode()


def fill(bootstrap: str, topic: str, count: int, traced: float = TRACED) -> None:
    """``count`` readings, each with the ``traceparent`` an edge agent gives it: sampled
    for the share ``traced`` of trace ids, as its ratio sampler decides."""
    producer = Producer(kafka.producer_config(bootstrap, **{"linger.ms": 20}))
    rng = np.random.default_rng(7)
    bound = int(traced * (1 << 64))
    for i in range(count):
        trace_id, span_id = secrets.randbits(128), secrets.randbits(64)
        flags = "01" if trace_id & ((1 << 64) - 1) < bound else "00"
        producer.produce(
            topic,
            reading(i, rng),
            key=f"s-{i % 500}".encode(),
            headers=[("traceparent", f"00-{trace_id:032x}-{span_id:016x}-{flags}".encode())],
        )
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)


def topics(bootstrap: str, *names: str) -> None:
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(n, PARTITIONS) for n in names])


def rate_after_start(bootstrap: str, group: str, topic: str, count: int) -> float:
    """Readings/s from the first committed batch to the last: group join and start-up
    are not the steady state being compared (asked by one ``kafka.member``)."""
    member = kafka.member(bootstrap, group)

    def consumed() -> int:
        return sum(max(tp.offset, 0) for tp in kafka.committed_by(member, [topic]))

    while (first := consumed()) == 0:
        time.sleep(0.02)
    started = time.perf_counter()
    while (now := consumed()) < count:
        time.sleep(0.05)
    member.close()
    return (now - first) / (time.perf_counter() - started)


def bare_loop(bootstrap: str, source: str, sink: str, count: int, batch: int) -> float:
    """The limit: consume → produce one record each → commit, nothing else."""
    group = f"bench-bare-{uuid.uuid4().hex[:6]}"
    consumer = Consumer(
        kafka.consumer_config(group, bootstrap, **{"isolation.level": "read_uncommitted"})
    )
    producer = Producer(kafka.producer_config(bootstrap))
    consumer.subscribe([source])
    started, done, first = 0.0, 0, 0
    while done < count:
        messages = [m for m in consumer.consume(batch, 0.1) if m.error() is None]
        if messages and not started:
            started, first = time.perf_counter(), len(messages)
        for m in messages:
            producer.produce(sink, m.value(), key=m.key())
        producer.flush(30)
        if messages:
            consumer.commit(offsets=last_offsets(messages), asynchronous=False)
        done += len(messages)
    elapsed = time.perf_counter() - started
    consumer.close()
    return (count - first) / elapsed  # from the first batch, like the runner


def spec(with_model: bool, batch: int) -> AutomationIntentSpec:
    body: dict[str, Any] = {
        "sources": [{"name": "readings", "kafkaTopic": "unused"}],
        "mode": "shadow",
        "fallback": [{"name": "static", "when": "reading.pm25 > 55", "action": "notify"}],
        "actions": [{"name": "notify", "type": "webhook", "target": "http://127.0.0.1:9/"}],
        "sla": {"maxBatchSize": batch, "maxLatencyMs": 400},
    }
    if with_model:
        body["models"] = [{"name": "anomaly", "modelDeployment": MODEL, "timeoutMs": 2000}]
        body["rules"] = [
            {
                "name": "spike",
                "when": "anomaly.score > 0.8",
                "minConfidence": 0.5,
                "action": "notify",
            }
        ]
    return AutomationIntentSpec.model_validate(body)


def runner_config(bootstrap: str, source: str, with_model: bool, batch: int) -> RunnerConfig:
    """An intent of its own, in shadow mode (it never hands actions off), its topics made."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    config = RunnerConfig(
        intent=IntentRef(namespace="bench", name=name, generation=1),
        spec=spec(with_model, batch),
        topics=RunnerTopics(
            sources=[source],
            decisions=f"{name}.decisions",
            actions=f"{name}.actions",
            dead_letters=f"{name}.dlq",
            state=f"{name}.state",
        ),
        consumer_group=f"{name}.runner",
        task_queue="bench",
        heartbeat_topic=f"{name}.status",
    )
    topics(bootstrap, config.topics.decisions, config.topics.dead_letters, config.heartbeat_topic)
    compacted = kafka.TopicSpec(config.topics.state, 1, {"cleanup.policy": "compact"})
    kafka.ensure_topics(kafka.admin(bootstrap), [compacted])
    return config


async def new_runner(
    site: Site,
    source: str,
    with_model: bool,
    batch: int,
    statuses: Callable[[str], dict[str, Any] | None],
) -> Runner:
    """A runner in this process."""
    bootstrap = site.endpoints.kafka_bootstrap
    config = runner_config(bootstrap, source, with_model, batch)
    temporal = await Client.connect("127.0.0.1:9", lazy=True)  # never connected in shadow mode
    return Runner(config, bootstrap, temporal, "bench", statuses)  # type: ignore[arg-type]


def no_models(_name: str) -> None:
    """The rollout status of a model, for a runner that calls none."""
    return None


def replica(config: str, bootstrap: str, pod: str, stop: EventType) -> None:
    """One runner replica in a process of its own, as each pod is, until ``stop``."""

    async def serve() -> None:
        temporal = await Client.connect("127.0.0.1:9", lazy=True)
        runner = Runner(
            RunnerConfig.model_validate_json(config),
            bootstrap,
            temporal,
            pod,
            no_models,  # type: ignore[arg-type]
        )
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=lambda: (stop.wait(), loop.call_soon_threadsafe(stopping.set)), daemon=True
        ).start()
        await runner.run(stopping)

    asyncio.run(serve())


def bare_member(
    bootstrap: str, source: str, sink: str, batch: int, group: str, stop: EventType
) -> None:
    """A bare consume → produce → commit member of ``group`` in a process of its own."""
    consumer = Consumer(
        kafka.consumer_config(group, bootstrap, **{"isolation.level": "read_uncommitted"})
    )
    producer = Producer(kafka.producer_config(bootstrap))
    consumer.subscribe([source])
    while not stop.is_set():
        messages = [m for m in consumer.consume(batch, 0.1) if m.error() is None]
        for m in messages:
            producer.produce(sink, m.value(), key=m.key())
        producer.flush(30)
        if messages:
            consumer.commit(offsets=last_offsets(messages), asynchronous=False)
    consumer.close()


def last_offsets(messages: list[Any]) -> list[TopicPartition]:
    """The next offset of each partition ``messages`` came from."""
    offsets: dict[tuple[str, int], int] = {}
    for m in messages:
        offsets[(m.topic(), m.partition())] = m.offset() + 1
    return [TopicPartition(t, p, o) for (t, p), o in offsets.items()]


def scale_out(bootstrap: str, readings: int, batch: int, replicas: list[int]) -> list[str]:
    """N runner processes beside N bare members, on a topic of ``SCALE_PARTITIONS``."""
    source = f"bench.scale-{uuid.uuid4().hex[:6]}"
    kafka.ensure_topics(
        kafka.admin(bootstrap),
        [
            kafka.TopicSpec(source, SCALE_PARTITIONS),
            kafka.TopicSpec(f"{source}.copy", SCALE_PARTITIONS),
        ],
    )
    fill(bootstrap, source, readings)
    spawn = multiprocessing.get_context("spawn")
    lines = []
    for n in replicas:
        rates = []
        for target in ("bare", "runner"):
            stop = spawn.Event()
            if target == "bare":
                group = f"bench-bare-{uuid.uuid4().hex[:6]}"
                args = [(bootstrap, source, f"{source}.copy", batch, group, stop)] * n
                processes = [spawn.Process(target=bare_member, args=a) for a in args]
            else:
                config = runner_config(bootstrap, source, False, batch)
                group = config.consumer_group
                text = config.model_dump_json(by_alias=True)
                processes = [
                    spawn.Process(target=replica, args=(text, bootstrap, f"bench-{i}", stop))
                    for i in range(n)
                ]
            for process in processes:
                process.start()
            rates.append(rate_after_start(bootstrap, group, source, readings))
            stop.set()
            for process in processes:
                process.join(60)
        bare, runner = rates
        lines.append(
            f"{n} replica(s) vs {n} bare member(s): {runner:8.0f} vs {bare:8.0f} readings/s,"
            f" {runner / bare:.2f}"
        )
    return lines


async def runner_rate(
    site: Site,
    source: str,
    count: int,
    with_model: bool,
    batch: int,
    statuses: Callable[[str], dict[str, Any] | None],
) -> float:
    runner = await new_runner(site, source, with_model, batch, statuses)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    rate = await asyncio.to_thread(
        rate_after_start,
        site.endpoints.kafka_bootstrap,
        runner.config.consumer_group,
        source,
        count,
    )
    stop.set()
    await task
    return rate


@dataclass(frozen=True)
class KafkaReference:
    """What Kafka's own tools measured on the site's broker, and the loops on their load."""

    produced: str
    """ProducerPerformance's summary: records/s, MB/s, latency percentiles."""
    bare: float
    runner: float
    end_to_end: tuple[float, float, float]
    """EndToEndLatency's p50, p99 and p99.9 (ms)."""


async def kafka_tools(
    site: Site, count: int, batch: int, statuses: Callable[[str], dict[str, Any] | None]
) -> KafkaReference:
    """Kafka's own tools (``kafka-tools``) beside the bench's: ProducerPerformance as an
    independent load generator (the same readings, sent from a payload file) that the bare
    loop and the runner then consume; EndToEndLatency (produce → consume, acks=all, one
    record at a time) as the floor under the runner's latency."""
    bootstrap = site.endpoints.kafka_bootstrap
    work = Path(tempfile.mkdtemp(prefix="aios-kafka-tools-"))
    try:
        client = work / "client.properties"
        settings = java_client_properties(json.loads(site.endpoints.kafka_config))
        client.write_text(f"{settings}bootstrap.servers={bootstrap}\n")
        payloads = work / "readings.txt"
        rng = np.random.default_rng(11)
        payloads.write_bytes(b"\n".join(reading(i, rng) for i in range(count)))
        source = "bench.kafka-tools"
        topics(bootstrap, source, f"{source}.passthrough")
        produced = tool(
            "org.apache.kafka.tools.ProducerPerformance",
            *("--topic", source, "--num-records", str(count), "--throughput", "-1"),
            *("--payload-file", str(payloads), "--producer.config", str(client)),
        )
        bare = await asyncio.to_thread(
            bare_loop, bootstrap, source, f"{source}.passthrough", count, batch
        )
        runner = await runner_rate(site, source, count, False, batch, statuses)
        single = "bench.end-to-end"
        kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(single, 1)])
        measured = tool(
            "org.apache.kafka.tools.EndToEndLatency",
            *(bootstrap, single, "2000", "all", str(len(reading(0, rng))), str(client)),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = re.search(r"50th = ([\d.]+), 99th = ([\d.]+), 99\.9th = ([\d.]+)", measured)
    if found is None:
        raise RuntimeError(f"EndToEndLatency printed no percentiles:\n{measured}")
    p50, p99, p999 = (float(v) for v in found.groups())
    return KafkaReference(produced.strip().splitlines()[-1], bare, runner, (p50, p99, p999))


def tool(main_class: str, *args: str) -> str:
    """Run one of Kafka's tools to its end; what it printed."""
    done = subprocess.run(
        tool_command(main_class, *args), capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{main_class} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


async def latency(
    site: Site,
    rate: float,
    seconds: float,
    batch: int,
    statuses: Callable[[str], dict[str, Any] | None],
) -> tuple[list[float], int]:
    """Offer ``rate`` readings/s for ``seconds``; latency to the committed decision (ms:
    p50, p99, p99.9) and how many decisions were seen."""
    bootstrap = site.endpoints.kafka_bootstrap
    source = f"bench-live-{uuid.uuid4().hex[:6]}"
    topics(bootstrap, source)
    runner = await new_runner(site, source, True, batch, statuses)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    watcher = Consumer(kafka.consumer_config(f"{runner.config.consumer_group}.watch", bootstrap))
    watcher.subscribe([runner.config.topics.decisions])
    await asyncio.sleep(3)  # assignment of both consumer groups
    sent: dict[str, float] = {}
    latencies: list[float] = []
    total = int(rate * seconds)
    done = asyncio.Event()

    def watch() -> None:
        deadline = None
        while len(latencies) < total:
            if done.is_set():
                deadline = deadline or time.perf_counter() + 30
                if time.perf_counter() > deadline:
                    return
            for m in watcher.consume(500, 0.1):
                value = m.value()
                if m.error() is None and value is not None:
                    event = json.loads(value)["eventId"]
                    if event in sent:
                        latencies.append(time.perf_counter() - sent[event])

    def offer() -> None:
        """Paced by sleeping, in 10 ms ticks, so the bench takes no CPU from the runner."""
        producer = Producer(kafka.producer_config(bootstrap, **{"linger.ms": 0}))
        rng = np.random.default_rng(3)
        begin = time.perf_counter()
        for i in range(total):
            pause = begin + i / rate - time.perf_counter()
            if pause > 0.01:
                time.sleep(pause)
            sent[f"bench-{i}"] = time.perf_counter()
            producer.produce(source, reading(i, rng), key=f"s-{i % 500}".encode())
            producer.poll(0)
        producer.flush(30)
        done.set()

    watching = asyncio.create_task(asyncio.to_thread(watch))
    await asyncio.to_thread(offer)
    await watching
    stop.set()
    await task
    watcher.close()
    ms = np.array(latencies) * 1000
    return [float(np.percentile(ms, q)) for q in (50, 99, 99.9)], len(latencies)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=2000, help="Readings/s offered (latency).")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 2, 3])
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="aios-bench-pipeline-"))
    site = Site(directory)
    site.start(only={"kafka", "triton", "jaeger"})
    os.environ[kafka.EXTRA_CONFIG_ENV] = site.endpoints.kafka_config  # the site's admin
    try:
        shutil.copytree(repository(MODEL, VERSION) / MODEL, directory / "models" / MODEL)
        host = site.endpoints.triton_http.removeprefix("http://")
        triton_http.InferenceServerClient(host).load_model(MODEL)
        status = {
            "stable": {
                "version": VERSION,
                "model": MODEL,
                "http": site.endpoints.triton_http,
                "grpc": site.endpoints.triton_grpc,
            },
            "canaryWeight": 0,
        }

        def statuses(_name: str) -> dict[str, Any]:
            return status

        bootstrap = site.endpoints.kafka_bootstrap
        source = "bench.readings"
        topics(bootstrap, source, "bench.passthrough")
        fill(bootstrap, source, args.readings)
        limit = await asyncio.to_thread(
            bare_loop, bootstrap, source, "bench.passthrough", args.readings, args.batch
        )
        rules = await runner_rate(site, source, args.readings, False, args.batch, statuses)
        model = await runner_rate(site, source, args.readings, True, args.batch, statuses)
        (p50, p99, p999), seen = await latency(site, args.rate, args.seconds, args.batch, statuses)
        scaled = await asyncio.to_thread(
            scale_out, bootstrap, args.readings, args.batch, args.replicas
        )
        reference = await kafka_tools(site, args.readings, args.batch, statuses)
        # Last: a tracer provider, once installed, stays for the process.
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = site.endpoints.otlp_url
        tracing.configure("aios-intent-runner")
        traced = await runner_rate(site, source, args.readings, True, args.batch, statuses)
        topics(bootstrap, "bench.traced")
        fill(bootstrap, "bench.traced", args.readings, traced=1.0)
        every = await runner_rate(site, "bench.traced", args.readings, True, args.batch, statuses)
        tracing.shutdown()
    finally:
        site.stop()
        shutil.rmtree(directory, ignore_errors=True)

    print(
        f"\nPipeline benchmark — {args.readings} readings, batches of {args.batch}, "
        f"{PARTITIONS} partitions, one process each\n"
    )
    print(f"{'path':58} {'readings/s':>12} {'of limit':>9}")
    for label, rate in [
        ("bare consume → produce → commit loop (the limit)", limit),
        ("intent runner, fallback rules only", rules),
        ("intent runner, anomaly model on Triton", model),
    ]:
        print(f"{label:58} {rate:12.0f} {rate / limit:9.2f}")
    print(f"\ntracing, the model on Triton, spans to the site's Jaeger:  {'of untraced':>12}")
    for label, rate in [
        (f"{TRACED:.0%} of readings traced (the chart's default)", traced),
        ("every reading traced", every),
    ]:
        print(f"  {label:56} {rate:12.0f} {rate / model:9.2f}")
    print(
        f"\nlatency at {args.rate:.0f} readings/s, the model on Triton, {seen} decisions: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, p99.9 {p999:.1f} ms"
    )
    if scaled:
        print(f"\nscale-out, rules only, {SCALE_PARTITIONS} partitions, one process each:")
        print("\n".join(f"  {line}" for line in scaled))
    print("\nKafka's own tools (kafka-tools), the same broker:")
    print(f"  ProducerPerformance, {args.readings} readings: {reference.produced}")
    for label, rate in [
        ("on its load: bare loop", reference.bare),
        ("on its load: intent runner, fallback rules only", reference.runner),
    ]:
        print(f"  {label:56} {rate:12.0f} {rate / reference.bare:9.2f}")
    low, high, highest = reference.end_to_end
    print(
        f"  EndToEndLatency, 2,000 readings one at a time, acks=all: p50 {low:.1f} ms, "
        f"p99 {high:.1f} ms, p99.9 {highest:.1f} ms (the runner's above: the floor under it)"
    )


if __name__ == "__main__":
    asyncio.run(main())
