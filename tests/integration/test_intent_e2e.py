"""AutomationIntent end to end, as a platform engineer runs it: the operator creates the
topics and renders the runner and worker, the node's kubelet runs them, readings flow in,
decisions and actions flow out — on the real Kafka, Temporal, OPA and API server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, KafkaException, Producer
from prometheus_client.parser import text_string_to_metric_families
from support import (
    SESSION_SITE,
    container_pids,
    failed_attempts,
    intent_workflows,
    restarts,
    running_pod,
    wait_for,
    workflows_closed,
)

from aios.api.base import SITE_LABEL
from aios.connectors import kafka
from aios.operator.reconcile.automation_intent import RUNNER
from aios.operator.reconcile.worker import METRICS_PORT as WORKER_METRICS_PORT
from aios.operator.reconcile.worker import WORKER
from aios.stack.platform import EXAMPLES
from aios.workflows.action_io import AUTHORIZE

TIMEOUT = 180  # seconds: a site on a shared 2-core machine is slow
SUPERVISOR = ("--as-group", "street-cleaning-supervisors")
"""A group the example's RBAC lets create Approvals (approvers.yaml)."""


def intent(name: str, source: str, target: str, **spec: Any) -> dict[str, Any]:
    body = {
        "sources": [{"name": "readings", "kafkaTopic": source}],
        "topics": {"partitions": 3, "deletePolicy": "Delete"},
        "fallback": [{"name": "static-threshold", "when": "reading.pm25 > 55", "action": "notify"}],
        "actions": [
            {
                "name": "notify",
                "type": "webhook",
                "target": target,
                "idempotencyWindowSeconds": 3600,
            }
        ],
        "sla": {"maxBatchSize": 256, "maxLatencyMs": 2000},
    }
    body.update(spec)
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "AutomationIntent",
        "metadata": {"name": name},
        "spec": body,
    }


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {}
    )


def ready_intent(kubectl, namespace: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = kubectl.json("get", "automationintent", name, "-n", namespace)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    return wait_for(check, what=f"AutomationIntent {name} Ready")


def reading(sensor: str, pm25: float, seq: int) -> bytes:
    return json.dumps(
        {
            "eventId": f"{sensor}:{seq}",
            "sensorId": sensor,
            "time": datetime.now(UTC).isoformat(),
            "site": "district-7",
            "metrics": {"pm25": pm25},
            "lineage": {"gateway": "district-7"},
        }
    ).encode()


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = Producer(kafka.producer_config(bootstrap))
    for key, value in records:
        producer.produce(topic, value, key=key.encode())
        producer.poll(0)
    assert producer.flush(60) == 0


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = TIMEOUT) -> list[Any]:
    """Committed records of ``topic`` until ``expected`` arrived (then a little more, so a
    duplicate would show)."""
    consumer = Consumer(kafka.consumer_config(f"test-{uuid.uuid4().hex}", bootstrap))
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    while time.monotonic() < deadline:
        batch = consumer.consume(1000, 0.5)
        found += [m for m in batch if m.error() is None]
        if len(found) >= expected and quiet_until is None:
            quiet_until = time.monotonic() + 3
        if quiet_until is not None and time.monotonic() > quiet_until:
            break
    consumer.close()
    return found


def deploy(kubectl, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Apply an intent and wait until it is Ready."""
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
    return ready_intent(kubectl, namespace, manifest["metadata"]["name"])


def decisions_of(bootstrap: str, intent_obj: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    topic = intent_obj["status"]["topics"]["decisions"]
    return [json.loads(m.value()) for m in read_all(bootstrap, topic, expected)]


def acted_once(site, receiver, keys: set[str]) -> None:
    """Every action in ``keys`` reached the receiver, and none twice: each action's
    workflow (its id is the action id, never reused) has ended, so nothing more comes."""
    wait_for(lambda: keys <= set(receiver.idempotency_keys()), what="every action executed")
    workflows_closed(site.endpoints.temporal_address, keys)
    assert sorted(k for k in receiver.idempotency_keys() if k in keys) == sorted(keys)


def audited_steps(site, action: str) -> list[str]:
    """The steps of ``action`` in the audit log, in the order they were recorded."""
    from aios.connectors.audit import action_steps, read_log

    records = read_log(site.endpoints.kafka_bootstrap)
    return [r.details["step"] for r in action_steps(records, action)]


def worker_metrics(pod: dict[str, Any]) -> dict[str, Counter[tuple[str, str]]]:
    """What a worker pod serves Prometheus: per sample name, its values summed by each
    (label, value) it carries."""
    url = f"http://{pod['status']['podIP']}:{WORKER_METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label in sample.labels.items():
                found[sample.name][label] += sample.value
    return found


@pytest.fixture
def topic(site, namespace) -> str:
    name = f"{namespace}.readings"
    kafka.ensure_topics(kafka.admin(site.endpoints.kafka_bootstrap), [kafka.TopicSpec(name, 3)])
    return name


def test_ten_thousand_readings_one_decision_each_anomalies_act_once(
    kubectl, operator, namespace, topic, receiver, site
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    obj = deploy(kubectl, namespace, intent("pm25", topic, f"{receiver.url}/e2e"))
    assert obj["status"]["topics"]["decisions"] == f"aios.{namespace}.pm25.decisions"
    assert {"TopicsReady", "RunnerReady", "WorkflowsReady", "Degraded"} <= {
        c["type"] for c in obj["status"]["conditions"]
    }

    sensors = [f"s-{i:03d}" for i in range(500)]
    records = [
        (s, reading(s, 80.0 if (seq == 7 and i < 40) else 20.0, seq))
        for seq in range(20)
        for i, s in enumerate(sensors)
    ]
    produce(bootstrap, topic, records)

    decisions = decisions_of(bootstrap, obj, len(records))
    assert len(decisions) == len(records), "one decision per reading, none twice"
    assert len({d["decisionId"] for d in decisions}) == len(records)
    acting = [d for d in decisions if d["outcome"] == "act"]
    assert len(acting) == 40
    assert all(d["fallback"] and d["fallbackReason"] == "no-model" for d in acting)
    assert all(d["lineage"]["topic"] == topic for d in decisions)
    assert {d["site"] for d in decisions} == {SESSION_SITE}, "the chart's site.name, every one"
    runners = runner_pods(kubectl, namespace, "pm25")
    assert {p["metadata"]["labels"].get(SITE_LABEL) for p in runners} == {SESSION_SITE}

    keys = {d["actionId"] for d in acting}
    acted_once(site, receiver, keys)
    worker = running_pod(kubectl, namespace, f"app.kubernetes.io/name={WORKER}")
    assert worker is not None
    served = worker_metrics(worker)
    completed = served["temporal_workflow_completed_total"]
    assert completed[("workflow_type", "ActionWorkflow")] == 40, "one per action, none twice"
    executed = served["temporal_activity_execution_latency_seconds_count"]
    assert executed[("activity_type", "aios.action.execute")] == 40

    def reported() -> dict[str, Any] | None:
        status = kubectl.json("get", "automationintent", "pm25", "-n", namespace)["status"]
        counts = status.get("counts") or {}
        done = counts.get("decisions") == len(records) and status.get("consumerLag") == 0
        return status if done and counts.get("actions") == 40 else None

    status = wait_for(reported, what="status counts and lag")
    assert status["counts"]["events"] == len(records)
    assert status["counts"]["fallbacks"] == len(records) and status["counts"]["overrides"] == 0

    # Paused, no runner reports the lag: the operator asks Kafka for the group's.
    kubectl(
        "patch",
        "automationintent",
        "pm25",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"mode": "paused"}}),
    )
    wait_for(lambda: not runner_pods(kubectl, namespace, "pm25"), what="the runner gone")
    produce(bootstrap, topic, records[:300])

    def backlog() -> int | None:
        found = kubectl.json("get", "automationintent", "pm25", "-n", namespace)["status"]
        return found.get("consumerLag")

    wait_for(lambda: backlog() == 300, what="the paused intent's lag, from Kafka")
    assert kubectl.json("get", "automationintent", "pm25", "-n", namespace)["status"]["counts"][
        "events"
    ] == len(records), "counts kept while no runner reports"


@pytest.mark.fault("malformed event")
def test_malformed_readings_go_to_the_dead_letter_topic_with_the_reason(
    kubectl, operator, namespace, topic, receiver, site
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    obj = deploy(kubectl, namespace, intent("dlq", topic, f"{receiver.url}/dlq"))
    bad = [
        b"{not json",
        json.dumps({"eventId": "x", "sensorId": "s"}).encode(),
        json.dumps(
            {
                "eventId": "y",
                "sensorId": "s",
                "time": "2026-01-01T00:00:00Z",
                "metrics": {"pm25": "high"},
            }
        ).encode(),
    ]
    good = [reading("s-good", 10.0, i) for i in range(5)]
    produce(
        bootstrap, topic, [("s", v) for v in [good[0], *bad[:2], *good[1:3], bad[2], *good[3:]]]
    )
    letters = read_all(bootstrap, obj["status"]["topics"]["deadLetters"], 3)
    decisions = read_all(bootstrap, obj["status"]["topics"]["decisions"], 5)
    assert len(decisions) == 5
    assert sorted(m.value() for m in letters) == sorted(bad)
    reasons = {m.value(): dict(m.headers())["aios-dead-letter-reason"].decode() for m in letters}
    assert "Invalid JSON" in reasons[bad[0]]
    assert (
        "time: Field required" in reasons[bad[1]] and "metrics: Field required" in reasons[bad[1]]
    )
    assert "metrics.pm25" in reasons[bad[2]]
    assert all(dict(m.headers())["aios-source"].decode().startswith(topic) for m in letters)


def status_counts(kubectl, namespace: str, name: str) -> dict[str, Any]:
    status = kubectl.json("get", "automationintent", name, "-n", namespace).get("status") or {}
    return status.get("counts") or {}


def runner_pod(kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    selector = f"app.kubernetes.io/name={RUNNER},app.kubernetes.io/instance={name}"
    return running_pod(kubectl, namespace, selector)


@pytest.mark.fault("runner killed mid-batch")
def test_a_killed_runner_loses_no_decision_and_repeats_no_action(
    kubectl, operator, namespace, topic, receiver, site
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    obj = deploy(kubectl, namespace, intent("crash", topic, f"{receiver.url}/crash"))
    pod = wait_for(lambda: runner_pod(kubectl, namespace, "crash"), what="a ready runner pod")
    sensors = [f"k-{i:03d}" for i in range(200)]
    records = [
        (s, reading(s, 90.0 if (seq == 3 and i % 5 == 0) else 15.0, seq))
        for seq in range(30)
        for i, s in enumerate(sensors)
    ]
    produce(bootstrap, topic, records[:3000])
    wait_for(
        lambda: (
            kafka.consumer_lag(bootstrap, f"aios.{namespace}.crash.runner", [topic]) is not None
        ),
        what="the runner committed something",
    )
    for pid in container_pids(site, pod, "runner"):  # the container crashes mid-stream
        os.kill(pid, signal.SIGKILL)
    produce(bootstrap, topic, records[3000:])
    wait_for(
        lambda: (
            (again := runner_pod(kubectl, namespace, "crash")) is not None
            and again["metadata"]["uid"] == pod["metadata"]["uid"]
            and restarts(again, "runner") > restarts(pod, "runner")
        ),
        what="the kubelet restarted the runner's container",
    )

    decisions = decisions_of(bootstrap, obj, len(records))
    assert len(decisions) == len(records)
    assert len({d["decisionId"] for d in decisions}) == len(records)
    keys = {d["actionId"] for d in decisions if d["outcome"] == "act"}
    assert len(keys) == 40
    acted_once(site, receiver, keys)
    wait_for(
        lambda: status_counts(kubectl, namespace, "crash").get("events") == len(records),
        what="status counts of every reading, those from before the crash too",
    )


def described_group(bootstrap: str, group: str) -> Any:
    """``group`` as its coordinator describes it now; raises ``TimeoutError`` or
    ``KafkaException`` while the coordinator, busy with a rebalance on a loaded broker, does
    not answer in time."""
    admin = kafka.admin(bootstrap)  # held: a client collected while asking never answers
    (described,) = admin.describe_consumer_groups([group]).values()
    return described.result(10)


def committed_by(bootstrap: str, group: str, pod_ip: str) -> int:
    """Readings committed on the partitions the group's member at ``pod_ip`` holds."""
    held = {
        (tp.topic, tp.partition)
        for member in described_group(bootstrap, group).members
        if member.host.lstrip("/") == pod_ip
        for tp in member.assignment.topic_partitions
    }
    offsets = kafka.committed_offsets(bootstrap, group, {t for t, _ in held})
    return sum(tp.offset for tp in offsets if (tp.topic, tp.partition) in held and tp.offset > 0)


def runner_pods(kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/name={RUNNER},app.kubernetes.io/instance={name}"
    return kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]


@pytest.mark.fault("runner killed mid-batch")
def test_three_runners_share_the_readings_and_one_killed_loses_nothing_and_counts_right(
    kubectl, operator, namespace, receiver, site
) -> None:
    """Three replicas share six partitions; one is killed mid-stream. Its partitions go on
    from their last commit (decisions, offsets and state in one transaction), so every
    reading is decided once, no action repeats, and the status counts come out exact —
    they live with the partitions, not with the replica that was killed."""
    bootstrap = site.endpoints.kafka_bootstrap
    source = f"{namespace}.readings6"
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(source, 6)])
    scaling = {"minReplicas": 3, "maxReplicas": 3}
    obj = deploy(
        kubectl, namespace, intent("trio", source, f"{receiver.url}/trio", scaling=scaling)
    )
    assert condition(obj, "ScalingActive")["reason"] == "FixedReplicas"
    pods = runner_pods(kubectl, namespace, "trio")
    assert sorted(p["metadata"]["name"] for p in pods) == [f"trio-runner-{i}" for i in range(3)]
    sensors = [f"t-{i:03d}" for i in range(300)]
    records = [
        (s, reading(s, 90.0 if (seq == 5 and i % 10 == 0) else 15.0, seq))
        for seq in range(20)
        for i, s in enumerate(sensors)
    ]
    produce(bootstrap, source, records[:3000])
    victim = next(p for p in pods if p["metadata"]["name"] == "trio-runner-1")
    wait_for(
        lambda: committed_by(bootstrap, f"aios.{namespace}.trio.runner", victim["status"]["podIP"]),
        what="trio-runner-1 committed some of its partitions' readings",
    )
    for pid in container_pids(site, victim, "runner"):
        os.kill(pid, signal.SIGKILL)
    produce(bootstrap, source, records[3000:])

    decisions = decisions_of(bootstrap, obj, len(records))
    assert len(decisions) == len(records)
    assert len({d["decisionId"] for d in decisions}) == len(records), "none decided twice"
    assert {d["lineage"]["partition"] for d in decisions} == set(range(6))
    keys = {d["actionId"] for d in decisions if d["outcome"] == "act"}
    assert len(keys) == 30
    acted_once(site, receiver, keys)

    counts = wait_for(
        lambda: (
            (c := status_counts(kubectl, namespace, "trio")).get("events") == len(records) and c
        ),
        what="status counts of every reading, the killed runner's too",
    )
    assert counts["decisions"] == counts["fallbacks"] == len(records)
    assert counts["deadLetters"] == 0
    after = {
        p["metadata"]["name"]: restarts(p, "runner")
        for p in runner_pods(kubectl, namespace, "trio")
    }
    assert after["trio-runner-1"] > restarts(victim, "runner"), "it was killed and came back"
    assert after["trio-runner-0"] == after["trio-runner-2"] == 0, (
        "the others rode out the rebalances (a fenced transaction is aborted and rewound)"
    )
    logs = kubectl("logs", "-n", namespace, "trio-runner-1", "-c", "runner")
    assert "no state of" not in logs, "each partition went on from the state of its commit"


class Feed(threading.Thread):
    """Readings at a steady pace until stopped, so some always wait on the source: a
    hundred sensors, ten times a second, and every two seconds one reading that acts."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.stopped = threading.Event()
        self.sent = 0
        self.acting = 0

    def run(self) -> None:
        producer = Producer(kafka.producer_config(self.bootstrap))
        tick = 0
        while not self.stopped.wait(0.1):
            for i in range(100):
                hot = i == 0 and tick % 20 == 0
                sensor = f"hot-{tick}" if hot else f"f-{i:03d}"
                producer.produce(
                    self.topic, reading(sensor, 90.0 if hot else 15.0, tick), key=sensor.encode()
                )
                self.acting += hot
            self.sent += 100
            producer.poll(0)
            tick += 1
        assert producer.flush(60) == 0

    def stop(self) -> int:
        """Stop, once every reading sent is acknowledged; how many were sent."""
        self.stopped.set()
        self.join(90)
        return self.sent


def group_members(bootstrap: str, group: str) -> int:
    """Members of ``group`` now; 0 while its coordinator does not answer (the caller asks
    again)."""
    try:
        return len(described_group(bootstrap, group).members)
    except (TimeoutError, KafkaException):
        return 0


def autoscaling_state(kubectl, namespace: str, name: str, bootstrap: str) -> str:
    """What a failed wait on the autoscaler reports: the runner pods, the autoscaler KEDA
    made, and the consumer group."""
    pods = [
        (p["metadata"]["name"], p["status"].get("phase"), restarts(p, "runner"))
        for p in runner_pods(kubectl, namespace, name)
    ]
    hpa = kubectl.json("get", "hpa", "-n", namespace).get("items") or [{}]
    group = f"aios.{namespace}.{name}.runner"
    try:
        found = described_group(bootstrap, group)
        members = f"{found.state}, {len(found.members)} member(s)"
    except (TimeoutError, KafkaException) as error:
        members = f"not described: {error!r}"
    return f"pods {pods}; autoscaler status {hpa[0].get('status')}; group {members}"


def statefulset_replicas(kubectl, namespace: str, name: str) -> int:
    runners = kubectl.json("get", "statefulset", f"{name}-runner", "-n", namespace)
    return int(runners["spec"]["replicas"])


def test_a_backlog_scales_the_runners_up_through_keda_and_back_down_when_it_is_gone(
    kubectl, operator, namespace, receiver, site
) -> None:
    """KEDA, in the site, reads the runners' consumer group lag as the runners' own Kafka
    user. While readings wait on the source, the HorizontalPodAutoscaler it made adds
    runners up to maxReplicas (the source's partitions); once the lag is gone it takes them
    away after the stabilization window. Across those rebalances every reading is decided
    once and no action repeats."""
    bootstrap = site.endpoints.kafka_bootstrap
    source = f"{namespace}.surge"
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(source, 3)])
    scaling = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "lagThreshold": 10,
        "scaleDownStabilizationSeconds": 20,
    }
    obj = deploy(
        kubectl, namespace, intent("surge", source, f"{receiver.url}/surge", scaling=scaling)
    )
    group = f"aios.{namespace}.surge.runner"

    def scaling_active() -> dict[str, Any] | None:
        found = kubectl.json("get", "automationintent", "surge", "-n", namespace)
        active = condition(found, "ScalingActive")
        return found if active.get("reason") == "ScaledByKeda" else None

    taken = wait_for(scaling_active, what="KEDA took the runners' ScaledObject")
    assert condition(taken, "ScalingActive")["status"] == "True"
    assert statefulset_replicas(kubectl, namespace, "surge") == 1

    feed = Feed(bootstrap, source)
    feed.start()
    try:
        wait_for(
            lambda: statefulset_replicas(kubectl, namespace, "surge") == 3,
            what="KEDA's autoscaler asked for three runners",
        )
        wait_for(
            lambda: group_members(bootstrap, group) == 3,
            what=lambda: (
                "three runners in the group: "
                + autoscaling_state(kubectl, namespace, "surge", bootstrap)
            ),
        )
        wait_for(
            lambda: (
                (
                    kubectl.json("get", "automationintent", "surge", "-n", namespace).get("status")
                    or {}
                ).get("runners")
                == 3
            ),
            what="status.runners follows the autoscaler",
        )
    finally:
        sent = feed.stop()
    wait_for(
        lambda: kafka.consumer_lag(bootstrap, group, [source]) == 0,
        what="the runners caught up",
    )
    wait_for(
        lambda: statefulset_replicas(kubectl, namespace, "surge") == 1,
        what="back to minReplicas once the lag was gone",
    )

    decisions = decisions_of(bootstrap, obj, sent)
    assert len(decisions) == sent, "every reading decided, through the scaling both ways"
    assert len({d["decisionId"] for d in decisions}) == sent, "none twice"
    keys = {d["actionId"] for d in decisions if d["outcome"] == "act"}
    assert len(keys) == feed.acting
    acted_once(site, receiver, keys)
    wait_for(
        lambda: status_counts(kubectl, namespace, "surge").get("events") == sent,
        what="status counts of every reading, whichever runner decided it",
    )


@pytest.mark.fault("worker killed mid-action")
def test_a_worker_killed_mid_action_runs_each_action_once(
    kubectl, operator, namespace, topic, receiver, site
) -> None:
    """The target fails at first, so each action's activity is in flight (retrying) when
    the worker's container is SIGKILLed; the restarted worker finishes every action, and
    the target took each one once."""
    bootstrap = site.endpoints.kafka_bootstrap
    path = f"/worker-crash-{namespace}"
    receiver.failures[path] = 10**6
    obj = deploy(kubectl, namespace, intent("wcrash", topic, f"{receiver.url}{path}"))
    produce(bootstrap, topic, [(f"w-{i}", reading(f"w-{i}", 90.0, 0)) for i in range(5)])
    decisions = decisions_of(bootstrap, obj, 5)
    keys = {d["actionId"] for d in decisions if d["outcome"] == "act"}
    assert len(keys) == 5
    attempted = receiver.idempotency_keys
    wait_for(lambda: keys <= set(attempted()), what="every action tried, and refused by the target")
    selector = f"app.kubernetes.io/name={WORKER}"
    pod = running_pod(kubectl, namespace, selector)
    assert pod is not None
    for pid in container_pids(site, pod, "worker"):
        os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (
            (again := running_pod(kubectl, namespace, selector)) is not None
            and restarts(again, "worker") > restarts(pod, "worker")
        ),
        what="the kubelet restarted the worker's container",
    )
    # The target recovers only now: a POST the dying worker had sent, answered with success
    # after its death, would be a response lost, which the webhook contract leaves to the
    # target's Idempotency-Key (CI on 1cebff3 counted such a POST as a second action).
    receiver.failures[path] = 0

    def executed() -> list[str]:
        return [key for p, key in receiver.taken if p == path]

    wait_for(lambda: keys <= set(executed()), what="every action executed after the restart")
    workflows_closed(site.endpoints.temporal_address, keys)
    assert sorted(executed()) == sorted(keys), "each action reached its target once"


def aiosctl(site, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a shell that ran ``eval "$(aiosctl env)"``."""
    env = {
        **os.environ,
        "KUBECONFIG": site.endpoints.kubeconfig,
        "AIOS_TEMPORAL_ADDRESS": site.endpoints.temporal_address,
        "AIOS_KAFKA_BOOTSTRAP": site.endpoints.kafka_bootstrap,
    }
    return subprocess.run(
        [sys.executable, "-m", "aios.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def waiting_for_approval(kubectl, namespace: str, topic: str, receiver, site, name: str) -> str:
    """An intent whose action alice must approve, and one reading that triggers it: the id
    of the action, once it waits for approval (and mallory, no approver, was refused)."""
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "approvers.yaml"))
    approval = {"required": True, "approvers": ["alice"], "timeoutSeconds": 600}
    manifest = intent(name, topic, f"{receiver.url}/{name}")
    manifest["spec"]["actions"][0]["approval"] = approval
    obj = deploy(kubectl, namespace, manifest)
    produce(site.endpoints.kafka_bootstrap, topic, [("a-1", reading("a-1", 99.0, 1))])
    [decision] = decisions_of(site.endpoints.kafka_bootstrap, obj, 1)
    action = str(decision["actionId"])

    def waiting() -> bool:
        result = aiosctl(site, "approve", f"action/{action}", "--as", "mallory", *SUPERVISOR)
        return "not among the approvers" in result.stderr

    wait_for(waiting, what="the action waiting for approval (and mallory refused)")
    assert action not in receiver.idempotency_keys()
    return action


def approve_as_alice(site, action: str) -> None:
    approved = aiosctl(
        site, "approve", f"action/{action}", "--as", "alice", *SUPERVISOR, "--reason", "go"
    )
    assert approved.returncode == 0, approved.stderr
    assert f"approved action/{action} as alice" in approved.stdout


def test_an_action_needing_approval_waits_then_runs_once_when_approved(
    kubectl, operator, namespace, topic, receiver, site
) -> None:
    action = waiting_for_approval(kubectl, namespace, topic, receiver, site, "approve")
    approve_as_alice(site, action)
    acted_once(site, receiver, {action})
    again = aiosctl(site, "approve", f"action/{action}", "--as", "alice", *SUPERVISOR)
    assert again.returncode != 0 and "not waiting for approval" in again.stderr


@pytest.mark.fault("Temporal restarted while an action waits for approval")
def test_an_action_waiting_for_approval_survives_a_temporal_restart(
    kubectl, operator, namespace, topic, receiver, site
) -> None:
    """Temporal keeps the waiting workflow in its database; the worker and runner reconnect.
    Approved after the restart, the action runs once, and the audit shows each step once."""
    action = waiting_for_approval(kubectl, namespace, topic, receiver, site, "restart")
    site.restart("temporal")
    assert action not in receiver.idempotency_keys(), "a restart approves nothing"
    wait_for(
        lambda: (
            "not among the approvers"
            in aiosctl(site, "approve", f"action/{action}", "--as", "mallory", *SUPERVISOR).stderr
        ),
        what="the action still waiting for approval after the restart",
    )
    approve_as_alice(site, action)
    acted_once(site, receiver, {action})
    wait_for(
        lambda: audited_steps(site, action)[-1:] == ["executed"], what="the executed step audited"
    )
    assert audited_steps(site, action) == ["requested", "authorized", "approved", "executed"]


def test_shadow_mode_decides_and_never_acts(
    kubectl, operator, namespace, topic, receiver, site
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    obj = deploy(
        kubectl, namespace, intent("shadow", topic, f"{receiver.url}/shadow", mode="shadow")
    )
    produce(bootstrap, topic, [(f"h-{i}", reading(f"h-{i}", 99.0, i)) for i in range(10)])
    decisions = decisions_of(bootstrap, obj, 10)
    assert len(decisions) == 10
    assert all(
        d["outcome"] == "act" and d["mode"] == "shadow" and "actionId" not in d for d in decisions
    )
    # The runner hands actions off before it publishes their decisions: none was started.
    assert intent_workflows(site.endpoints.temporal_address, f"{namespace}/shadow") == []
    assert not [c for c in receiver.calls if c[0] == "/shadow"]


@pytest.mark.fault("OPA down (fail closed)")
def test_with_opa_stopped_no_action_runs_until_it_answers_again(
    kubectl, operator, namespace, topic, receiver, site
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    obj = deploy(kubectl, namespace, intent("no-opa", topic, f"{receiver.url}/no-opa"))
    opa = site.processes["opa"]
    os.killpg(opa.pid, signal.SIGSTOP)
    try:
        produce(bootstrap, topic, [("o-1", reading("o-1", 99.0, 1))])
        [decision] = decisions_of(bootstrap, obj, 1)
        action = decision["actionId"]
        wait_for(lambda: "requested" in audited_steps(site, action), what="the action requested")
        failed_attempts(site.endpoints.temporal_address, action, AUTHORIZE, 1)
        assert action not in receiver.idempotency_keys(), "no action runs without OPA"
        assert audited_steps(site, action) == ["requested"]
    finally:
        os.killpg(opa.pid, signal.SIGCONT)
    acted_once(site, receiver, {action})
    wait_for(
        lambda: audited_steps(site, action)[-1:] == ["executed"], what="the executed step audited"
    )
    assert audited_steps(site, action) == ["requested", "authorized", "executed"]


def test_while_temporal_cannot_take_actions_consumption_pauses_and_nothing_is_lost(
    kubectl, operator, namespace, topic, receiver, site
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    obj = deploy(kubectl, namespace, intent("blocked", topic, f"{receiver.url}/blocked"))
    temporal = site.processes["temporal"]
    os.killpg(temporal.pid, signal.SIGSTOP)
    try:
        produce(
            bootstrap,
            topic,
            [(f"b-{i}", reading(f"b-{i}", 99.0 if i < 5 else 10.0, i)) for i in range(200)],
        )

        def blocked() -> dict[str, Any] | None:
            found = condition(
                kubectl.json("get", "automationintent", "blocked", "-n", namespace), "Degraded"
            )
            return found if found.get("reason") == "HandOffBlocked" else None

        wait_for(blocked, what="Degraded: HandOffBlocked")
        assert not [c for c in receiver.calls if c[0] == "/blocked"]
    finally:
        os.killpg(temporal.pid, signal.SIGCONT)
    decisions = decisions_of(bootstrap, obj, 200)
    assert len(decisions) == 200 and len({d["decisionId"] for d in decisions}) == 200
    keys = {d["actionId"] for d in decisions if d["outcome"] == "act"}
    assert len(keys) == 5
    acted_once(site, receiver, keys)


def test_an_intent_without_a_matching_gateway_says_so_and_deletes_cleanly(
    kubectl, operator, namespace
) -> None:
    manifest = intent("lonely", "unused", "http://127.0.0.1:9/")
    manifest["spec"]["sources"] = [
        {"name": "nobody", "edgeGatewaySelector": {"matchLabels": {"aios.dev/site": "nowhere"}}}
    ]
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))

    def no_source() -> dict[str, Any] | None:
        found = condition(
            kubectl.json("get", "automationintent", "lonely", "-n", namespace), "TopicsReady"
        )
        return found if found.get("reason") == "NoSource" else None

    assert "No EdgeGateway" in wait_for(no_source, what="TopicsReady: NoSource")["message"]
    kubectl("delete", "automationintent", "lonely", "-n", namespace, "--timeout=60s")
