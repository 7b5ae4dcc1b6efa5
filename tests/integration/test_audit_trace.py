"""``aiosctl audit trace`` on an action of the city air-quality flow: the street-cleaning
command of ``pm25-alerting`` runs through the real action workflow under the example
Policy, is approved by a supervisor and published over MQTT; the trace follows it from
the sensor reading to the result, through the chained log."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from model_support import aiosctl as cli
from test_audit_log import aiosctl
from test_operator import wait_for
from test_policy_operator import conditions
from test_policy_runtime import start, steps, worker_for

from aios.api.events import ActionRequest
from aios.connectors import audit, kafka
from aios.stack.platform import EXAMPLES, site_environment
from aios.stack.site import Site


def produce_reading(bootstrap: str, topic: str, reading: dict[str, Any]) -> tuple[int, int]:
    """A reading on the gateway's topic; its (partition, offset)."""
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(topic, 1)])
    producer = kafka.producer(bootstrap)
    delivered: list[Any] = []
    producer.produce(
        topic, json.dumps(reading).encode(), on_delivery=lambda e, m: delivered.append(m)
    )
    assert producer.flush(10) == 0 and delivered[0].error() is None
    return delivered[0].partition(), delivered[0].offset()


def dispatch_request(
    namespace: str, target: str, reading_id: str, lineage: dict[str, Any]
) -> dict[str, Any]:
    """What the intent runner hands the workflow for pm25-alerting's street cleaning."""
    intent = yaml.safe_load((EXAMPLES / "pm25-alerting.yaml").read_text())
    action = next(a for a in intent["spec"]["actions"] if a["name"] == "dispatch-street-cleaning")
    action["target"] = target
    action_id = f"{namespace}.pm25-alerting.{reading_id}"
    now = datetime.now(UTC).isoformat()
    ref = {"namespace": namespace, "name": "pm25-alerting", "generation": 1}
    return ActionRequest.model_validate(
        {
            "actionId": action_id,
            "intent": ref,
            "action": action,
            "decision": {
                "decisionId": f"{namespace}/pm25-alerting/{reading_id}",
                "intent": ref,
                "eventId": reading_id,
                "sensorId": "aq-d7-001",
                "time": now,
                "decidedAt": now,
                "outcome": "act",
                "rule": "pm25-sustained",
                "action": "dispatch-street-cleaning",
                "actionId": action_id,
                "model": {
                    "call": "anomaly",
                    "deployment": "pm25-anomaly",
                    "version": "2024.11.2",
                    "canary": True,
                },
                "score": 0.94,
                "confidence": 0.88,
                "lineage": lineage,
            },
        }
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


async def test_trace_prints_the_whole_lineage_of_an_action(
    kubectl, operator, namespace: str, site: Site
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "approvers.yaml"))
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "actuation-needs-approval.yaml"))
    await asyncio.to_thread(
        wait_for,
        lambda: (
            conditions(kubectl, namespace, "actuation-needs-approval")
            .get("Ready", {})
            .get("status")
            == "True"
        ),
    )
    # Recorded by the EdgeGateway operator and the rollout when they change things.
    writer = audit.AuditWriter(bootstrap)
    writer.record(
        "edge-config",
        f"EdgeGateway {namespace}/district-7",
        {"gateway": "district-7", "configGeneration": 3, "filterChain": "sha256:4be1"},
        actor="aios-operator",
    )
    writer.record(
        "promotion",
        f"ModelDeployment {namespace}/pm25-anomaly",
        {
            "model": {"name": "pm25-anomaly", "version": "2024.11.2", "canary": True},
            "approver": "lead@city.example",
            "reason": "canary step 10%",
        },
        actor="lead@city.example",
    )
    topic = f"aios.district-7.readings.{uuid.uuid4().hex[:6]}"
    reading_id = f"r-{uuid.uuid4().hex[:8]}"
    partition, offset = produce_reading(
        bootstrap, topic, {"eventId": reading_id, "sensorId": "aq-d7-001", "metrics": {"pm25": 91}}
    )
    lineage = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "eventIds": [reading_id],
        "gateway": "district-7",
        "configGeneration": 3,
        "filterChain": "sha256:4be1",
    }
    target = f"city/district-7/street-cleaning/{uuid.uuid4().hex[:6]}/dispatch"
    payload = dispatch_request(namespace, target, reading_id, lineage)
    action_id = payload["actionId"]

    host, port = site.endpoints.mqtt_url.removeprefix("mqtt://").split(":")
    arrived = threading.Event()
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscriber.on_message = lambda *_: arrived.set()
    subscriber.connect(host, int(port))
    subscriber.subscribe(target, qos=1)
    subscriber.loop_start()
    try:
        async with worker_for(site, site.endpoints.opa_url) as worker:
            handle = await start(worker, payload)
            for _ in range(60):
                if (await handle.query("state"))["phase"] == "awaiting-approval":
                    break
                await asyncio.sleep(0.25)
            approved = await asyncio.to_thread(
                cli,
                site,
                "approve",
                f"action/{action_id}",
                "--as",
                "supervisor-7",
                "--as-group",
                "street-cleaning-supervisors",
            )
            assert approved.returncode == 0, approved.stderr
            result = await handle.result()
        assert result["status"] == "executed", result
        assert await asyncio.to_thread(arrived.wait, 10), "the command reached the street"
    finally:
        subscriber.loop_stop()

    await asyncio.to_thread(
        wait_for, lambda: "executed" in [r.details["step"] for r in steps(site, action_id)]
    )
    traced = aiosctl("trace", action_id, "--bootstrap", bootstrap, "-o", "json")
    assert traced.returncode == 0, traced.stderr
    lineage_out = json.loads(traced.stdout)
    assert lineage_out["readings"] == {"eventIds": [reading_id], "sensors": ["aq-d7-001"]}
    edge = lineage_out["edge"]
    assert (edge["gateway"], edge["configGeneration"], edge["filterChain"]) == (
        "district-7",
        3,
        "sha256:4be1",
    )
    assert edge["record"] is not None, "the edge-config record that produced the reading"
    assert lineage_out["kafka"] == {"topic": topic, "partition": partition, "offset": offset}
    model = lineage_out["model"]
    assert (model["name"], model["version"], model["canary"]) == ("pm25-anomaly", "2024.11.2", True)
    assert (model["score"], model["confidence"]) == (0.94, 0.88)
    assert model["promotion"]["approver"] == "lead@city.example"
    assert lineage_out["decision"]["rule"] == "pm25-sustained"
    assert lineage_out["decision"]["fallback"] is False
    decisions = [p["decisionId"] for p in lineage_out["policyDecisions"]]
    assert decisions and all(decisions), "every authorised step names OPA's decision"
    assert lineage_out["approver"] == "supervisor-7"
    assert lineage_out["result"]["status"] == "executed"
    assert [s["step"] for s in lineage_out["steps"]] == [
        "requested",
        "authorized",
        "approved",
        "executed",
    ]

    text = aiosctl("trace", action_id, "--bootstrap", bootstrap)
    assert text.returncode == 0, text.stderr
    for label, value in [
        ("sensor readings", reading_id),
        ("edge gateway", "config generation 3"),
        ("kafka", f"{topic}[{partition}]@{offset}"),
        ("model", "pm25-anomaly 2024.11.2 (canary)"),
        ("decision", "rule pm25-sustained"),
        *[("policy decision", decision) for decision in decisions],
        ("approver", "supervisor-7"),
        ("result", "executed"),
    ]:
        lines = [x for x in text.stdout.splitlines() if x.startswith(label)]
        assert any(value in line for line in lines), (label, value, text.stdout)

    assert aiosctl("trace", "no-such-action", "--bootstrap", bootstrap).returncode == 1
    # the operator's pod signs the chain's head into the release's ConfigMap: verified too
    verified = aiosctl("verify", "--bootstrap", bootstrap, env=site_environment(site))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "checkpoint of seq" in verified.stdout, verified.stdout
