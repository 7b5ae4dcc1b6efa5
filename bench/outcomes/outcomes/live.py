"""The year through aios, on a running site: the device's readings enter an edge gateway
in time order, an AutomationIntent asks the calibration model served on Triton and alerts
when NO2 is judged above the limit; the reference station's values arrive a day later on
a Kafka topic of their own, and when the served model's error against them drifts, a
retrained version is rolled out through the ModelDeployment (canary, analysis, promotion).

Time is accelerated: one hour of data every ``seconds_per_hour`` of wall time, each
reading stamped with the wall time it is sent at (the gateway and the runner judge
staleness by it) and mapped back to its hour by that stamp. While a new version rolls out
the year pauses, so no hour is decided during it; what the rollout took in wall time is
reported as its cost. Only the device's channels are sent: no reference value has a way
into a reading."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any, TypeVar

import yaml
from confluent_kafka import Consumer, Producer

from aios.api.events import Decision
from aios.connectors import kafka
from aios.connectors.model_server import load_module
from aios.connectors.topics import TopicSpec
from aios.stack.models import SOURCES
from aios.stack.process import ManagedProcess, free_port
from aios.stack.sink import Handler as AlertReceiver
from aios.stack.site import Site, http_ok
from outcomes import drift
from outcomes.baselines import FIRST_TWO_MONTHS, NO2_SENSOR, first_month_line
from outcomes.calibration import Calibration
from outcomes.year import DEVICE, NO2_LIMIT, Hour, published_by

METRICS = {
    "PT08_S1_CO": "pt08_s1_co",
    "PT08_S2_NMHC": "pt08_s2_nmhc",
    "PT08_S3_NOx": "pt08_s3_nox",
    "PT08_S4_NO2": "pt08_s4_no2",
    "PT08_S5_O3": "pt08_s5_o3",
    "T": "temperature",
    "RH": "humidity",
    "AH": "abs_humidity",
}
"""The device's channels as the gateway names them (``reading.<name>`` in rules)."""
FEATURES = [METRICS[name] for name in DEVICE]
GATEWAY, SENSOR = "uci-roadside", "uci-device"
DEPLOYMENT, INTENT, CALL = "no2-calibration", "no2-exceedance", "calibration"
ALERT, REVIEW = "no2-alert", "no2-review"
"""The actions: an alert the model is sure of, and one a person reviews first."""
MIN_CONFIDENCE = 0.8
"""Below it the model is unsure, and the deterministic fallback decides, for review."""
PART_OF = {"app.kubernetes.io/part-of": "outcomes"}
EVERY_DECISION = {"idempotencyWindowSeconds": 0}
ENDED = ("Promoted", "RolledBack", "Aborted")
BUILD = load_module(SOURCES / "build.py", "aios_model_build")
"""The example models' build, whose repository layout Triton serves."""
T = TypeVar("T")


def until(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``probe`` until it answers something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"{what} (after {timeout:.0f} s)")


def version_of(moment: datetime) -> str:
    return f"{moment:%Y.%m.%d}"


# -- the manifests ---------------------------------------------------------------------
def gateway(readings_topic: str) -> dict[str, Any]:
    """The roadside gateway: one device, its eight channels, ranges nothing real leaves."""
    sensor_range = {"min": 0, "max": 5000}
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "EdgeGateway",
        "metadata": {"name": GATEWAY, "labels": PART_OF},
        "spec": {
            "site": GATEWAY,
            "sensors": [{"id": SENSOR, "metrics": FEATURES}],
            "filters": [
                {
                    "validate": {
                        "ranges": {
                            **{m: sensor_range for m in FEATURES[:5]},
                            "temperature": {"min": -40, "max": 60},
                            "humidity": {"min": 0, "max": 100},
                            "abs_humidity": {"min": 0, "max": 10},
                        },
                        "maxAgeSeconds": 3600,
                    }
                }
            ],
            "sink": {"kafkaTopic": readings_topic},
        },
    }


def model_deployment(version: str, uri: str) -> dict[str, Any]:
    """The calibration model on Triton; a new version goes out as a short canary judged
    on its errors and latency (its estimates are meant to differ: no drift gate)."""
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": DEPLOYMENT, "labels": PART_OF},
        "spec": {
            "model": {
                "name": DEPLOYMENT,
                "version": version,
                "storageUri": uri,
                "format": "python",
            },
            "runtime": "triton",
            "resources": {"cpu": "100m", "memory": "512Mi"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
            "rollout": {
                "strategy": "canary",
                "steps": [{"weight": 50, "pauseSeconds": 2}, {"weight": 100, "pauseSeconds": 0}],
                "analysis": {
                    "maxErrorRate": 0.01,
                    "maxP99LatencyMs": 2000,
                    "maxDriftPsi": 1000,
                    "minRequests": 20,
                },
            },
            "approval": {"required": False},
        },
    }


def fallback_rule(hours: Sequence[Hour]) -> str:
    """The static threshold a city fixes from the first month (``baselines``), as CEL."""
    slope, intercept = first_month_line(hours)
    threshold = (NO2_LIMIT - intercept) / slope
    return f"reading.{METRICS[NO2_SENSOR]} {'>' if slope > 0 else '<'} {threshold:.1f}"


def intent(hours: Sequence[Hour], alerts_url: str) -> dict[str, Any]:
    """Alert when the calibration model is sure NO2 is above the limit; when it is unsure,
    stale or down, the static threshold decides and a person reviews its alert."""
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "AutomationIntent",
        "metadata": {"name": INTENT, "labels": PART_OF},
        "spec": {
            "sources": [{"name": "roadside", "edgeGatewaySelector": {"matchLabels": PART_OF}}],
            "topics": {"partitions": 1, "deletePolicy": "Delete"},
            "models": [
                {
                    "name": CALL,
                    "modelDeployment": DEPLOYMENT,
                    "features": FEATURES,
                    "timeoutMs": 2000,
                }
            ],
            "rules": [
                {
                    "name": "no2-above-limit",
                    "when": f"{CALL}.no2 > {NO2_LIMIT}",
                    "minConfidence": MIN_CONFIDENCE,
                    "action": ALERT,
                }
            ],
            "fallback": [
                {"name": "static-threshold", "when": fallback_rule(hours), "action": REVIEW}
            ],
            # Every alert hour alerts: the replay runs a year in minutes, and an
            # idempotency window in wall time would merge the alerts of many hours.
            "actions": [
                {"name": ALERT, "type": "alert", "target": alerts_url, **EVERY_DECISION},
                {
                    "name": REVIEW,
                    "type": "alert",
                    "target": alerts_url,
                    **EVERY_DECISION,
                    "approval": {
                        "required": True,
                        "approvers": ["group:air-quality-leads"],
                        "timeoutSeconds": 600,
                    },
                },
            ],
            "sla": {"maxBatchSize": 64, "maxLatencyMs": 2000},
            "dataPolicy": {
                "personalData": False,
                "retentionDays": 30,
                "purpose": "Warn when roadside NO2 passes the EU hourly limit.",
                "site": GATEWAY,
            },
        },
    }


# -- the parts that run beside the site --------------------------------------------------
class ModelBucket:
    """Model versions as the city's bucket holds them, in a directory the node's pods
    read (``file://``; a city would upload to its object storage)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)

    def publish(self, version: str, model: Calibration) -> str:
        root = self.directory / DEPLOYMENT / version
        metrics = {"spreadUgM3": round(model.spread, 2), "trainedOnHours": model.trained_on}
        BUILD.write_repository(root, DEPLOYMENT, model.weights(), metrics)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        return f"file://{root}"


class Gateway:
    """``aios-edge`` on the roadside gateway, fed over HTTP."""

    def __init__(self, site: Site, namespace: str, directory: Path) -> None:
        self.http_port = free_port()
        argv = [
            str(Path(sys.executable).parent / "aios-edge"),
            f"--gateway={namespace}/{GATEWAY}",
            f"--bootstrap={site.endpoints.kafka_bootstrap}",
            f"--data-dir={directory / 'data'}",
            f"--http-port={self.http_port}",
            f"--metrics-port={free_port()}",
        ]
        env = {kafka.EXTRA_CONFIG_ENV: site.endpoints.kafka_config}
        self.process = ManagedProcess("aios-edge", argv, directory / "agent.log", env=env)

    def start(self) -> Gateway:
        self.process.start()
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        self.process.wait_healthy(lambda: http_ok(url), 60)
        return self

    def stop(self) -> None:
        self.process.stop()

    def send(self, reading: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/readings",
            data=json.dumps(reading).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # 503: it pushes back
            answer = json.loads(response.read())
        if answer["accepted"] != 1:
            raise ValueError(f"the gateway rejected {reading}: {answer['rejected']}")


class QuietReceiver(AlertReceiver):
    echo = False


class Alerts:
    """The city's alert receiver (the site's stand-in), on the host's end of the node's
    link where the action workers reach it."""

    def __init__(self, address: str) -> None:
        self.server = ThreadingHTTPServer((address, 0), QuietReceiver)
        self.url = f"http://{address}:{self.server.server_address[1]}/alerts"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


# -- the replay ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Rollout:
    """One drift-triggered rollout and what it cost."""

    at: datetime
    """The data's time when the drift was found."""
    version: str
    drift: drift.Drift
    phase: str
    seconds: float
    """Wall time from the new version's publication to the rollout's end."""


@dataclass
class Outcome:
    """What the replay decided, per hour of data."""

    alerts: dict[datetime, bool] = field(default_factory=dict)
    """Alert hours → whether a person had to review it (the fallback decided)."""
    decisions: dict[datetime, Decision] = field(default_factory=dict)
    readings: list[dict[str, Any]] = field(default_factory=list)
    """What the gateway was sent."""
    rollouts: list[Rollout] = field(default_factory=list)
    silent: int = 0
    """Hours the device measured nothing (nothing to send)."""
    seconds: float = 0.0


def first_version(year: Sequence[Hour], start: datetime) -> Calibration:
    """The version serving when the replay starts: trained on the two months of hours
    published before ``start``. At the year's start there are none, so it is trained on the
    first two months, as the calibrated-once baseline is: the one version that decides
    hours it was trained on."""
    if start <= year[0].time:
        return Calibration.train(published_by(year, year[0].time + FIRST_TWO_MONTHS))
    known = published_by(year, start)
    return Calibration.train([h for h in known if h.time >= start - FIRST_TWO_MONTHS])


class Replay:
    """Drives hours of the ``year`` through a site where aios runs (its operator
    installed), in the namespace ``namespace``."""

    def __init__(
        self,
        site: Site,
        namespace: str,
        work: Path,
        bucket: Path,
        year: Sequence[Hour],
        seconds_per_hour: float = 0.05,
    ) -> None:
        """``work``: the gateway's directory; ``bucket``: where model versions go, a
        directory the node's pods can read."""
        self.site, self.namespace = site, namespace
        self.year = year
        self.seconds_per_hour = seconds_per_hour
        self.bucket = ModelBucket(bucket)
        suffix = uuid.uuid4().hex[:6]
        self.readings_topic = f"{namespace}.uci-roadside.readings.{suffix}"
        self.labels_topic = f"{namespace}.reference-station.no2.{suffix}"
        self.alerts = Alerts(site.endpoints.host_address)
        self.gateway = Gateway(site, namespace, work / "gateway")
        self.stamps: dict[int, datetime] = {}
        """Reading time (epoch ms) → the hour it carries."""
        self.last_stamp = 0

    # kubectl --------------------------------------------------------------------------
    def apply(self, manifest: dict[str, Any]) -> None:
        self.site.kubectl(
            ["apply", "-n", self.namespace, "--server-side", "-f", "-"],
            stdin=yaml.safe_dump(manifest),
        )

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.site.get(kind, name, "-n", self.namespace)
        return found

    def _ready(self, kind: str, name: str) -> dict[str, Any] | None:
        found = self.get(kind, name)
        conditions = (found.get("status") or {}).get("conditions") or []
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        return found if ready else None

    # the run ----------------------------------------------------------------------------
    def start(self, first: Calibration, hours: Sequence[Hour]) -> dict[str, Any]:
        """Publish the first version, apply the city's objects, start the gateway; the
        intent's status (its topics) once all is Ready."""
        version = version_of(hours[0].time)
        self.apply(model_deployment(version, self.bucket.publish(version, first)))
        self.apply(gateway(self.readings_topic))
        self.apply(intent(self.year, self.alerts.url))
        admin = kafka.admin(self.site.endpoints.kafka_bootstrap)
        kafka.ensure_topics(admin, [TopicSpec(self.labels_topic, 1)])
        self.gateway.start()
        until(lambda: self._ready("modeldeployment", DEPLOYMENT), 300, f"{DEPLOYMENT} Ready")
        until(lambda: self._ready("edgegateway", GATEWAY), 180, f"{GATEWAY} Ready")
        found = until(lambda: self._ready("automationintent", INTENT), 300, f"{INTENT} Ready")
        return found

    def run(self, hours: Sequence[Hour]) -> Outcome:
        """Replay ``hours`` (consecutive hours of the year); publish each hour's reference
        values a day after it; check for drift once a day and roll out a retrained
        version on drift."""
        began = time.monotonic()
        outcome = Outcome()
        model = first_version(self.year, hours[0].time)
        intent_found = self.start(model, hours)
        decisions = Decisions(self.site, intent_found["status"]["topics"]["decisions"])
        labels = Labels(self.site, self.labels_topic)
        every = self.year
        version = version_of(hours[0].time)
        next_check = hours[0].time + drift.CHECK_EVERY
        published = 0
        paced = time.monotonic()
        try:
            for hour in hours:
                published = labels.publish(every, published, hour.time)
                if hour.time >= next_check:
                    self._wait_decided(decisions, outcome)
                    found = drift.check(
                        hour.time,
                        {
                            t: d.outputs[CALL]["no2"]
                            for t, d in outcome.decisions.items()
                            if d.model and d.model.version == version and CALL in d.outputs
                        },
                        labels.received(),
                        model.spread,
                    )
                    if found.drifted:
                        candidate = drift.retrain(every, hour.time)
                        rollout = self._roll_out(version_of(hour.time), candidate, found)
                        outcome.rollouts.append(rollout)
                        if rollout.phase == "Promoted":
                            model, version = candidate, rollout.version
                        paced = time.monotonic()
                    next_check = hour.time + drift.CHECK_EVERY
                reading = self._reading(hour)
                if reading is None:
                    outcome.silent += 1
                    continue
                paced += self.seconds_per_hour
                time.sleep(max(0.0, paced - time.monotonic()))
                self._send(reading)
                outcome.readings.append(reading)
            self._wait_decided(decisions, outcome)
        finally:
            decisions.close()
            labels.close()
        outcome.seconds = time.monotonic() - began
        return outcome

    def _reading(self, hour: Hour) -> dict[str, Any] | None:
        metrics = {METRICS[n]: v for n, v in hour.device.items() if v is not None}
        if not metrics:
            return None
        # strictly increasing, as a sensor's clock is (the gateway drops what goes back)
        stamp = max(int(time.time() * 1000), self.last_stamp + 1)
        self.stamps[stamp], self.last_stamp = hour.time, stamp
        return {"sensorId": SENSOR, "time": stamp, "metrics": metrics}

    def _send(self, reading: dict[str, Any]) -> None:
        for attempt in range(30):
            try:
                self.gateway.send(reading)
                return
            except (urllib.error.URLError, TimeoutError):  # the gateway pushes back: retry
                time.sleep(min(2.0, 0.1 * 2**attempt))
        raise RuntimeError(f"the gateway did not accept {reading}")

    def _wait_decided(self, decisions: Decisions, outcome: Outcome) -> None:
        """Until every reading sent has its decision (one per reading, exactly)."""

        def collected() -> bool:
            for decision in decisions.poll():
                hour = self.stamps[round(decision.time.timestamp() * 1000)]
                if hour in outcome.decisions:
                    raise AssertionError(f"a second decision for {hour}: {decision.decision_id}")
                outcome.decisions[hour] = decision
                if decision.outcome == "act":
                    outcome.alerts[hour] = decision.fallback
            return len(outcome.decisions) >= len(outcome.readings)

        until(collected, 300, f"decisions for all {len(outcome.readings)} readings")

    def _roll_out(self, version: str, model: Calibration, found: drift.Drift) -> Rollout:
        """Publish ``model`` as ``version``, point the ModelDeployment at it and wait for
        the rollout to end (the year pauses meanwhile)."""
        began = time.monotonic()
        self.apply(model_deployment(version, self.bucket.publish(version, model)))

        def ended() -> str | None:
            status = self.get("modeldeployment", DEPLOYMENT).get("status") or {}
            rollout = status.get("rollout") or {}
            observed = status.get("observedRolloutRevision") == rollout.get("revision")
            phase = rollout.get("phase")
            mine = rollout.get("version") == version
            return phase if phase in ENDED and observed and mine else None

        phase = until(ended, 600, f"the rollout of {DEPLOYMENT} {version} to end")
        return Rollout(found.at, version, found, phase, time.monotonic() - began)

    def close(self) -> None:
        self.gateway.stop()
        self.alerts.close()


class Decisions:
    """The intent's decisions topic, read from its start."""

    def __init__(self, site: Site, topic: str) -> None:
        config = kafka.consumer_config(
            f"outcomes-{uuid.uuid4().hex}", site.endpoints.kafka_bootstrap
        )
        self.consumer = Consumer({**config, "auto.offset.reset": "earliest"})
        self.consumer.subscribe([topic])

    def poll(self) -> list[Decision]:
        messages = self.consumer.consume(1000, 0.1)
        return [
            Decision.model_validate_json(m.value() or b"") for m in messages if m.error() is None
        ]

    def close(self) -> None:
        self.consumer.close()


class Labels:
    """The reference station: each hour's reference values on a topic of their own, a day
    after the hour (``Hour.published``); what the city has received of them."""

    def __init__(self, site: Site, topic: str) -> None:
        self.topic = topic
        bootstrap = site.endpoints.kafka_bootstrap
        self.producer = Producer(kafka.producer_config(bootstrap))
        config = kafka.consumer_config(f"outcomes-{uuid.uuid4().hex}", bootstrap)
        self.consumer = Consumer({**config, "auto.offset.reset": "earliest"})
        self.consumer.subscribe([topic])
        self.labels: dict[datetime, float] = {}
        self.sent = 0

    def publish(self, hours: Sequence[Hour], done: int, now: datetime) -> int:
        """Publish the hours from ``done`` on that are published by ``now``; how many are."""
        while done < len(hours) and hours[done].published <= now:
            hour = hours[done]
            if hour.no2 is not None:
                value = {"time": hour.time.isoformat(), "no2": hour.no2}
                self.producer.produce(self.topic, json.dumps(value).encode())
                self.sent += 1
            done += 1
        self.producer.flush(30)
        return done

    def received(self) -> dict[datetime, float]:
        """Every label published so far, as the city's consumer received it."""

        def caught_up() -> bool:
            for message in self.consumer.consume(1000, 0.1):
                if message.error() is None:
                    label = json.loads(message.value() or b"")
                    self.labels[datetime.fromisoformat(label["time"])] = float(label["no2"])
            return len(self.labels) >= self.sent

        until(caught_up, 60, f"the {self.sent} labels published")
        return self.labels

    def close(self) -> None:
        self.consumer.close()
