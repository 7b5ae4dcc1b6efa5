"""``aiosctl audit trace`` on an action of the city air-quality flow: every link from the
sensor reading to the MQTT command is in the chained log, recorded by the components that
own it, with the real OPA decisions of the example Policy."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from test_operator import wait_for
from test_policy_operator import conditions

from aios.connectors import audit, kafka, opa
from aios.stack.platform import EXAMPLES
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


def publish(mqtt_url: str, topic: str, payload: bytes) -> None:
    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(host, int(port))
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def aiosctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aios.cli.main", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_trace_prints_the_whole_lineage_of_an_action(
    kubectl, operator, namespace: str, site: Site
) -> None:
    bootstrap, opa_url = site.endpoints.kafka_bootstrap, site.endpoints.opa_url
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "actuation-needs-approval.yaml"))
    wait_for(
        lambda: (
            conditions(kubectl, namespace, "actuation-needs-approval")
            .get("Ready", {})
            .get("status")
            == "True"
        )
    )
    writer = audit.AuditWriter(bootstrap)
    # What the EdgeGateway operator and the rollout record when they change things.
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
    action_id = f"{namespace}.pm25-alerting.{reading_id}"
    decision = {
        "rule": "pm25-sustained",
        "fallback": False,
        "fallbackReason": None,
        "model": {
            "call": "anomaly",
            "deployment": "pm25-anomaly",
            "version": "2024.11.2",
            "canary": True,
        },
        "score": 0.94,
        "confidence": 0.88,
        "lineage": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "eventIds": [reading_id],
            "sensors": ["aq-d7-001"],
            "gateway": "district-7",
            "configGeneration": 3,
            "filterChain": "sha256:4be1",
        },
    }
    target = "city/district-7/street-cleaning/dispatch"

    def ask(approver: str | None) -> opa.PolicyDecision:
        return asyncio.run(
            opa.authorize_action(
                opa_url,
                {
                    "kind": "Action",
                    "namespace": namespace,
                    "intent": {"name": "pm25-alerting", "labels": {}, "dataPolicy": {}},
                    "action": {
                        "name": "dispatch-street-cleaning",
                        "type": "mqtt",
                        "target": target,
                        "idempotencyKey": action_id,
                        "approvalRequired": True,
                    },
                    "decision": decision,
                    "approver": approver,
                    "recentActuations": 0,
                    "time": "2026-11-27T10:00:00Z",
                },
            )
        )

    def step(
        name: str, policy: opa.PolicyDecision | None, approver: str | None, result: dict[str, Any]
    ) -> None:
        writer.record(
            "action-step",
            f"action/{action_id}",
            {
                "actionId": action_id,
                "step": name,
                "intent": {"namespace": namespace, "name": "pm25-alerting"},
                "action": {"name": "dispatch-street-cleaning", "type": "mqtt", "target": target},
                "decision": decision,
                "policyDecisionId": policy and policy.decision_id,
                "approver": approver,
                "result": result,
            },
            actor=approver,
            policy_decision_id=policy and policy.decision_id,
            event_id=f"{action_id}:{name}",
        )

    # As the action workflow does: authorise, wait for the approval, authorise again, act.
    step("requested", None, None, {"status": "pending"})
    before = ask(None)
    assert before.allowed, "the action declares the approval it waits for"
    step("authorized", before, None, {"status": "allowed"})
    step("approved", None, "supervisor-7", {"status": "approved"})
    after = ask("supervisor-7")
    assert after.allowed and after.decision_id != before.decision_id
    publish(site.endpoints.mqtt_url, target, b'{"command": "dispatch"}')
    step("executed", after, "supervisor-7", {"status": "executed", "mqttTopic": target})

    wait_for(
        lambda: any(
            r.details.get("step") == "executed" and r.details.get("actionId") == action_id
            for r in audit.read_log(bootstrap)
        ),
        timeout=30,
    )
    traced = aiosctl("trace", action_id, "--bootstrap", bootstrap, "-o", "json")
    assert traced.returncode == 0, traced.stderr
    lineage = json.loads(traced.stdout)
    assert lineage["readings"] == {"eventIds": [reading_id], "sensors": ["aq-d7-001"]}
    assert lineage["edge"]["gateway"] == "district-7"
    assert (
        lineage["edge"]["configGeneration"] == 3 and lineage["edge"]["filterChain"] == "sha256:4be1"
    )
    assert lineage["edge"]["record"] is not None
    assert lineage["kafka"] == {"topic": topic, "partition": partition, "offset": offset}
    model = lineage["model"]
    assert (model["name"], model["version"], model["canary"]) == ("pm25-anomaly", "2024.11.2", True)
    assert (model["score"], model["confidence"]) == (0.94, 0.88)
    assert model["promotion"]["approver"] == "lead@city.example"
    assert lineage["decision"]["rule"] == "pm25-sustained" and not lineage["decision"]["fallback"]
    assert [p["decisionId"] for p in lineage["policyDecisions"]] == [
        before.decision_id,
        after.decision_id,
    ]
    assert lineage["approver"] == "supervisor-7"
    assert lineage["result"] == {"status": "executed", "mqttTopic": target}
    assert [s["step"] for s in lineage["steps"]] == [
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
        ("policy decision", before.decision_id),
        ("approver", "supervisor-7"),
    ]:
        line = next((x for x in text.stdout.splitlines() if x.startswith(label)), "")
        assert value in line, (label, text.stdout)

    assert aiosctl("trace", "no-such-action", "--bootstrap", bootstrap).returncode == 1
    verified = aiosctl("verify", "--bootstrap", bootstrap)
    assert verified.returncode == 0, verified.stdout + verified.stderr
