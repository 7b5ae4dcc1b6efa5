"""The action workflow against real Temporal, OPA, Kafka and Mosquitto: authorise,
approve (with escalation), rate-limit, act exactly once, record every step."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from model_support import aiosctl
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import activity_attempts, record_history, wait_for
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from aios.api.events import ActionOutcome, ActionRequest, Review
from aios.connectors import kafka
from aios.connectors.audit import read_log
from aios.connectors.temporal import connect as connect_temporal
from aios.stack.platform import EXAMPLES
from aios.stack.process import ManagedProcess
from aios.stack.site import Site, mqtt_ready
from aios.workflows.action import ActionWorkflow
from aios.workflows.action_io import APPROVER
from aios.workflows.settings import WorkerSettings
from aios.workflows.worker import build_worker, ensure_search_attributes

NOW = datetime.now(UTC)
APPROVERS = EXAMPLES / "approvers.yaml"
"""The example's RBAC: its approver groups may create Approvals."""
SUPERVISORS = "street-cleaning-supervisors"


def request(action: dict, sensor: str = "s-1", namespace: str = "city") -> dict:
    """An action request as the runner makes it; its id starts with the intent's namespace."""
    key = f"{namespace}.pm25.{action['name']}.{uuid.uuid4().hex[:12]}"
    decision = {
        "decisionId": f"city/pm25/{key}",
        "eventId": key,
        "sensorId": sensor,
        "intent": {"namespace": namespace, "name": "pm25", "generation": 1},
        "time": NOW.isoformat(),
        "decidedAt": NOW.isoformat(),
        "outcome": "act",
        "rule": "pm25-spike",
        "action": action["name"],
        "actionId": key,
        "score": 0.93,
        "confidence": 0.9,
        "model": {"call": "anomaly", "deployment": "pm25-anomaly", "version": "1", "canary": False},
        "lineage": {
            "topic": "readings",
            "partition": 0,
            "offset": 7,
            "eventIds": [key],
            "gateway": "district-7",
            "configGeneration": 2,
        },
    }
    return ActionRequest.model_validate(
        {
            "actionId": key,
            "intent": {"namespace": namespace, "name": "pm25", "generation": 1},
            "action": action,
            "decision": decision,
        }
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.fixture
async def temporal(site, operator) -> AsyncIterator[tuple[Client, str]]:
    """A real worker for the action workflow on a fresh task queue."""
    client = await connect_temporal(site.endpoints.temporal_address)
    queue = f"test-actions-{uuid.uuid4().hex[:8]}"
    await ensure_search_attributes(client, "default")
    async with build_worker(client, worker_settings(site, queue, site.endpoints.mqtt_url)):
        yield client, queue


def worker_settings(site: Site, queue: str, mqtt_url: str) -> WorkerSettings:
    """A worker of the site's OPA, Kafka, Temporal and API server (Approvals), sending MQTT
    commands to ``mqtt_url``."""
    return WorkerSettings(
        site.endpoints.temporal_address,
        task_queue=queue,
        env={
            "KUBECONFIG": site.endpoints.kubeconfig,
            "AIOS_OPA_URL": site.endpoints.opa_url,
            "AIOS_KAFKA_BOOTSTRAP": site.endpoints.kafka_bootstrap,
            "AIOS_MQTT_URL": mqtt_url,
        },
    )


async def outcome(handle: WorkflowHandle) -> dict[str, Any]:
    """The action's result as its last audit step recorded it: the outcome and its fields."""
    result: ActionOutcome = await handle.result()
    return result.model_dump()


async def start(temporal: tuple[Client, str], payload: dict) -> WorkflowHandle:
    """Start the action as the runner does: its ActionRequest, through the data converter."""
    client, queue = temporal
    return await client.start_workflow(
        ActionWorkflow.run,
        ActionRequest.model_validate(payload),
        id=payload["actionId"],
        task_queue=queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )


async def test_a_webhook_action_runs_once_and_every_step_is_audited(
    temporal, receiver, site
) -> None:
    payload = request({"name": "notify", "type": "webhook", "target": f"{receiver.url}/hooks/air"})
    handle = await start(temporal, payload)
    result = await outcome(handle)
    assert result["status"] == "executed" and result["httpStatus"] == 200
    assert receiver.idempotency_keys().count(payload["actionId"]) == 1
    with pytest.raises(WorkflowAlreadyStartedError):
        await start(temporal, payload)

    def steps() -> list[str]:
        return [
            r.details["step"]
            for r in read_log(site.endpoints.kafka_bootstrap)
            if r.kind == "action-step" and r.details.get("actionId") == payload["actionId"]
        ]

    for _ in range(60):
        if "executed" in steps():
            break
        await asyncio.sleep(0.5)
    assert steps() == ["requested", "authorized", "executed"]
    executed = next(
        r
        for r in read_log(site.endpoints.kafka_bootstrap)
        if r.details.get("actionId") == payload["actionId"] and r.details["step"] == "executed"
    )
    assert executed.policy_decision_id, "the policy decision id travels with the action"
    assert executed.details["decision"]["lineage"]["gateway"] == "district-7"
    await record_history(site.endpoints.temporal_address, handle.id, "action-executed")


async def test_approval_escalates_refuses_strangers_and_acts_once(
    temporal, receiver, site, kubectl, namespace
) -> None:
    kubectl("apply", "-n", namespace, "-f", str(APPROVERS))
    payload = request(
        {
            "name": "dispatch",
            "type": "webhook",
            "target": f"{receiver.url}/dispatch",
            "approval": {
                "required": True,
                "approvers": ["alice"],
                "timeoutSeconds": 60,
                "escalation": [
                    {"approvers": ["group:street-cleaning-supervisors"], "afterSeconds": 30}
                ],
            },
        },
        namespace=namespace,
    )
    handle = await start(temporal, payload)
    target = f"action/{payload['actionId']}"
    await until_state(handle, lambda s: s["phase"] == "awaiting-approval")

    # Before the escalation (30 s), bob is no approver: admission refuses his Approval.
    early = await asyncio.to_thread(
        aiosctl, site, "approve", target, "--as", "bob", "--as-group", SUPERVISORS
    )
    assert early.returncode == 1 and "bob is not among the approvers" in early.stderr
    attempts = await asyncio.to_thread(
        wait_for,
        lambda: [
            r
            for r in read_log(site.endpoints.kafka_bootstrap)
            if r.kind == "approval" and r.subject.endswith(payload["actionId"]) and r.actor == "bob"
        ],
    )
    assert attempts[0].details["outcome"] == "denied", "the refused attempt is audited"
    # A raw signal naming an approver approves nothing: refused and audited.
    await handle.signal("review", Review(approver="alice", approved=True))
    state = await until_state(handle, lambda s: bool(s["refused"]))
    assert state["refused"] == ["alice"] and state["phase"] == "awaiting-approval"
    refused = await asyncio.to_thread(audited, site, payload, "approval-refused")
    assert "a Temporal signal approves nothing" in refused[0].details["result"]["reason"]

    assert payload["actionId"] not in receiver.idempotency_keys()
    await until_state(handle, lambda s: f"group:{SUPERVISORS}" in s["allowedApprovers"])
    done = await asyncio.to_thread(
        aiosctl, site, "approve", target, "--as", "bob", "--as-group", SUPERVISORS
    )
    assert done.returncode == 0, done.stderr
    result = await outcome(handle)
    assert result["status"] == "executed"
    assert receiver.idempotency_keys().count(payload["actionId"]) == 1
    assert (await handle.query("state"))["review"]["approver"] == "bob"
    recorded = (await handle.describe()).typed_search_attributes.get(APPROVER)
    assert recorded == "bob", "the approver is read without a worker, from visibility"
    (approved,) = await asyncio.to_thread(audited, site, payload, "approved")
    assert approved.actor == "bob", "the audit names the user the API server authenticated"
    await record_history(site.endpoints.temporal_address, handle.id, "action-escalated-approved")


async def test_a_rejected_action_never_runs(temporal, receiver, site, kubectl, namespace) -> None:
    kubectl("apply", "-n", namespace, "-f", str(APPROVERS))
    payload = request(
        {
            "name": "dispatch",
            "type": "webhook",
            "target": f"{receiver.url}/dispatch",
            "approval": {"required": True, "approvers": ["alice"]},
        },
        namespace=namespace,
    )
    handle = await start(temporal, payload)
    await until_state(handle, lambda s: s["phase"] == "awaiting-approval")
    target = f"action/{payload['actionId']}"
    done = await asyncio.to_thread(
        aiosctl,
        site,
        "reject",
        target,
        "--as",
        "alice",
        "--as-group",
        SUPERVISORS,
        "--reason",
        "not now",
    )
    assert done.returncode == 0, done.stderr
    result = await outcome(handle)
    assert result == {"status": "rejected", "reason": "not now"}
    assert payload["actionId"] not in receiver.idempotency_keys()
    assert (await handle.describe()).typed_search_attributes.get(APPROVER) == "alice"
    await record_history(site.endpoints.temporal_address, handle.id, "action-rejected")


async def until_state(handle: WorkflowHandle, wanted: Callable[[dict], bool]) -> dict:
    """The workflow's state once ``wanted`` holds (queried until then, for at most 2 min)."""
    async with asyncio.timeout(120):
        while not wanted(state := await handle.query("state")):
            await asyncio.sleep(0.25)
    return state


def audited(site: Site, payload: dict, step: str) -> list:
    """The action's audit records of ``step``, waited for until one exists."""
    return wait_for(
        lambda: [
            r
            for r in read_log(site.endpoints.kafka_bootstrap)
            if r.kind == "action-step"
            and r.details.get("actionId") == payload["actionId"]
            and r.details["step"] == step
        ]
    )


async def test_an_mqtt_command_carries_the_template_and_the_idempotency_key(temporal, site) -> None:
    host, port = site.endpoints.mqtt_url.removeprefix("mqtt://").split(":")
    topic = f"city/test/{uuid.uuid4().hex[:6]}/dispatch"
    got: list[mqtt.MQTTMessage] = []
    arrived = threading.Event()
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    subscriber.on_message = lambda _c, _u, message: (got.append(message), arrived.set())
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.connect(host, int(port))
    subscriber.subscribe(topic, qos=1)
    subscriber.loop_start()
    assert await asyncio.to_thread(subscribed.wait, 10), "the broker acknowledged no subscription"
    try:
        payload = request(
            {
                "name": "clean",
                "type": "mqtt",
                "target": topic,
                "payloadTemplate": '{"command": "dispatch", "sensor": "$sensorId"}',
            }
        )
        result = await outcome(await start(temporal, payload))
        assert result["status"] == "executed"
        assert await asyncio.to_thread(arrived.wait, 10)
    finally:
        subscriber.loop_stop()
    assert got[0].payload == b'{"command": "dispatch", "sensor": "s-1"}'
    assert ("Idempotency-Key", payload["actionId"]) in got[0].properties.UserProperty


async def test_the_rate_limit_holds_across_actions(temporal, receiver) -> None:
    action = {
        "name": f"capped-{uuid.uuid4().hex[:6]}",
        "type": "webhook",
        "target": f"{receiver.url}/capped",
        "rateLimit": {"perHour": 1},
    }
    first = await outcome(await start(temporal, request(action, "s-1")))
    assert first["status"] == "executed"
    second = None
    for _ in range(20):  # visibility is eventually consistent
        second = await outcome(await start(temporal, request(action, "s-2")))
        if second["status"] == "rate-limited":
            break
        await asyncio.sleep(1)
    assert second is not None and second["status"] == "rate-limited"
    assert second["executedLastHour"] >= 1


async def test_a_webhook_that_fails_twice_takes_effect_once(temporal, receiver) -> None:
    path = f"/flaky-{uuid.uuid4().hex[:6]}"
    receiver.failures[path] = 2
    payload = request({"name": "notify", "type": "webhook", "target": f"{receiver.url}{path}"})
    result = await outcome(await start(temporal, payload))
    assert result["status"] == "executed" and result["httpStatus"] == 200
    keys = [headers.get("Idempotency-Key") for p, headers, _ in receiver.calls if p == path]
    assert keys == [payload["actionId"]] * 3, "retried with the same key"
    assert [status for p, status in receiver.answered if p == path] == [500, 500, 200]


def records_with_key(bootstrap: str, topic: str, key: str) -> list[bytes]:
    """The values of ``topic``'s records keyed ``key``, read up to its current end."""
    reader = Consumer(
        kafka.client_config(
            bootstrap, **{"group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
    )
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p))[1] for p in partitions}
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends if ends[p]])
        found: list[bytes] = []
        left = {p for p, end in ends.items() if end}
        while left:
            message = reader.poll(1)
            if message is None or message.error() is not None:
                continue
            if message.key() == key.encode():
                found.append(message.value())
            if message.offset() + 1 >= ends[message.partition()]:
                left.discard(message.partition())
        return found
    finally:
        reader.close()


async def test_a_kafka_action_whose_topic_is_missing_at_first_lands_once(temporal, site) -> None:
    """The first attempt fails (no such topic yet, and the site's Kafka creates none); the
    topic appears while the activity retries; one record arrives, not two."""
    bootstrap = site.endpoints.kafka_bootstrap
    topic = f"test.commands.{uuid.uuid4().hex[:6]}"
    payload = request({"name": "command", "type": "kafka", "target": topic})
    handle = await start(temporal, payload)
    address = site.endpoints.temporal_address
    for _ in range(120):
        if await activity_attempts(address, handle.id, "aios.action.execute") > 1:
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("the execute activity never failed against the missing topic")
    await asyncio.to_thread(
        kafka.ensure_topics, kafka.admin(bootstrap), [kafka.TopicSpec(topic, 1, {})]
    )
    result = await outcome(handle)
    assert result["status"] == "executed" and result["kafkaTopic"] == topic
    records = await asyncio.to_thread(records_with_key, bootstrap, topic, payload["actionId"])
    assert len(records) == 1, f"{len(records)} records for one action"


def durable_subscriber(host: str, port: int, topic: str) -> str:
    """A subscription (QoS 2) in a session the broker keeps while its client is away; the
    client id that resumes it."""
    client_id = f"test-sub-{uuid.uuid4().hex[:8]}"
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.on_connect = lambda client, *_: client.subscribe(topic, qos=2)
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 600
    # a new client id, so no old session; clean_start=False: Mosquitto saves only such sessions
    subscriber.connect(host, port, clean_start=False, properties=session)
    subscriber.loop_start()
    try:
        assert subscribed.wait(10), "the broker acknowledged no subscription"
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    return client_id


def resume_and_drain(host: str, port: int, client_id: str, topic: str) -> list[bytes]:
    """What the broker kept for the session, up to a marker published after resuming it."""
    marker = f"marker-{uuid.uuid4().hex}".encode()
    got: list[bytes] = []
    drained = threading.Event()

    def received(_client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.payload == marker:
            drained.set()
        else:
            got.append(message.payload)

    resumed = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
    resumed.on_message = received
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 600
    connected = threading.Event()
    resumed.on_connect = lambda *_: connected.set()
    resumed.connect(host, port, clean_start=False, properties=session)
    resumed.loop_start()
    try:
        assert connected.wait(10), "the session was not resumed"
        resumed.publish(topic, marker, qos=2).wait_for_publish(10)
        assert drained.wait(30), "the marker never came back"
    finally:
        resumed.disconnect()
        resumed.loop_stop()
    return got


async def test_an_mqtt_command_waits_out_a_broker_outage_and_arrives_once(
    site, operator, tmp_path
) -> None:
    """The broker (a site of its own) is stopped when the action runs: the command waits for
    it, then reaches a subscriber whose session outlived the outage, once."""
    broker = Site(tmp_path / "mqtt-only")
    broker.start(only=["mosquitto"])
    try:
        host, port = broker.endpoints.mqtt_url.removeprefix("mqtt://").split(":")
        topic = f"city/test/{uuid.uuid4().hex[:6]}/barrier"
        subscriber = await asyncio.to_thread(durable_subscriber, host, int(port), topic)
        process = broker.processes["mosquitto"]
        await asyncio.to_thread(process.stop)  # the session and its subscription are saved
        client = await connect_temporal(site.endpoints.temporal_address)
        queue = f"test-mqtt-{uuid.uuid4().hex[:8]}"
        payload = request({"name": "barrier", "type": "mqtt", "target": topic})
        async with build_worker(client, worker_settings(site, queue, broker.endpoints.mqtt_url)):
            handle = await start((client, queue), payload)
            await until_waiting_for_the_broker(handle)
            restarted = ManagedProcess("mosquitto", process.argv, process.log).start()
            broker.processes["mosquitto"] = restarted
            await asyncio.to_thread(restarted.wait_healthy, lambda: mqtt_ready(host, int(port)), 30)
            result = await outcome(handle)
        assert result["status"] == "executed"
        kept = await asyncio.to_thread(resume_and_drain, host, int(port), subscriber, topic)
        assert len(kept) == 1, f"{len(kept)} commands arrived for one action"
    finally:
        broker.stop()


async def until_waiting_for_the_broker(handle: WorkflowHandle) -> None:
    """Until the execute activity has reported (heartbeat) that the broker is unreachable."""
    for _ in range(120):
        pending = (await handle.describe()).raw_description.pending_activities
        if any(p.heartbeat_details.payloads for p in pending):
            return
        await asyncio.sleep(0.5)
    raise AssertionError("the MQTT activity never reported waiting for the broker")
