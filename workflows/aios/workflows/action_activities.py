"""The action workflow's side effects: OPA, Temporal visibility, the sinks, the records."""

from __future__ import annotations

import asyncio
import json
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from aios.api import tracing
from aios.api.base import kube_time
from aios.api.events import ActionRequest, Decision, ManualRequest
from aios.connectors import kafka
from aios.connectors.audit import AuditWriter
from aios.connectors.opa import PolicyUnavailable, authorize_action
from aios.workflows.action_io import (
    ACTION,
    AUTHORIZE,
    EXECUTED_AT,
    INTENT,
    MQTT_CONNECT_SECONDS,
    TARGET,
    ActionStep,
    Authorize,
    Verdict,
)
from aios.workflows.settings import WorkerSettings

IDEMPOTENCY_HEADER = "Idempotency-Key"
TRACER = trace.get_tracer("aios.workflows.action")


@contextmanager
def sending(system: str, operation: str, destination: str) -> Iterator[list[tuple[str, str]]]:
    """A producer span for the message an action sends; yields the trace context the
    message carries (as headers or user properties), so its consumer links to the reading
    that caused it."""
    attributes = tracing.messaging(system, operation, destination)
    name = f"{operation} {destination}"
    with TRACER.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes) as span:
        yield list(tracing.headers(span).items())


KAFKA_DELIVERY_SECONDS = 15.0
"""How long librdkafka tries to deliver an action's record before reporting it failed."""
MQTT_RETRY_SECONDS = 2.0
MQTT_CONFIRM_SECONDS = 10.0


def decision_summary(decision: Decision | None) -> dict[str, Any] | None:
    """The decision as policy and the audit trail see it: rule, model, scores, lineage
    (None for an action a person asked for)."""
    if decision is None:
        return None
    return {
        "rule": decision.rule,
        "fallback": decision.fallback,
        "model": decision.model.model_dump(mode="json", by_alias=True) if decision.model else None,
        "score": decision.score,
        "confidence": decision.confidence,
        "lineage": decision.lineage.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def manual_summary(manual: ManualRequest | None) -> dict[str, Any]:
    """Who asked for an action and why, for policy, payloads and the audit trail."""
    if manual is None:
        return {}
    return {
        "requestedBy": manual.requested_by.username,
        "reason": manual.reason,
        "manualAction": manual.manual_action,
        **({"reverts": manual.reverts} if manual.reverts else {}),
    }


def policy_input(
    request: ActionRequest, approver: str | None, recent: int, now: datetime
) -> dict[str, Any]:
    """The runtime ``Action`` input document of ``aios.connectors.opa``."""
    return {
        "kind": "Action",
        "namespace": request.intent.namespace,
        "intent": {
            "name": request.intent.name,
            "labels": request.intent_labels,
            "dataPolicy": request.data_policy,
        },
        "action": {
            "name": request.action.name,
            "type": request.action.type,
            "target": request.action.target,
            "idempotencyKey": request.action_id,
            "approvalRequired": request.action.approval.required,
        },
        "decision": decision_summary(request.decision),
        **manual_summary(request.manual),
        "approver": approver,
        "recentActuations": recent,
        "time": now.isoformat(),
    }


def payload_fields(request: ActionRequest, approver: str | None) -> dict[str, Any]:
    """What a ``payloadTemplate`` may use as ``$name``."""
    decision, manual = request.decision, request.manual
    fields = {
        "actionId": request.action_id,
        "namespace": request.intent.namespace,
        "intent": request.intent.name,
        "action": request.action.name,
        "sensorId": request.sensor_id,
        "approver": approver or "",
        "requestedBy": manual.requested_by.username if manual else "",
        "reason": manual.reason if manual else "",
        "reverts": (manual.reverts or "") if manual else "",
    }
    if decision is None:
        assert manual is not None  # one of the two (ActionRequest's invariant)
        time = manual.requested_at
        return {
            **fields,
            "rule": "",
            "fallback": "false",
            "eventId": "",
            "score": "",
            "confidence": "",
            "time": time.isoformat(),
        }
    return {
        **fields,
        "rule": decision.rule or "",
        "fallback": str(decision.fallback).lower(),
        "eventId": decision.event_id,
        "score": "" if decision.score is None else f"{decision.score:.4f}",
        "confidence": "" if decision.confidence is None else f"{decision.confidence:.4f}",
        "time": decision.time.isoformat(),
    }


def render_payload(request: ActionRequest, approver: str | None) -> bytes:
    """The template with ``$fields`` substituted, or a JSON summary of the decision."""
    fields = payload_fields(request, approver)
    template = request.action.payload_template
    if template is not None:
        return string.Template(template).safe_substitute(fields).encode()
    model = request.decision.model if request.decision else None
    return json.dumps(
        {**fields, "model": model.model_dump(by_alias=True) if model else None}
    ).encode()


def step_details(request: ActionRequest, step: ActionStep) -> dict[str, Any]:
    """The ``details`` of an ``action-step`` audit record (what ``aiosctl audit trace`` reads)."""
    decision = request.decision
    summary = decision_summary(decision)
    return {
        "actionId": request.action_id,
        "step": step.step,
        "intent": {
            "namespace": request.intent.namespace,
            "name": request.intent.name,
            "generation": request.intent.generation,
        },
        "action": {
            "name": request.action.name,
            "type": request.action.type,
            "target": request.action.target,
        },
        "decision": {
            **summary,
            "decisionId": decision.decision_id,
            "fallbackReason": decision.fallback_reason,
            "lineage": {**summary["lineage"], "sensors": [decision.sensor_id]},
        }
        if decision is not None and summary is not None
        else None,
        **manual_summary(request.manual),
        "policyDecisionId": step.policy_decision_id,
        "approver": step.approver,
        "result": step.result,
        **({"policyInput": step.policy_input} if step.policy_input is not None else {}),
    }


class ActionActivities:
    """Activities bound to the worker's settings (OPA, Kafka, MQTT addresses)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.env = settings.env
        self.audit = AuditWriter(settings.env.get(kafka.BOOTSTRAP_ENV))
        self._producer: kafka.AcknowledgedProducer | None = None

    def _kafka(self) -> kafka.AcknowledgedProducer:
        if self._producer is None:
            self._producer = kafka.AcknowledgedProducer(
                kafka.producer(
                    self.env.get(kafka.BOOTSTRAP_ENV),
                    **{"linger.ms": 0, "message.timeout.ms": int(KAFKA_DELIVERY_SECONDS * 1000)},
                )
            )
        return self._producer

    def all(self) -> list[Callable[..., Any]]:
        return [self.authorize, self.recent_executions, self.execute, self.record]

    @activity.defn(name=AUTHORIZE)
    async def authorize(self, ask: Authorize) -> Verdict:
        request = ask.request
        recent = await _count(
            activity.client(), f"{TARGET.name} = {_quote(request.action.target[:200])}"
        )
        asked = policy_input(request, ask.approver, recent, datetime.now(UTC))
        try:
            decision = await authorize_action(self.env["AIOS_OPA_URL"], asked)
        except PolicyUnavailable as error:
            raise ApplicationError(
                f"OPA cannot answer: {error}", type="PolicyUnavailable"
            ) from error
        return Verdict(
            allowed=decision.allowed,
            decision_id=decision.decision_id,
            reasons=decision.reasons,
            warnings=decision.warnings,
            input=asked,
        )

    @activity.defn(name="aios.action.recent-executions")
    async def recent_executions(self, request: ActionRequest) -> int:
        intent = f"{request.intent.namespace}/{request.intent.name}"
        return await _count(
            activity.client(),
            f"{INTENT.name} = {_quote(intent)} AND {ACTION.name} = {_quote(request.action.name)}",
        )

    @activity.defn(name="aios.action.execute")
    async def execute(self, step: ActionStep) -> dict[str, Any]:
        request = step.request
        body = render_payload(request, step.approver)
        action = request.action
        if action.type == "webhook":
            return await self._post(action.target, body, request.action_id)
        if action.type == "alert":
            alert = [
                {
                    "labels": {
                        "alertname": action.name,
                        "namespace": request.intent.namespace,
                        "intent": request.intent.name,
                        "sensor": request.sensor_id,
                        "severity": "warning",
                    },
                    "annotations": {
                        "summary": body.decode(errors="replace"),
                        "actionId": request.action_id,
                    },
                }
            ]
            return await self._post(action.target, json.dumps(alert).encode(), request.action_id)
        if action.type == "mqtt":
            return await self._mqtt(action.target, body, request.action_id)
        return await asyncio.to_thread(self._produce, action.target, body, request.action_id)

    async def _post(self, url: str, body: bytes, key: str) -> dict[str, Any]:
        """The action's HTTP call, as a client span whose context the receiver gets in
        ``traceparent`` (an alert links back to the reading that caused it)."""
        attributes = {"http.request.method": "POST", "url.full": url}
        with TRACER.start_as_current_span(
            "POST", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(
                    url,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        IDEMPOTENCY_HEADER: key,
                        **tracing.headers(span),
                    },
                )
            span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise ApplicationError(f"{url} answered {response.status_code}")  # retried
        if response.status_code >= 400:
            raise ApplicationError(
                f"{url} refused the action: {response.status_code} {response.text[:200]}",
                type="ActionRejected",
                non_retryable=True,
            )
        return {"status": "executed", "httpStatus": response.status_code}

    async def _mqtt(self, topic: str, body: bytes, key: str) -> dict[str, Any]:
        """At most once: the broker is retried while nothing has left (heartbeating, up to
        ``MQTT_CONNECT_SECONDS``); the command is published once, at QoS 2, and never
        again, even when its confirmation is lost (the workflow does not retry this)."""
        deadline = time.monotonic() + MQTT_CONNECT_SECONDS
        while True:
            try:
                client = await asyncio.to_thread(self._mqtt_connect, key)
                break
            except OSError as error:
                if time.monotonic() > deadline:
                    raise ApplicationError(
                        f"MQTT broker unreachable for {MQTT_CONNECT_SECONDS:.0f}s: {error};"
                        " the command was not sent",
                        non_retryable=True,
                    ) from error
                activity.heartbeat(f"connecting: {error}")
                await asyncio.sleep(MQTT_RETRY_SECONDS)
        return await asyncio.to_thread(self._mqtt_publish, client, topic, body, key)

    def _mqtt_connect(self, key: str) -> Any:
        """A connected client (OSError while the broker cannot be reached)."""
        import paho.mqtt.client as mqtt

        broker = urlsplit(self.env["AIOS_MQTT_URL"])
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"aios-action-{key}"[:64],
            protocol=mqtt.MQTTv5,
        )
        client.connect(broker.hostname or "127.0.0.1", broker.port or 1883, keepalive=10)
        return client

    @staticmethod
    def _mqtt_publish(client: Any, topic: str, body: bytes, key: str) -> dict[str, Any]:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client.loop_start()
        try:
            with sending("mqtt", "publish", topic) as context:
                properties = Properties(PacketTypes.PUBLISH)
                properties.UserProperty = [(IDEMPOTENCY_HEADER, key), *context]
                info = client.publish(topic, body, qos=2, properties=properties)
                info.wait_for_publish(timeout=MQTT_CONFIRM_SECONDS)
            if not info.is_published():
                raise ApplicationError(
                    f"the MQTT broker did not confirm the command on {topic}; it may have"
                    " arrived and is not sent again",
                    non_retryable=True,
                )
        finally:
            client.loop_stop()
            client.disconnect()
        return {"status": "executed", "mqttTopic": topic}

    def _produce(self, topic: str, body: bytes, key: str) -> dict[str, Any]:
        """Lands once per attempt (an idempotent producer); a retry follows only a definite
        failure, and the key (also the ``Idempotency-Key`` header) lets a consumer drop the
        copy a lost acknowledgement can still cause."""
        try:
            with sending("kafka", "send", topic) as context:
                headers: list[tuple[str, str | bytes | None]] = [
                    (IDEMPOTENCY_HEADER, key.encode()),
                    *context,
                ]
                self._kafka().send(topic, body, key.encode(), None, headers=headers)
        except kafka.NotDelivered as error:
            raise ApplicationError(f"Kafka did not take the record on {topic}: {error}") from error
        return {"status": "executed", "kafkaTopic": topic}

    @activity.defn(name="aios.action.record")
    async def record(self, step: ActionStep) -> None:
        request = step.request
        details = step_details(request, step)
        await asyncio.to_thread(
            self.audit.record,
            "action-step",
            f"action/{request.action_id}",
            details,
            actor=step.approver
            or (request.manual.requested_by.username if request.manual else None),
            policy_decision_id=step.policy_decision_id,
            trace_id=request.trace_id,
            event_id=f"{request.action_id}:{step.step}",
        )
        if request.actions_topic:
            lifecycle = json.dumps({**details, "time": datetime.now(UTC).isoformat()}).encode()
            await asyncio.to_thread(
                self._produce, request.actions_topic, lifecycle, request.action_id
            )


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def _count(client: Client, query: str) -> int:
    """Actions executed in the last hour that match ``query`` (Temporal visibility)."""
    since = kube_time(datetime.now(UTC) - timedelta(hours=1))
    found = await client.count_workflows(f"{query} AND {EXECUTED_AT.name} > '{since}'")
    return int(found.count)
