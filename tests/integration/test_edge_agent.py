"""The edge agent as a real process against the real Kafka and Mosquitto of the site.

The agent runs as ``aios-edge`` (the console script), configured only through the config
topic; readings are checked where they end up: on the Kafka sink topic.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from support import crash_operator, wait_for

from aios.api import EdgeGateway
from aios.api.events import Reading
from aios.connectors import kafka
from aios.edge.protocol import (
    CONFIG_PARTITIONS,
    CONFIG_TOPIC,
    CONFIG_TOPIC_CONFIG,
    STATUS_PARTITIONS,
    STATUS_TOPIC,
    STATUS_TOPIC_CONFIG,
    AgentConfig,
    Heartbeat,
    config_partition,
)
from aios.edge.segments import SegmentLog
from aios.operator.reconcile.edge_gateway import compile_config
from aios.stack.kafka_broker import kafka_ready
from aios.stack.process import ManagedProcess, free_port
from aios.stack.site import Site, http_ok

AGENT = Path(sys.executable).parent / "aios-edge"
SENSORS = [f"aq-{i:02d}" for i in range(20)]


# -- helpers ---------------------------------------------------------------------------
def ensure_edge_topics(bootstrap: str, sink: str) -> None:
    kafka.ensure_topics(
        kafka.admin(bootstrap),
        [
            kafka.TopicSpec(CONFIG_TOPIC, CONFIG_PARTITIONS, CONFIG_TOPIC_CONFIG),
            kafka.TopicSpec(STATUS_TOPIC, STATUS_PARTITIONS, STATUS_TOPIC_CONFIG),
            kafka.TopicSpec(sink, 3),
        ],
    )


def gateway_spec(
    name: str,
    sink: str,
    filters: list[dict],
    sensors: list[dict] | None = None,
    generation: int = 1,
    **buffer: Any,
) -> EdgeGateway:
    return EdgeGateway.model_validate(
        {
            "metadata": {"name": name, "namespace": "edge-test", "generation": generation},
            "spec": {
                "site": "district-9",
                "sensors": sensors or [],
                "filters": filters,
                "sink": {"kafkaTopic": sink},
                "buffer": buffer,
            },
        }
    )


def publish_config(bootstrap: str, gateway: EdgeGateway) -> None:
    """What the operator does for a gateway, done by the test for agent-only tests."""
    config = compile_config(gateway, heartbeat_seconds=1)
    producer = kafka.producer(bootstrap)
    producer.produce(
        CONFIG_TOPIC,
        key=config.gateway.encode(),
        value=config.to_bytes(),
        partition=config_partition(config.gateway, CONFIG_PARTITIONS),
    )
    assert producer.flush(30) == 0


def configured(
    bootstrap: str,
    kind: str,
    unique: str,
    filters: list[dict],
    sensors: list[dict] | None = None,
    **buffer: Any,
) -> tuple[str, str]:
    """Topics and a published config for a fresh gateway: its (name, sink topic)."""
    name, sink = f"{kind}-{unique}", f"edge.{kind}.{unique}"
    ensure_edge_topics(bootstrap, sink)
    publish_config(bootstrap, gateway_spec(name, sink, filters, sensors, **buffer))
    return name, sink


def read_topic(bootstrap: str, topic: str, until: int, timeout: float) -> list[Any]:
    """Every record of ``topic`` from the start, once ``until`` arrived (or the timeout)."""
    consumer = Consumer(
        kafka.client_config(
            bootstrap, **{"group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(records) < until:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            records.append(message)
    # anything beyond ``until`` (a duplicate) must show up too
    extra_deadline = time.monotonic() + 2
    while time.monotonic() < extra_deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            records.append(message)
    consumer.close()
    return records


def readings(records: list[Any]) -> list[Reading]:
    return [Reading.model_validate_json(r.value()) for r in records]


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


class Agent:
    """``aios-edge`` as the test's own process: started, killed, restarted."""

    def __init__(
        self,
        directory: Path,
        gateway: str,
        bootstrap: str,
        *extra: str,
        disk_bytes: int = 0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``disk_bytes``: the data directory is a disk of that size (a tmpfs in a mount
        namespace of the agent's own: the host's mounts stay as they are); ``env``: laid
        over the test's environment."""
        self.directory, self.data = directory, directory / "data"
        self.env = env
        self.http_port, self.metrics_port = free_port(), free_port()
        self.argv = [
            str(AGENT),
            f"--gateway={gateway}",
            f"--bootstrap={bootstrap}",
            f"--data-dir={self.data}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            "--heartbeat-seconds=1",
            *extra,
        ]
        if disk_bytes:
            self.data.mkdir(parents=True)
            mount = f"mount -t tmpfs -o size={disk_bytes} aios-edge-disk {self.data}"
            command = f"{mount} && exec {shlex.join(self.argv)}"
            self.argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", command]
        self.process: ManagedProcess | None = None

    @property
    def disk(self) -> Path:
        """The data directory as the agent sees it (its own disk, when it has one)."""
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/root") / self.data.relative_to("/")

    def start(self) -> Agent:
        self.process = ManagedProcess(
            "aios-edge", self.argv, self.directory / "agent.log", env=self.env
        ).start()
        self.process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{self.http_port}/healthz"), 30)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        assert self.process is not None and self.process.popen is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.popen.wait(10)

    def post(
        self, payload: bytes | list[dict] | dict, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict]:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/readings",
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def log(self) -> str:
        return (self.directory / "agent.log").read_text()


def applied(agent: Agent) -> Agent:
    """``agent`` once it applied its gateway's first generation."""
    wait_applied(agent, 1)
    return agent


def post_acknowledged(agent: Agent, readings: list[dict]) -> None:
    """``readings`` posted a hundred at a time, each batch acknowledged."""
    for i in range(0, len(readings), 100):
        assert agent.post(readings[i : i + 100])[0] == 202


def latest_heartbeat(bootstrap: str, gateway: str, timeout: float = 20) -> Heartbeat:
    records = read_topic(bootstrap, STATUS_TOPIC, 10**9, timeout=3)
    mine = [r for r in records if r.key() == gateway.encode()]
    assert mine, f"no heartbeat from {gateway}"
    return Heartbeat.model_validate_json(mine[-1].value())


def wait_applied(agent: Agent, generation: int) -> None:
    def applied() -> bool:
        try:
            return f"aios_edge_config_generation {float(generation)}" in agent.metrics()
        except urllib.error.URLError:  # the agent is not listening yet
            return False

    wait_for(applied, 30, what=lambda: f"generation {generation} applied\n{agent.log()[-3000:]}")


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Any]:
    agents: list[Agent] = []

    def make(
        name: str,
        bootstrap: str,
        *extra: str,
        disk_bytes: int = 0,
        env: Mapping[str, str] | None = None,
    ) -> Agent:
        agent = Agent(
            tmp_path / name, f"edge-test/{name}", bootstrap, *extra, disk_bytes=disk_bytes, env=env
        )
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()


PLAIN = [{"validate": {"ranges": {"pm25": {"min": 0, "max": 1000}}, "maxAgeSeconds": 86400}}]


def stream(count: int, start: float) -> list[dict]:
    """``count`` readings round-robin over the sensors, one second apart per sensor."""
    return [
        {
            "sensorId": SENSORS[i % len(SENSORS)],
            "time": stamp(start + i // len(SENSORS)),
            "metrics": {"pm25": float(i % 97)},
        }
        for i in range(count)
    ]


def assert_exactly_once_in_order(
    sent: list[dict], got: list[Reading], agent: Agent | None = None
) -> None:
    """``agent``: whose log a failure shows. A duplicate's eventIds tell a record sent
    twice (the same id) from a reading ingested twice (two ids)."""
    keys: dict[tuple[str, float], list[str]] = defaultdict(list)
    for reading in got:
        keys[reading.sensor_id, reading.time.timestamp()].append(reading.event_id)
    duplicates = {key: ids for key, ids in keys.items() if len(ids) > 1}
    assert not duplicates, (
        f"{len(duplicates)} readings arrived twice, from {sorted({s for s, _ in duplicates})}; "
        f"e.g. (reading: eventIds) {list(duplicates.items())[:3]}"
        + (f"\nthe agent's log:\n{agent.log()[-4000:]}" if agent is not None else "")
    )
    expected = {(s["sensorId"], datetime.fromisoformat(s["time"]).timestamp()) for s in sent}
    missing = expected - set(keys)
    assert not missing, (
        f"{len(missing)} accepted readings never arrived, e.g. {sorted(missing)[:3]}"
    )
    per_sensor: dict[str, list[float]] = defaultdict(list)
    for reading in got:
        per_sensor[reading.sensor_id].append(reading.time.timestamp())
    for sensor, times in per_sensor.items():
        assert times == sorted(times), f"{sensor} out of order"


# -- the tests -------------------------------------------------------------------------
def test_bad_input_is_counted_and_good_readings_around_it_go_through(
    site: Site, agent_factory: Any, unique: str
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    sensors = [{"id": s, "metrics": ["pm25", "temperature"]} for s in SENSORS[:3]]
    name, sink = configured(bootstrap, "bad", unique, PLAIN, sensors)
    agent = applied(agent_factory(name, bootstrap).start())
    now = time.time()
    good = [
        {"sensorId": "aq-00", "time": stamp(now - 5), "metrics": {"pm25": 10.0}},
        {
            "sensorId": "aq-01",
            "time": stamp(now - 4),
            "metrics": {"temperature": 50},
            "units": {"temperature": "F"},
        },
    ]
    assert agent.post(b'{"sensorId": "aq-00", "time": ')[0] == 202  # malformed, quarantined
    status, body = agent.post(
        [
            good[0],
            {"sensorId": "aq-00", "time": stamp(now - 3), "metrics": {"pm25": float("nan")}},
            {"sensorId": "aq-00", "time": stamp(now - 3), "metrics": {"pm25": float("inf")}},
            {
                "sensorId": "aq-00",
                "time": stamp(now - 3),
                "metrics": {"pm25": 1},
                "units": {"pm25": "ppm-ish"},
            },
            good[1],
            {"sensorId": "aq-02", "time": stamp(now + 3600), "metrics": {"pm25": 5.0}},
            {"sensorId": "aq-02", "time": stamp(now - 10 * 86400), "metrics": {"pm25": 5.0}},
            {"sensorId": "aq-99", "time": stamp(now - 2), "metrics": {"pm25": 5.0}},
            dict(good[0]),  # a duplicate
        ]
    )
    assert status == 202 and body["accepted"] == 6
    assert sorted(r["reason"] for r in body["rejected"]) == [
        "non_finite",
        "non_finite",
        "wrong_unit",
    ]
    big = json.dumps([good[0]] * 10_000).encode()
    assert agent.post(big)[0] == 413
    got = readings(read_topic(bootstrap, sink, 2, timeout=30))
    assert [(r.sensor_id, r.metrics) for r in got] == [
        ("aq-00", {"pm25": 10.0}),
        ("aq-01", {"temperature": pytest.approx(10.0)}),
    ]
    expected = {
        "malformed_json": 1,
        "non_finite": 2,
        "wrong_unit": 1,
        "oversized": 1,
        "future_timestamp": 1,
        "stale_timestamp": 1,
        "unknown_sensor": 1,
        "duplicate": 1,
    }

    def counted() -> bool:
        beat = latest_heartbeat(bootstrap, f"edge-test/{name}")
        return beat.reasons == expected and beat.forwarded == 2

    wait_for(counted, 30, what=f"the heartbeat to count {expected}")
    assert agent.process is not None and agent.process.running()
    metrics = agent.metrics()
    assert 'aios_edge_readings_total{outcome="quarantined",reason="non_finite"} 2.0' in metrics
    assert 'aios_edge_readings_total{outcome="forwarded",reason=""} 2.0' in metrics
    quarantine = SegmentLog(agent.data / "quarantine", 8 << 20)
    entries = [json.loads(e) for e in quarantine.read(0, 100)[1]]
    assert {e["reason"] for e in entries} >= {"malformed_json", "unknown_sensor", "oversized"}


def test_mqtt_readings_are_forwarded_with_trace_context(
    site: Site, agent_factory: Any, unique: str
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    name, sink = configured(bootstrap, "mqtt", unique, PLAIN)
    topic = f"sensors/{unique}"
    agent = agent_factory(
        name, bootstrap, f"--mqtt={site.endpoints.mqtt_url}", f"--mqtt-topic={topic}/#"
    ).start()
    wait_applied(agent, 1)
    host, port = site.endpoints.mqtt_url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sender-{unique}")
    client.connect(host, int(port))
    client.loop_start()
    wait_for(lambda: "mqtt subscribed" in agent.log(), 20, what="the agent's MQTT subscription")
    sent = stream(200, time.time() - 300)
    for reading in sent:
        client.publish(
            f"{topic}/{reading['sensorId']}", json.dumps(reading), qos=1
        ).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    records = read_topic(bootstrap, sink, len(sent), timeout=60)
    assert_exactly_once_in_order(sent, readings(records))
    for record in records:
        assert record.key() == json.loads(record.value())["sensorId"].encode()
        headers = dict(record.headers() or [])
        assert headers["traceparent"].decode().startswith("00-")


@pytest.mark.fault("Kafka down 60 s (the edge buffers)")
def test_kafka_down_for_a_minute_loses_and_duplicates_nothing(
    tmp_path: Path, agent_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Site(tmp_path / "kafka-only")
    broker.start(only=["kafka"])  # a site of its own: this test stops and restarts its Kafka
    monkeypatch.setenv(kafka.EXTRA_CONFIG_ENV, broker.endpoints.kafka_config)  # and its users
    try:
        bootstrap = broker.endpoints.kafka_bootstrap
        name, sink = configured(bootstrap, "outage", unique, PLAIN)
        agent = applied(agent_factory(name, bootstrap).start())
        sent = stream(10_000, time.time() - 3600)
        post_acknowledged(agent, sent[:3000])
        kafka_process = broker.processes["kafka"]
        kafka_process.stop()  # the broker goes away mid-stream
        stopped = time.monotonic()
        for i in range(3000, 10_000, 100):  # the agent keeps accepting
            status, body = agent.post(sent[i : i + 100])
            assert status == 202 and body["accepted"] == 100
        wait_for(
            lambda: float(_gauge(agent.metrics(), "aios_edge_buffer_records")) > 0,
            10,
            what="readings waiting in the buffer",
        )
        time.sleep(max(0.0, 60 - (time.monotonic() - stopped)))
        kafka_process.start()  # the same command, as the site started it
        admin = json.loads(broker.endpoints.kafka_config)
        kafka_process.wait_healthy(lambda: kafka_ready(bootstrap, admin), 120)
        records = read_topic(bootstrap, sink, len(sent), timeout=180)
        assert_exactly_once_in_order(sent, readings(records))
        assert len(records) == len(sent)
    finally:
        broker.stop()


def _gauge(metrics: str, name: str) -> str:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return line.split()[1]
    raise AssertionError(f"{name} not exported")


def fill(disk: Path) -> Path:
    """Write a file on ``disk`` until the disk has no byte left; returns the file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    block = 1 << 20
    try:
        while block:
            try:
                if os.write(fd, b"\0" * block) < block:
                    block //= 2
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                block //= 2
    finally:
        os.close(fd)
    return filler


@pytest.mark.fault("edge buffer's disk full")
def test_a_full_disk_refuses_readings_saying_why_and_loses_none_it_accepted(
    site: Site, agent_factory: Any, unique: str
) -> None:
    """Readings accepted while the sink is away wait on the disk; the disk fills up (another
    program's file); new readings are refused with the reason, and the agent keeps going.
    Once there is room again, every accepted reading arrives once, in order."""
    bootstrap = site.endpoints.kafka_bootstrap
    name, sink = f"disk-{unique}", f"edge.disk.{unique}"
    ensure_edge_topics(bootstrap, f"edge.other.{unique}")  # not the sink: it comes later
    publish_config(bootstrap, gateway_spec(name, sink, PLAIN))
    agent = agent_factory(name, bootstrap, disk_bytes=24 << 20).start()
    wait_applied(agent, 1)
    sent = stream(3000, time.time() - 3600)
    post_acknowledged(agent, sent[:1000])
    wait_for(lambda: "will resend" in agent.log(), 90, what="a failed delivery to the sink")

    filler = fill(agent.disk)
    status, body = agent.post(sent[1000:1100])
    assert status == 503 and body["error"].startswith("disk full, retry later"), body
    assert 'aios_edge_readings_total{outcome="dropped",reason="disk_full"} 100.0' in (
        agent.metrics()
    )
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(sink, 3)])
    wait_for(
        lambda: float(_gauge(agent.metrics(), "aios_edge_buffer_records")) == 0,
        90,
        what="the readings accepted before the disk filled delivered",
    )
    assert agent.post(sent[1000:1100])[0] == 503, "still no room for new readings"
    assert agent.process is not None and agent.process.running()

    filler.unlink()
    wait_for(lambda: agent.post(sent[1000:1100])[0] == 202, 30, what="readings accepted again")
    post_acknowledged(agent, sent[1100:])
    records = read_topic(bootstrap, sink, len(sent), timeout=120)
    assert_exactly_once_in_order(sent, readings(records))
    assert len(records) == len(sent)


@pytest.mark.fault("edge agent SIGKILLed")
def test_sigkill_mid_stream_loses_no_acknowledged_reading(
    site: Site, agent_factory: Any, unique: str
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    name, sink = configured(bootstrap, "crash", unique, PLAIN, fsync="never")
    agent = applied(agent_factory(name, bootstrap).start())
    sent = stream(8000, time.time() - 3600)
    batches = [sent[i : i + 50] for i in range(0, len(sent), 50)]
    acknowledged: list[dict] = []
    unacknowledged: list[list[dict]] = []
    killed = threading.Event()

    def sender() -> None:  # a sensor gateway's client: keeps what was not acknowledged
        for batch in batches:
            try:
                status, _ = agent.post(batch)
            except OSError:
                status = 0
            if status == 202:
                acknowledged.extend(batch)
            else:
                unacknowledged.append(batch)
            if len(acknowledged) >= 2000 and not killed.is_set():
                # Mid-stream, whatever the machine's speed: the processor and forwarder are
                # still busy with what was just acknowledged, more is about to be sent.
                agent.kill()
                killed.set()

    thread = threading.Thread(target=sender)
    thread.start()
    assert killed.wait(60), "2000 readings were not acknowledged within 60 s"
    thread.join(60)
    assert acknowledged and unacknowledged, "the kill did not land mid-stream"
    for log_dir in ("outbox", "journal"):  # readable as the crash left it
        left = SegmentLog(agent.data / log_dir, 256 << 20)
        left.read(left.start, 10)
        left.close()
    agent.start()
    for batch in unacknowledged:  # the client sends again what was not acknowledged
        assert agent.post(batch)[0] == 202
    got = readings(read_topic(bootstrap, sink, len(sent), timeout=120))
    assert_exactly_once_in_order(sent, got, agent)
    assert "restored" in agent.log()


@pytest.mark.fault("edge agent SIGKILLed")
def test_a_restart_goes_on_from_the_position_kafka_committed_not_the_one_on_disk(
    site: Site, agent_factory: Any, unique: str
) -> None:
    """An agent killed after Kafka committed a transaction and before it noted that on its
    disk: its disk still says the records are to be sent. They were sent, and the restarted
    agent goes on from where Kafka says (the window the SIGKILL test can only hit by
    chance, made certain here by putting the disk's position back)."""
    bootstrap = site.endpoints.kafka_bootstrap
    name, sink = configured(bootstrap, "resume", unique, PLAIN)
    agent = applied(agent_factory(name, bootstrap).start())
    sent = stream(1000, time.time() - 3600)
    post_acknowledged(agent, sent[:500])
    wait_for(
        lambda: len(read_topic(bootstrap, sink, 500, timeout=5)) >= 500,
        60,
        what="the first readings delivered",
    )
    agent.stop()
    position = agent.data / "outbox.offset"
    assert int(position.read_text()) > 0, "the agent noted its progress"
    position.write_text(f"{0:020d}\n")  # as a kill right after the commit leaves it
    agent.start()
    post_acknowledged(agent, sent[500:])
    got = readings(read_topic(bootstrap, sink, len(sent), timeout=60))
    assert_exactly_once_in_order(sent, got, agent)


def test_anonymised_before_leaving_and_privacy_budget_reported(
    site: Site, agent_factory: Any, unique: str
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    places = [(52.5163, 13.3777), (52.5201, 13.3869), (52.5124, 13.3904)]
    sensors = [
        {"id": f"dev-{unique}-{i}", "metrics": ["pm25", "pm10"], "location": {"lat": la, "lon": lo}}
        for i, (la, lo) in enumerate(places)
    ]
    filters = [
        *PLAIN,
        {"anomaly": {"alpha": 0.2, "zThreshold": 3}},
        {"window": {"kind": "tumbling", "sizeSeconds": 2, "aggregates": ["mean", "count"]}},
        {
            "anonymise": {
                "dropFields": ["ownerEmail"],
                "hashDeviceIds": True,
                "gridCellMeters": 1500,
                "kAnonymity": 3,
            }
        },
        {"differentialPrivacy": {"epsilon": 0.5, "sensitivity": 1, "budgetPerWindow": 10}},
    ]
    name, sink = configured(bootstrap, "anon", unique, filters, sensors)
    agent = applied(agent_factory(name, bootstrap).start())
    start = time.time() - 30
    batch = [
        {
            "sensorId": sensor["id"],
            "time": stamp(start + t * 0.5),
            "metrics": {"pm25": 12.0 + (t % 3), "pm10": 20.0},
            "lat": sensor["location"]["lat"],
            "lon": sensor["location"]["lon"],
            "ownerEmail": "owner@example.org",
        }
        for t in range(40)
        for sensor in sensors
    ]
    assert agent.post(batch)[0] == 202
    records = wait_for(
        lambda: read_topic(bootstrap, sink, 10**9, timeout=2) or None, 60, what="anonymised records"
    )
    for record in records:
        text = record.value().decode() + record.key().decode()
        assert f"dev-{unique}" not in text
        assert "example.org" not in text
        for lat, lon in places:
            assert str(lat) not in text and str(lon) not in text
        reading = Reading.model_validate_json(record.value())
        assert reading.lat is None and reading.lon is None
        assert reading.cell is not None and reading.cell.startswith("1500m:")
        assert reading.sensor_id.startswith("anon-")
        assert "aggregate" in reading.flags or "anomaly" in reading.flags
    assert len({Reading.model_validate_json(r.value()).sensor_id for r in records}) == 3

    def budget_reported() -> Heartbeat | None:
        beat = latest_heartbeat(bootstrap, f"edge-test/{name}")
        return beat if beat.privacy_budget_remaining is not None else None

    beat = wait_for(budget_reported, 30, what="the privacy budget in a heartbeat")
    assert 0 <= beat.privacy_budget_remaining <= 10  # type: ignore[operator]
    assert beat.privacy_epsilon_spent > 0
    assert "aios_edge_privacy_budget_remaining" in agent.metrics()


def test_a_spent_lifetime_privacy_budget_holds_across_a_restart_until_the_period_renews(
    site: Site, agent_factory: Any, unique: str
) -> None:
    """Per window a sensor may release one noisy mean (epsilon 0.5 of 1); over a 60 s
    period, 1.5 in all: three windows. What it spent is checkpointed with the buffer, so a
    restarted agent goes on withholding; the next period releases again."""
    bootstrap = site.endpoints.kafka_bootstrap
    sensor = f"dev-{unique}"
    filters: list[dict[str, Any]] = [
        *PLAIN,
        {"window": {"kind": "tumbling", "sizeSeconds": 2, "aggregates": ["mean"]}},
        {
            "differentialPrivacy": {
                "epsilon": 0.5,
                "sensitivity": 1,
                "budgetPerWindow": 1,
                "lifetimeBudget": 1.5,
                "budgetPeriodSeconds": 60,
            }
        },
    ]
    name, sink = configured(bootstrap, "lifetime", unique, filters)
    agent = applied(agent_factory(name, bootstrap).start())
    period = (time.time() // 60 - 3) * 60  # a whole period in the past

    def send(start: float, seconds: float) -> None:
        batch = [
            {"sensorId": sensor, "time": stamp(start + t * 0.5), "metrics": {"pm25": 12.0}}
            for t in range(int(seconds * 2))
        ]
        assert agent.post(batch)[0] == 202

    def heartbeat(withheld: int) -> Heartbeat | None:
        beat = latest_heartbeat(bootstrap, f"edge-test/{name}")
        done = beat.reasons.get("privacy_lifetime_budget", 0) >= withheld
        return beat if done and beat.privacy_sensors_exhausted == 1 else None

    def released() -> list[float]:
        return sorted(r.time.timestamp() for r in readings(read_topic(bootstrap, sink, 10**9, 2)))

    send(period, 12)  # windows closed up to period+8: three released, the fourth withheld
    wait_for(lambda: heartbeat(withheld=1), 60, what="the lifetime budget spent, in a heartbeat")
    assert released() == [period, period + 2, period + 4]

    agent.stop()
    agent.start()
    send(period + 12, 12)  # the same period: every window withheld
    wait_for(lambda: heartbeat(withheld=7), 60, what="six more windows withheld after a restart")
    assert released() == [period, period + 2, period + 4]

    send(period + 60, 6)  # the next period: released again
    renewed = wait_for(lambda: released()[3:] or None, 60, what="a window of the new period")
    assert renewed[0] == period + 60 and all(t >= period + 60 for t in renewed), renewed
    assert len(renewed) <= 3


def test_a_changed_edge_gateway_is_applied_live_and_shows_in_its_status(
    site: Site, operator: Any, kubectl: Any, namespace: str, tmp_path: Path, unique: str
) -> None:
    bootstrap, sink = site.endpoints.kafka_bootstrap, f"edge.live.{unique}"
    manifest = {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "EdgeGateway",
        "metadata": {"name": "gw", "namespace": namespace},
        "spec": {"site": "district-9", "filters": PLAIN, "sink": {"kafkaTopic": sink}},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))

    def status() -> dict:
        return kubectl.json("get", "edgegateway", "gw", "-n", namespace).get("status") or {}

    def condition(kind: str) -> str | None:
        found = [c for c in status().get("conditions", []) if c["type"] == kind]
        return found[0]["status"] if found else None

    wait_for(lambda: status().get("configGeneration") == 1, 60, what="the config record published")
    assert condition("Connected") == "False" and condition("Ready") == "False"
    agent = Agent(tmp_path / "agent", f"{namespace}/gw", bootstrap).start()
    try:
        wait_for(lambda: condition("Ready") == "True", 60, what=lambda: f"Ready: {status()}")
        assert status()["appliedGeneration"] == 1
        assert condition("ConfigApplied") == "True" and condition("BufferPressure") == "False"
        assert agent.post(stream(100, time.time() - 600))[0] == 202
        changed = {  # a new filter, and a new producer for the new compression
            "spec": {
                "filters": [*PLAIN, {"rateLimit": {"perSensorPerSecond": 0.5}}],
                "sink": {"kafkaTopic": sink, "compression": "lz4"},
            }
        }
        kubectl(
            "patch", "edgegateway", "gw", "-n", namespace, "--type=merge", "-p", json.dumps(changed)
        )
        started = time.monotonic()
        wait_for(lambda: status().get("appliedGeneration") == 2, 30, what="generation 2 applied")
        applied_after = time.monotonic() - started
        assert applied_after < 30
        assert agent.process is not None and agent.process.running()  # no restart
        assert condition("ConfigApplied") == "True"
        assert agent.post(stream(100, time.time() - 300))[0] == 202
        wait_for(
            lambda: status().get("forwarded", 0) == 160 and status().get("dropped", 0) == 40,
            60,
            what=lambda: f"the counters in the status: {status()}",
        )
        got = readings(read_topic(bootstrap, sink, 160, timeout=30))
        generations = Counter(r.lineage.config_generation for r in got)
        assert generations == {1: 100, 2: 60}  # 2 of 5 readings per sensor rate-limited
        row = kubectl("get", "egw", "gw", "-n", namespace)
        assert "True" in row.splitlines()[1] and " 2 " in row.splitlines()[1]
    finally:
        agent.stop()
    wait_for(lambda: condition("Connected") == "False", 60, what="Connected to turn False")


def config_history(bootstrap: str, key: str) -> list[AgentConfig | None]:
    """Every config record of ``key`` still on the topic, oldest first (None: a tombstone)."""
    partition = TopicPartition(CONFIG_TOPIC, config_partition(key, CONFIG_PARTITIONS))
    reader = Consumer(kafka.client_config(bootstrap, **{"group.id": f"t-{uuid.uuid4().hex}"}))
    try:
        low, high = reader.get_watermark_offsets(partition, timeout=10)
        reader.assign([TopicPartition(CONFIG_TOPIC, partition.partition, low)])
        history: list[AgentConfig | None] = []
        offset = low
        while offset < high:
            message = reader.poll(10)
            assert message is not None, f"{CONFIG_TOPIC} not readable up to {high}"
            if message.error() is not None:
                continue
            offset = (message.offset() or 0) + 1
            if (message.key() or b"").decode() == key:
                value = message.value()
                history.append(AgentConfig.model_validate_json(value) if value else None)
        return history
    finally:
        reader.close()


def test_a_deleted_gateway_withdraws_its_config_and_one_recreated_keeps_its_own(
    site: Site, operator: Any, kubectl: Any, namespace: str, unique: str
) -> None:
    """No finalizer holds a gateway's deletion: the operator withdraws its config record
    (a tombstone) once it is gone, and a gateway created again under the same name at
    once still ends with its own config live."""
    bootstrap, key = site.endpoints.kafka_bootstrap, f"{namespace}/gw"

    def manifest(district: str) -> str:
        return json.dumps(
            {
                "apiVersion": "aios.dev/v1alpha1",
                "kind": "EdgeGateway",
                "metadata": {"name": "gw", "namespace": namespace},
                "spec": {"site": district, "sink": {"kafkaTopic": f"edge.del.{unique}"}},
            }
        )

    def published(district: str) -> bool:
        history = config_history(bootstrap, key)
        return bool(history) and history[-1] is not None and history[-1].site == district

    kubectl("apply", "-f", "-", stdin=manifest("district-1"))
    wait_for(lambda: published("district-1"), 60, what="the first gateway's config published")
    gateway = kubectl.json("get", "edgegateway", "gw", "-n", namespace)
    assert not gateway["metadata"].get("finalizers"), "nothing holds the deletion"
    kubectl("delete", "edgegateway", "gw", "-n", namespace, "--wait=true", "--timeout=20s")
    wait_for(lambda: config_history(bootstrap, key)[-1] is None, 60, what="the tombstone")

    kubectl("apply", "-f", "-", stdin=manifest("district-2"))
    kubectl("delete", "edgegateway", "gw", "-n", namespace, "--wait=true", "--timeout=20s")
    kubectl("apply", "-f", "-", stdin=manifest("district-3"))  # before the tombstone
    wait_for(
        lambda: len([r for r in config_history(bootstrap, key) if r is None]) >= 2,
        60,
        what=lambda: f"the second gateway's tombstone: {config_history(bootstrap, key)}",
    )
    wait_for(
        lambda: published("district-3"),
        60,
        what=lambda: f"the third gateway's config live: {config_history(bootstrap, key)}",
    )

    # A gateway from an earlier aios still carries its finalizer: the operator drops it.
    legacy = json.loads(manifest("district-4"))
    legacy["metadata"] |= {"name": "old", "finalizers": ["aios.dev/edgegateway"]}
    kubectl("apply", "-f", "-", stdin=json.dumps(legacy))
    wait_for(
        lambda: f"{namespace}/old" in kafka.live_keys(bootstrap, CONFIG_TOPIC),
        60,
        what="old's config",
    )
    kubectl("delete", "edgegateway", "old", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: f"{namespace}/old" not in kafka.live_keys(bootstrap, CONFIG_TOPIC),
        60,
        what="old's tombstone",
    )


def test_config_records_of_gateways_deleted_while_no_operator_acted_are_swept(
    site: Site, operator: Any, kubectl: Any, namespace: str
) -> None:
    """A record whose gateway went while the operator was down is withdrawn at its start;
    a live gateway's record stays."""
    bootstrap = site.endpoints.kafka_bootstrap
    kept = {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "EdgeGateway",
        "metadata": {"name": "kept", "namespace": namespace},
        "spec": {"site": "district-4", "sink": {"kafkaTopic": "edge.swept"}},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(kept))
    kept_key = f"{namespace}/kept"
    wait_for(lambda: kept_key in kafka.live_keys(bootstrap, CONFIG_TOPIC), 60, what="kept's config")
    ghost = EdgeGateway.model_validate(
        {**kept, "metadata": {"name": "ghost", "namespace": namespace}}
    )
    publish_config(bootstrap, ghost)  # as if its gateway had been deleted meanwhile
    assert f"{namespace}/ghost" in kafka.live_keys(bootstrap, CONFIG_TOPIC)
    crash_operator(site, kubectl)
    wait_for(
        lambda: f"{namespace}/ghost" not in kafka.live_keys(bootstrap, CONFIG_TOPIC),
        60,
        what="the ghost's record withdrawn",
    )
    assert kept_key in kafka.live_keys(bootstrap, CONFIG_TOPIC)


def test_the_example_gateway_runs_a_simulated_agent_in_the_local_site(
    site: Site, operator: Any, kubectl: Any, namespace: str
) -> None:
    """What ``make run`` shows: district 7's simulated sensors through a real agent."""
    example = Path(__file__).resolve().parents[2] / "examples/city-air-quality/district-7.yaml"
    kubectl("apply", "-n", namespace, "-f", str(example))

    def gateway() -> dict:
        return kubectl.json("get", "edgegateway", "district-7", "-n", namespace)

    def ready() -> bool:
        conditions = (gateway().get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(ready, 120, what=lambda: f"the example gateway Ready: {gateway().get('status')}")
    deployment = kubectl.json("get", "deployment", "district-7-edge-sim", "-n", namespace)
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "EdgeGateway"
    beat = latest_heartbeat(site.endpoints.kafka_bootstrap, f"{namespace}/district-7")
    assert beat.applied_generation == gateway()["metadata"]["generation"]
    assert beat.buffer_capacity_bytes == 268435456


def test_readings_wait_for_a_sink_topic_created_later(
    site: Site, agent_factory: Any, unique: str
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    name, sink = f"late-{unique}", f"edge.late.{unique}"
    ensure_edge_topics(bootstrap, f"edge.other.{unique}")  # config and status topics only
    publish_config(bootstrap, gateway_spec(name, sink, PLAIN))
    agent = applied(agent_factory(name, bootstrap).start())
    sent = stream(200, time.time() - 600)
    assert agent.post(sent)[0] == 202
    wait_for(
        lambda: "will resend" in agent.log(), 90, what="a failed delivery to the missing topic"
    )
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(sink, 3)])
    assert_exactly_once_in_order(sent, readings(read_topic(bootstrap, sink, len(sent), 90)))
