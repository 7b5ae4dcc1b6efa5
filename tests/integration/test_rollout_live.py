"""A canary judged on the readings it served. The new version rejects a zero pollutant
reading (ozone at night), which no synthetic probe ever is: it answers every probe, but
fails on the example intent's live night-time readings. The analysis asks the site's
Prometheus what the runner measured of each version, and rolls the canary back on that;
meanwhile the stable version answers what the canary could not, so no reading falls back."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from model_support import (
    ENDED,
    STABLE,
    apply,
    canary_steps,
    edited_repository,
    eventually,
    phase,
    rolled_out,
    status,
)
from support import cluster_url
from test_intent_e2e import deploy
from test_prometheus import api
from test_replay import WEATHER, the_example_intent

from aios.connectors import kafka
from aios.connectors.inference import InferenceClient
from aios.workflows.analysis import probe_inputs

NIGHT_BLIND = "2024.12.0-night"
STEP_SECONDS = 30
GUARD = "    x = np.asarray(x, dtype=np.float64)\n"


def rejects_zero_readings(text: str) -> str:
    """The model, refusing any pollutant reading that is not positive."""
    assert GUARD in text
    refusal = (
        '    if (x[:, :4] <= 0).any():\n        raise ValueError("readings must be positive")\n'
    )
    return text.replace(GUARD, GUARD + refusal, 1)


FAILED_READINGS = {
    "name": "failed-readings",
    "query": 'sum(increase(aios_runner_model_answers_total{namespace="$namespace",'
    'model_deployment="$model",version="$version",outcome="error"}[$window]))',
    "max": 0,
}
"""A gate of the team's own (the built-in error-rate gate says the same, as a share)."""


def canary(version: str, uri: str = "") -> dict[str, Any]:
    steps = canary_steps([(50, STEP_SECONDS), (100, 0)])
    analysis = {"minRequests": 20, "metrics": [FAILED_READINGS]}
    return rolled_out(
        version, {"strategy": "canary", "steps": steps, "analysis": analysis}, uri=uri
    )


class NightReadings:
    """Ten readings a second from twenty sensors, fresh, with no ozone (as at night) and
    PM2.5 low enough that no rule acts."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = Producer(kafka.producer_config(bootstrap))
        self.topic = topic
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            sensor = f"night-{self.sent % 20}"
            body = {
                "eventId": f"{sensor}-{self.sent}",
                "sensorId": sensor,
                "time": datetime.now(UTC).isoformat(),
                "metrics": {
                    **WEATHER,
                    "pm25": 8.0 + self.sent % 10,
                    "pm10": 15.0 + self.sent % 10,
                    "o3": 0.0,
                },
            }
            self.producer.produce(self.topic, json.dumps(body).encode(), key=sensor.encode())
            self.producer.poll(0)
            self.sent += 1

    def start(self) -> NightReadings:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        assert self.producer.flush(30) == 0


def taking_traffic(kubectl, namespace: str) -> dict[str, Any] | None:
    found = status(kubectl, namespace)
    return found if found.get("canaryWeight") and found["canary"].get("ready") else None


async def answer_every_probe(kubectl, namespace: str) -> None:
    """The serving canary answers the analysis's own probe requests (``infer`` raises if
    one fails): judged on probes, it would pass."""
    found = await eventually(lambda: taking_traffic(kubectl, namespace), timeout=120)
    url = await asyncio.to_thread(cluster_url, kubectl, found["canary"]["grpc"])
    model = found["canary"]["model"]
    async with InferenceClient(url) as client:
        for inputs in probe_inputs(await client.metadata(model), 20):
            outputs = await client.infer(model, inputs, timeout=5)
            assert 0 <= float(outputs["score"][0]) <= 1


async def test_a_canary_failing_only_on_real_readings_is_rolled_back_on_live_traffic(
    kubectl, stable_served, operator, namespace, receiver, site, tmp_path: Path
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    stable_served(canary)
    source = f"{namespace}.readings"
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(source, 3)])
    deploy(kubectl, namespace, the_example_intent(source, receiver.url))
    readings = NightReadings(bootstrap, source).start()
    try:
        uri = edited_repository(tmp_path, "night-blind", rejects_zero_readings)
        apply(kubectl, namespace, canary(NIGHT_BLIND, uri))
        await answer_every_probe(kubectl, namespace)
        found = await eventually(lambda: phase(kubectl, namespace, *ENDED), timeout=300)
    finally:
        readings.stop()

    rollout = found["rollout"]
    assert rollout["version"] == NIGHT_BLIND and rollout["phase"] == "RolledBack", rollout
    assert [s["weight"] for s in rollout["steps"]] == [0, 50], "no step after the failed one"
    analysis = rollout["steps"][1]["analysis"]
    assert analysis["traffic"] == "live", analysis
    assert analysis["requests"] == analysis["liveRequests"] >= 20, analysis
    assert analysis["errorRate"] == pytest.approx(1.0, abs=0.05), analysis
    assert analysis["stableP99LatencyMs"] is not None, "the stable version's live latency"
    assert rollout["message"].startswith("step 1 analysis failed on live traffic: error rate")
    failed_readings = analysis["metrics"]["failed-readings"]
    assert (
        failed_readings > 0
        and f"metric failed-readings {failed_readings:.4g} above 0" in (analysis["reasons"])
    )
    assert found["activeVersion"] == STABLE and "canary" not in found
    described = kubectl("describe", "modeldeployment", "pm25-anomaly", "-n", namespace)
    assert "failed on live traffic" in described and "live traffic: " in described
    assert not receiver.calls, "no night reading called for an action"
    decided = f'aios_runner_decisions_total{{namespace="{namespace}"}}'
    by_kind = {
        r["metric"]["fallback"]: float(r["value"][1])
        for r in api(site, "query", query=f"sum by (fallback) ({decided})")["result"]
    }
    assert by_kind.get("false", 0) > 0 and by_kind.get("true", 0) == 0, (
        "what the canary could not answer the stable version did: no reading fell back"
    )
