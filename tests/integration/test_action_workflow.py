"""The action workflow against real Temporal, OPA, Kafka and Mosquitto: authorise,
approve (with escalation), rate-limit, act exactly once, record every step."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from aios.api.events import ActionRequest
from aios.connectors.audit import read_log
from aios.workflows.action import Review
from aios.workflows.worker import WorkerSettings, build_worker, ensure_search_attributes

NOW = datetime.now(UTC)


def request(action: dict, sensor: str = "s-1") -> dict:
    key = f"test.{uuid.uuid4().hex[:12]}"
    decision = {
        "decisionId": f"city/pm25/{key}",
        "eventId": key,
        "sensorId": sensor,
        "intent": {"namespace": "city", "name": "pm25", "generation": 1},
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
            "intent": {"namespace": "city", "name": "pm25", "generation": 1},
            "action": action,
            "decision": decision,
        }
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.fixture
async def temporal(site, operator) -> AsyncIterator[tuple[Client, str]]:
    """A real worker for the action workflow on a fresh task queue."""
    client = await Client.connect(site.endpoints.temporal_address)
    queue = f"test-actions-{uuid.uuid4().hex[:8]}"
    settings = WorkerSettings(
        site.endpoints.temporal_address,
        task_queue=queue,
        env={
            "AIOS_OPA_URL": site.endpoints.opa_url,
            "AIOS_KAFKA_BOOTSTRAP": site.endpoints.kafka_bootstrap,
            "AIOS_MQTT_URL": site.endpoints.mqtt_url,
        },
    )
    await ensure_search_attributes(client, "default")
    async with build_worker(client, settings):
        yield client, queue


async def start(temporal: tuple[Client, str], payload: dict) -> WorkflowHandle:
    client, queue = temporal
    return await client.start_workflow(
        "ActionWorkflow",
        payload,
        id=payload["actionId"],
        task_queue=queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )


async def test_a_webhook_action_runs_once_and_every_step_is_audited(
    temporal, receiver, site
) -> None:
    payload = request({"name": "notify", "type": "webhook", "target": f"{receiver.url}/hooks/air"})
    handle = await start(temporal, payload)
    result = await handle.result()
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


async def test_approval_escalates_refuses_strangers_and_acts_once(temporal, receiver) -> None:
    payload = request(
        {
            "name": "dispatch",
            "type": "webhook",
            "target": f"{receiver.url}/dispatch",
            "approval": {
                "required": True,
                "approvers": ["alice"],
                "timeoutSeconds": 60,
                "escalation": [{"approvers": ["group:duty"], "afterSeconds": 2}],
            },
        }
    )
    handle = await start(temporal, payload)
    for _ in range(40):
        if (await handle.query("state"))["phase"] == "awaiting-approval":
            break
        await asyncio.sleep(0.25)
    await handle.signal("review", Review(approver="bob", approved=True, groups=["duty"]))
    for _ in range(40):  # until the workflow has handled the signal
        state = await handle.query("state")
        if state["refused"] or state["phase"] != "awaiting-approval":
            break
        await asyncio.sleep(0.25)
    assert state["refused"] == ["bob"], "bob is not an approver before the escalation"
    assert payload["actionId"] not in receiver.idempotency_keys()
    for _ in range(40):
        if "group:duty" in (await handle.query("state"))["allowedApprovers"]:
            break
        await asyncio.sleep(0.25)
    await handle.signal("review", Review(approver="bob", approved=True, groups=["duty"]))
    result = await handle.result()
    assert result["status"] == "executed"
    assert receiver.idempotency_keys().count(payload["actionId"]) == 1
    assert (await handle.query("state"))["review"]["approver"] == "bob"


async def test_a_rejected_action_never_runs(temporal, receiver) -> None:
    payload = request(
        {
            "name": "dispatch",
            "type": "webhook",
            "target": f"{receiver.url}/dispatch",
            "approval": {"required": True, "approvers": ["alice"]},
        }
    )
    handle = await start(temporal, payload)
    await handle.signal("review", Review(approver="alice", approved=False, reason="not now"))
    result = await handle.result()
    assert result == {"status": "rejected", "reason": "not now"}
    assert payload["actionId"] not in receiver.idempotency_keys()


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
        result = await (await start(temporal, payload)).result()
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
    first = await (await start(temporal, request(action, "s-1"))).result()
    assert first["status"] == "executed"
    second = None
    for _ in range(20):  # visibility is eventually consistent
        second = await (await start(temporal, request(action, "s-2"))).result()
        if second["status"] == "rate-limited":
            break
        await asyncio.sleep(1)
    assert second is not None and second["status"] == "rate-limited"
    assert second["executedLastHour"] >= 1
