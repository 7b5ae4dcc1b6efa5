"""An intent deciding with a served model: the model decides while it answers; when its
server stops, the fallback rules decide and the intent says Degraded; when it is back,
the model decides again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import pytest
from model_support import ready, serve_example_model, wait_for
from support import container_pids, partitioned
from test_intent_e2e import condition, decisions_of, deploy, produce, read_all, runner_pod

from aios.connectors import kafka
from aios.operator.reconcile.model_deployment import MODEL_DEPLOYMENT

NORMAL = {
    "pm25": 12.0,
    "pm10": 20.0,
    "no2": 25.0,
    "o3": 45.0,
    "temperature": 14.0,
    "humidity": 65.0,
}
SPIKE = {**NORMAL, "pm25": 95.0, "pm10": 60.0}


def readings(prefix: str, count: int, spike_every: int = 4) -> list[tuple[str, bytes]]:
    from datetime import UTC, datetime

    return [
        (
            f"{prefix}-{i}",
            json.dumps(
                {
                    "eventId": f"{prefix}-{i}",
                    "sensorId": f"{prefix}-{i}",
                    "time": datetime.now(UTC).isoformat(),
                    "metrics": SPIKE if i % spike_every == 0 else NORMAL,
                }
            ).encode(),
        )
        for i in range(count)
    ]


def model_intent(source: str, target: str) -> dict:
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "AutomationIntent",
        "metadata": {"name": "with-model"},
        "spec": {
            "sources": [{"name": "readings", "kafkaTopic": source}],
            "topics": {"partitions": 1},
            "models": [{"name": "anomaly", "modelDeployment": "pm25-anomaly", "timeoutMs": 1000}],
            "rules": [
                {
                    "name": "spike",
                    "when": "anomaly.score > 0.8 && reading.pm25 > 35",
                    "minConfidence": 0.5,
                    "action": "notify",
                }
            ],
            "fallback": [{"name": "static", "when": "reading.pm25 > 55", "action": "notify"}],
            "actions": [{"name": "notify", "type": "webhook", "target": target}],
        },
    }


def model_server_pids(site, kubectl, namespace: str) -> list[int]:
    """The processes of every Triton container serving pm25-anomaly, seen from the host."""
    selector = f"{MODEL_DEPLOYMENT}=pm25-anomaly"
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return [pid for pod in pods for pid in container_pids(site, pod, "triton")]


@pytest.mark.fault("model server down (fallback)")
def test_the_fallback_decides_while_the_model_is_down_and_the_intent_says_so(
    kubectl, operator, namespace, receiver, site
) -> None:
    obj, source = deciding_with_the_model(kubectl, namespace, receiver, site)
    servers = model_server_pids(site, kubectl, namespace)
    assert servers, "the model server runs in a container"
    for pid in servers:  # it hangs: requests time out, the kubelet's probes too
        os.kill(pid, signal.SIGSTOP)
    try:
        the_fallback_decides(kubectl, namespace, site, obj, source)
    finally:
        for pid in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    the_model_decides_again(kubectl, namespace, site, obj, source)


@pytest.mark.fault("network partition between a runner and its model server")
def test_a_runner_cut_off_from_its_model_server_falls_back_and_recovers(
    kubectl, operator, namespace, receiver, site
) -> None:
    """The model server stays up and Ready for everyone else; only the runner's packets to
    it are dropped. Its calls time out, the fallback decides every reading once, and when
    the network heals the model decides again."""
    obj, source = deciding_with_the_model(kubectl, namespace, receiver, site)
    selector = f"{MODEL_DEPLOYMENT}=pm25-anomaly"
    servers = kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    services = kubectl.json("get", "services", "-n", namespace, "-l", selector)["items"]
    addresses = [p["status"]["podIP"] for p in servers] + [s["spec"]["clusterIP"] for s in services]
    runner = runner_pod(kubectl, namespace, "with-model")
    assert runner is not None
    with partitioned(site, runner, "runner", addresses):
        the_fallback_decides(kubectl, namespace, site, obj, source)
        assert ready(kubectl, namespace), "the model server is healthy for everyone else"
    the_model_decides_again(kubectl, namespace, site, obj, source)


def deciding_with_the_model(kubectl, namespace: str, receiver, site) -> tuple[dict, str]:
    """The example model served, an intent deciding with it (checked on 20 readings):
    the intent, and its source topic."""
    bootstrap = site.endpoints.kafka_bootstrap
    serve_example_model(kubectl, namespace)
    source = f"{namespace}.readings"
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(source, 1)])
    obj = deploy(kubectl, namespace, model_intent(source, f"{receiver.url}/model"))
    produce(bootstrap, source, readings("up", 20))
    up = decisions_of(bootstrap, obj, 20)
    assert not any(d["fallback"] for d in up), "the model decides while it answers"
    assert {d["model"]["version"] for d in up if d.get("model")} == {"2024.11.2"}
    assert {d["rule"] for d in up if d["outcome"] == "act"} == {"spike"}
    assert sum(d["outcome"] == "act" for d in up) == 5
    return obj, source


def the_fallback_decides(kubectl, namespace: str, site, obj: dict, source: str) -> None:
    """20 more readings while the model cannot answer: each decided once, by the fallback,
    and the intent says Degraded, naming the model."""
    bootstrap = site.endpoints.kafka_bootstrap
    produce(bootstrap, source, readings("down", 20))
    down = decisions_of(bootstrap, obj, 40)[20:]
    assert len(down) == 20
    assert len({d["decisionId"] for d in down}) == 20
    assert all(d["fallback"] and d["fallbackReason"] == "unavailable" for d in down)
    assert {d["rule"] for d in down if d["outcome"] == "act"} == {"static"}

    def degraded() -> dict | None:
        found = condition(
            kubectl.json("get", "automationintent", "with-model", "-n", namespace), "Degraded"
        )
        return found if found.get("status") == "True" else None

    reason = wait_for(degraded, timeout=60)
    assert reason["reason"] == "ModelUnavailable" and "anomaly" in reason["message"]


def the_model_decides_again(kubectl, namespace: str, site, obj: dict, source: str) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    decisions_topic = obj["status"]["topics"]["decisions"]

    def model_back() -> bool:
        produce(bootstrap, source, readings(f"back-{time.monotonic_ns()}", 4))
        latest = [
            json.loads(m.value()) for m in read_all(bootstrap, decisions_topic, 1, timeout=10)
        ]
        return bool(latest) and not latest[-1]["fallback"]

    wait_for(model_back, timeout=120)
    wait_for(
        lambda: (
            condition(
                kubectl.json("get", "automationintent", "with-model", "-n", namespace), "Degraded"
            ).get("status")
            == "False"
        ),
        timeout=60,
    )
