"""One trace per reading, in the site's Jaeger: a reading posted to an edge agent with its
sender's trace context is decided by a model and acted on, and the spans of every step —
the edge agent's ingest, filter chain and send, the runner's processing and model call,
the action workflow, its policy check and its webhook — are one trace with intact parent
links, which the action's audit trail names (``aiosctl audit trace``). A command sent to
Kafka or MQTT carries its trace too."""

from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from model_support import serve_example_model
from support import wait_for
from test_audit_log import aiosctl
from test_edge_agent import PLAIN, agent_factory, configured, read_topic, unique, wait_applied
from test_intent_e2e import deploy
from test_intent_models import SPIKE, model_intent

from aios.connectors import kafka
from aios.stack.platform import EXAMPLES, site_environment
from aios.stack.release import LOCAL_SAMPLER_RATIO
from aios.workflows.action_io import AUTHORIZE

__all__ = ["agent_factory", "unique"]  # fixtures this module's tests use

EDGE, RUNNER, WORKER, OPERATOR = "aios-edge", "aios-intent-runner", "aios-worker", "aios-operator"


def sampled_trace_id() -> str:
    """A new trace id the site's ratio sampler keeps: its low half is under the ratio's
    bound (OpenTelemetry's TraceIdRatioBased compares the low 64 bits)."""
    bound = int(LOCAL_SAMPLER_RATIO * (1 << 64))
    return f"{secrets.randbits(64):016x}{secrets.randbelow(bound):016x}"


def jaeger_trace(url: str, trace_id: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/api/traces/{trace_id}", timeout=5) as response:
            data = json.loads(response.read())["data"]
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    return data[0] if data else None


def spans_by_service(found: dict[str, Any]) -> dict[str, list[str]]:
    services: dict[str, list[str]] = {}
    for span in found["spans"]:
        service = found["processes"][span["processID"]]["serviceName"]
        services.setdefault(service, []).append(span["operationName"])
    return services


KAFKA_PM25, MQTT_PM25 = 800.0, 500.0


def with_sinks(intent: dict[str, Any], commands: str, barriers: str) -> dict[str, Any]:
    """``intent`` with a Kafka action for readings over ``KAFKA_PM25`` and an MQTT one over
    ``MQTT_PM25``, decided before its own rules (and fallback)."""
    spec = intent["spec"]
    first = [
        {"name": "to-kafka", "when": f"reading.pm25 >= {KAFKA_PM25}", "action": "command"},
        {"name": "to-mqtt", "when": f"reading.pm25 >= {MQTT_PM25}", "action": "barrier"},
    ]
    spec["rules"][:0] = first
    spec["fallback"][:0] = first
    spec["actions"] += [
        {"name": "command", "type": "kafka", "target": commands},
        {"name": "barrier", "type": "mqtt", "target": barriers},
    ]
    return intent


class MqttSubscriber:
    """The messages published on ``topic`` (MQTT 5, so user properties arrive)."""

    def __init__(self, url: str, topic: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.messages: list[mqtt.MQTTMessage] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, message: self.messages.append(message)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(host, int(port))
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(10), "the broker acknowledged no subscription"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def post(agent: Any, sensor: str, metrics: dict[str, float]) -> str:
    """Post one reading to the edge agent under a new sampled trace; its trace id."""
    trace_id = sampled_trace_id()
    reading = {"sensorId": sensor, "time": datetime.now(UTC).isoformat(), "metrics": metrics}
    status, _ = agent.post([reading], {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    assert status == 202
    return trace_id


def worker_spans(url: str, trace_id: str) -> list[str]:
    found = jaeger_trace(url, trace_id)
    return spans_by_service(found).get(WORKER, []) if found else []


def expected_spans(sink: str) -> dict[str, set[str]]:
    """The spans each service adds to a reading's trace (those a test waits for)."""
    return {
        EDGE: {"ingest", "filter chain", f"send {sink}"},
        RUNNER: {f"process {sink}", "infer anomaly", "decide", "StartWorkflow:ActionWorkflow"},
        WORKER: {
            "RunWorkflow:ActionWorkflow",
            f"RunActivity:{AUTHORIZE}",
            "RunActivity:aios.action.execute",
            "POST",
        },
    }


def missing(found: dict[str, Any] | None, expected: dict[str, set[str]]) -> dict[str, set[str]]:
    """What ``expected`` names that the trace does not hold yet (every process exports in
    its own batches, so the spans arrive in any order)."""
    services = spans_by_service(found) if found else {}
    gaps = {s: names - set(services.get(s, [])) for s, names in expected.items()}
    return {s: names for s, names in gaps.items() if names}


def test_one_reading_is_one_trace_from_the_edge_to_the_webhook(
    site, operator, kubectl, namespace, receiver, agent_factory, unique
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    serve_example_model(kubectl, namespace)
    name, sink = configured(bootstrap, "http", unique, PLAIN)
    commands, barriers = f"city.commands.{unique}", f"city/barriers/{unique}"
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(commands, 1, {})])
    deploy(
        kubectl,
        namespace,
        with_sinks(model_intent(sink, f"{receiver.url}/traced"), commands, barriers),
    )
    subscriber = MqttSubscriber(site.endpoints.mqtt_url, barriers)
    agent = agent_factory(
        name,
        bootstrap,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": site.endpoints.otlp_url,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(LOCAL_SAMPLER_RATIO),
        },
    ).start()
    wait_applied(agent, 1)
    trace_id = post(agent, "aq-traced", SPIKE)

    wait_for(lambda: any(p == "/traced" for p, _, _ in receiver.calls), what="the webhook")
    [(_, headers, _)] = [c for c in receiver.calls if c[0] == "/traced"]
    assert headers["traceparent"].split("-")[1] == trace_id, "the webhook carries the trace"

    expected = expected_spans(sink)
    latest: list[dict[str, Any] | None] = [None]

    def whole() -> dict[str, Any] | None:
        latest[0] = jaeger_trace(site.endpoints.jaeger_url, trace_id)
        return latest[0] if not missing(latest[0], expected) else None

    found = wait_for(
        whole, what=lambda: f"trace {trace_id} in Jaeger, missing {missing(latest[0], expected)}"
    )
    assert sorted(spans_by_service(found)[EDGE]) == sorted(expected[EDGE]), "each edge span once"
    ids = {span["spanID"] for span in found["spans"]}
    roots = [s for s in found["spans"] if not s["references"]]
    assert [r["operationName"] for r in roots] == ["ingest"], "one root: the edge's ingest"
    for span in found["spans"]:
        for reference in span["references"]:
            assert reference["traceID"] == trace_id
            assert reference["spanID"] in ids, f"{span['operationName']}'s parent is missing"
    for span in found["spans"]:
        tags = {t["key"]: t["value"] for t in found["processes"][span["processID"]]["tags"]}
        assert tags.get("aios.site"), f"{span['operationName']} names no site"

    action_id = headers["Idempotency-Key"]
    traced = aiosctl("trace", action_id, "--bootstrap", bootstrap, env=site_environment(site))
    assert traced.returncode == 0, traced.stderr
    [line] = [x for x in traced.stdout.splitlines() if x.startswith("trace ")]
    assert f"{site.endpoints.jaeger_url}/api/traces/{trace_id}" in line

    # The Kafka and MQTT sinks: the message carries the trace, its send is a span of it.
    to_kafka = post(agent, "aq-traced-k", {**SPIKE, "pm25": KAFKA_PM25})
    to_mqtt = post(agent, "aq-traced-m", {**SPIKE, "pm25": MQTT_PM25})
    [record] = read_topic(bootstrap, commands, 1, 120)
    carried = dict(record.headers() or [])
    assert carried["traceparent"].decode().split("-")[1] == to_kafka
    message = wait_for(lambda: subscriber.messages, what="the MQTT command")[0]
    properties = dict(message.properties.UserProperty)
    assert properties["traceparent"].split("-")[1] == to_mqtt
    subscriber.close()
    for trace, span in ((to_kafka, f"send {commands}"), (to_mqtt, f"publish {barriers}")):
        wait_for(
            lambda t=trace, n=span: n in worker_spans(site.endpoints.jaeger_url, t),
            what=f"{span} in trace {trace}",
        )


def reconcile_spans(url: str, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
    """The operator's ``reconcile <kind>`` spans of one object in the site's Jaeger."""
    query = urllib.parse.urlencode(
        {"service": OPERATOR, "operation": f"reconcile {kind}", "limit": 500, "lookback": "1h"}
    )
    try:
        with urllib.request.urlopen(f"{url}/api/traces?{query}", timeout=10) as response:
            traces = json.loads(response.read())["data"] or []
    except urllib.error.HTTPError as error:
        if error.code == 404:  # no such service yet
            return []
        raise
    found = []
    for trace in traces:
        for span in trace["spans"]:
            tags = {t["key"]: t["value"] for t in span["tags"]}
            if (
                tags.get("aios.resource.name") == name
                and tags.get("k8s.namespace.name") == namespace
            ):
                found.append(span | {"attributes": tags})
    return found


def test_the_operator_traces_its_reconciles(site, operator, kubectl, namespace) -> None:
    """Each reconcile is a span, sampled at the site's ratio: the gateway is changed until
    one of its reconciles is kept, and that span names it, its generation and the outcome."""
    gateway = yaml.safe_load((EXAMPLES / "district-7.yaml").read_text())
    gateway["metadata"] = {"name": "traced-gateway"}  # no simulated agent
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(gateway))
    changes = iter(range(1, 10_000))

    def sampled() -> list[dict[str, Any]]:
        found = reconcile_spans(
            site.endpoints.jaeger_url, "EdgeGateway", namespace, "traced-gateway"
        )
        if not found:
            change = {"spec": {"buffer": {"maxBytes": 268435456 + next(changes)}}}
            kubectl(
                "patch",
                "edgegateway",
                "traced-gateway",
                "-n",
                namespace,
                "--type=merge",
                "-p",
                json.dumps(change),
            )
        return found

    [span, *_] = wait_for(
        sampled, timeout=300, interval=0.2, what="a sampled reconcile of the gateway"
    )
    assert span["attributes"]["aios.outcome"] in ("ready", "not_ready")
    assert span["attributes"]["aios.resource.generation"] >= 1
    assert not span["references"], "a reconcile is the root of its trace"
