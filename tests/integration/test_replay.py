"""``aiosctl replay`` as a user runs it: the example intent decides a window of readings
with the example model on the real node, then the window is replayed with a stricter
threshold. The report matches what the rules, written out by hand, say of the recorded
outputs; the replay starts no action and writes nothing; bad input is named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import TopicPartition
from model_support import example, serve_example_model
from support import intent_workflows, wait_for, workflows_closed
from test_intent_e2e import aiosctl, decisions_of, deploy, produce

from aios.connectors import kafka

NAME = "pm25-alerting"
WEATHER = {"no2": 25.0, "o3": 45.0, "temperature": 14.0, "humidity": 65.0}


def the_example_intent(source: str, receiver_url: str) -> dict[str, Any]:
    """pm25-alerting as the example declares it, reading ``source``, its two actions sent
    to the test's receiver (no approval, no rate limit: every live action ends quickly)."""
    manifest = example(NAME)
    spec = manifest["spec"]
    spec["sources"] = [{"name": "readings", "kafkaTopic": source}]
    spec["models"][0]["timeoutMs"] = 2000  # the first calls to a cold server on a busy machine
    spec["topics"] = {"partitions": 3, "deletePolicy": "Delete"}
    spec["actions"] = [
        {"name": a["name"], "type": "webhook", "target": f"{receiver_url}/{a['name']}"}
        for a in spec["actions"]
    ]
    return manifest


def readings() -> list[tuple[str, bytes]]:
    """One reading per sensor (so no hysteresis links two), PM2.5 from 30 to 130 µg/m³ with
    PM10 below, near and far above it: the model's score and confidence spread wide."""
    records = []
    for pm25 in range(30, 131, 2):
        for ratio in (0.8, 1.2, 2.0):
            sensor = f"r-{pm25}-{ratio}"
            body = {
                "eventId": sensor,
                "sensorId": sensor,
                "time": datetime.now(UTC).isoformat(),
                "metrics": {"pm25": float(pm25), "pm10": pm25 * ratio, **WEATHER},
            }
            records.append((sensor, json.dumps(body).encode()))
    return records


def by_hand(decision: dict[str, Any], pm25: float, spike_above: float) -> str | None:
    """The example's rules written out, on the outputs the decision recorded: the rule
    that decides (a fallback decision stays the fallback's: the model was unsure)."""
    if decision["fallback"]:
        return decision.get("rule")
    anomaly = decision["outputs"]["anomaly"]
    score, confidence = anomaly["score"], anomaly["confidence"]
    if confidence >= 0.85 and score > 0.9 and pm25 > 75:
        return "pm25-sustained"
    if confidence >= 0.75 and score > 0.8 and pm25 > spike_above:
        return "pm25-spike"
    return None


def ends(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Every partition's end offset: what a write would move."""
    return {(s.topic, s.partition): s.end for s in kafka.spans(bootstrap, topics)}


def committed(bootstrap: str, group: str, topic: str) -> list[int]:
    consumer = kafka.consumer(group, bootstrap)
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        return [tp.offset for tp in found]
    finally:
        consumer.close()


def test_a_stricter_threshold_replayed_reports_exactly_the_changed_decisions_and_acts_not(
    kubectl, operator, namespace, receiver, site, tmp_path: Path
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    serve_example_model(kubectl, namespace)
    source = f"{namespace}.readings"
    week = {"retention.ms": str(168 * 3_600_000)}
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(source, 3, week)])
    before_window = datetime.now(UTC)
    obj = deploy(kubectl, namespace, the_example_intent(source, receiver.url))
    sent = readings()
    produce(bootstrap, source, sent)
    made = decisions_of(bootstrap, obj, len(sent))
    assert len(made) == len(sent)
    assert any(not d["fallback"] for d in made), "the model decided"
    temporal, ref = site.endpoints.temporal_address, f"{namespace}/{NAME}"
    live_actions = {d["actionId"] for d in made if d.get("actionId")}
    wait_for(lambda: set(intent_workflows(temporal, ref)) == live_actions, what="visibility")
    workflows_closed(temporal, live_actions)

    pm25 = {json.loads(v)["sensorId"]: json.loads(v)["metrics"]["pm25"] for _, v in sent}
    changed = [d for d in made if by_hand(d, pm25[d["sensorId"]], 35) != d.get("rule")]
    assert changed == [], "the rules written out agree with the runner"
    expected = [
        d
        for d in made
        if by_hand(d, pm25[d["sensorId"]], 50) != by_hand(d, pm25[d["sensorId"]], 35)
    ]
    assert 0 < len(expected) < len(made)

    stricter = tmp_path / "stricter.yaml"
    rules = example(NAME)["spec"]["rules"]
    rules[1]["when"] = "anomaly.score > 0.8 && reading.pm25 > 50"
    stricter.write_text(yaml.safe_dump({"rules": rules}))
    status = kubectl.json("get", "automationintent", NAME, "-n", namespace)["status"]
    own = [status["topics"][t] for t in ("decisions", "actions", "deadLetters", "state")]
    group = f"aios.{namespace}.{NAME}.runner"
    written, offsets, calls = (
        ends(bootstrap, own),
        committed(bootstrap, group, source),
        len(receiver.calls),
    )

    since = (before_window - timedelta(minutes=1)).isoformat()
    result = aiosctl(
        site, "replay", f"intent/{NAME}", "-n", namespace, "--since", since,
        "--rules", str(stricter), "-o", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["readings"] == report["compared"] == len(sent)
    assert report["changed"] == len(expected)
    (change,) = report["changes"]
    assert change["before"] == {"rule": "pm25-spike", "action": "notify-health-office"}
    assert change["after"] == {} and change["count"] == len(expected)
    assert {e["sensorId"] for e in change["examples"]} <= {d["sensorId"] for d in expected}
    spike = next(r for r in report["rules"] if r["rule"] == "pm25-spike")
    assert spike["before"] - spike["after"] == len(expected)
    notify = next(a for a in report["actions"] if a["action"] == "notify-health-office")
    assert notify["removedCount"] == len(expected) and notify["addedCount"] == 0
    assert set(notify["removed"]) <= {d["actionId"] for d in expected}

    assert ends(bootstrap, own) == written, "the replay wrote nothing to the intent's topics"
    assert committed(bootstrap, group, source) == offsets, "nor moved its runners' offsets"
    assert len(receiver.calls) == calls, "no action ran"
    assert set(intent_workflows(temporal, ref)) == live_actions, "no action workflow started"

    gate = aiosctl(
        site, "replay", f"intent/{NAME}", "-n", namespace, "--since", since,
        "--rules", str(stricter), "--max-change", "1%",
    )  # fmt: skip
    assert gate.returncode == 1, gate.stderr
    assert "more than --max-change 1.0%" in gate.stderr
    assert "pm25-spike → notify-health-office" in gate.stdout

    webhooks_approved = Path(__file__).parents[1] / "data" / "webhooks-need-approval.yaml"
    judged = aiosctl(
        site, "replay", f"intent/{NAME}", "-n", namespace, "--since", since,
        "--policy", str(webhooks_approved), "-o", "json",
    )  # fmt: skip
    assert judged.returncode == 0, judged.stderr
    verdict = json.loads(judged.stdout)
    assert verdict["changed"] == 0, "the live spec decides as it did"
    assert verdict["deniedCount"] == len(live_actions), "each of them: a webhook, no approval"

    events = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={NAME}"
    )["items"]
    replayed = {e["reason"]: e for e in events if e["source"].get("component") == "aiosctl"}
    assert set(replayed) == {"Replayed", "ReplayExceededMaxChange"}
    assert any(
        f"{len(expected)} of {len(sent)} decisions" in e["message"]
        for e in events
        if e["reason"] == "Replayed"
    )
    assert replayed["ReplayExceededMaxChange"]["type"] == "Warning"
    kept = kubectl.json("get", "intentreplays", "-n", namespace, "-l", f"aios.dev/intent={NAME}")
    specs = sorted(
        (r["spec"]["changed"], r["spec"]["exceeded"], r["spec"].get("maxChange"))
        for r in kept["items"]
    )
    assert specs == [(0, False, None), (len(expected), False, None), (len(expected), True, 0.01)]
    owner = kubectl.json("get", "automationintent", NAME, "-n", namespace)["metadata"]["uid"]
    assert {r["metadata"]["ownerReferences"][0]["uid"] for r in kept["items"]} == {owner}

    stable = kubectl.json("get", "md", "pm25-anomaly", "-n", namespace)["status"]["stable"]
    served = aiosctl(
        site, "replay", f"intent/{NAME}", "-n", namespace, "--since", since,
        "--model", f"md/pm25-anomaly@{stable['version']}", "-o", "json",
    )  # fmt: skip
    assert served.returncode == 0, served.stderr
    again = json.loads(served.stdout)
    assert again["candidate"] == f"modeldeployment/pm25-anomaly@{stable['version']}"
    assert (again["compared"], again["changed"]) == (len(sent), 0), "its answers, again"
    jobs = kubectl.json("get", "jobs", "-n", namespace)["items"]
    assert not [j for j in jobs if not j["metadata"].get("deletionTimestamp")], "removed after"
    assert len(receiver.calls) == calls, "no action ran"

    bad_inputs = {
        ("intent/nope", "--since", "1h"): f"automationintent {namespace}/nope not found",
        (f"intent/{NAME}", "--since", "2h", "--until", "90m"): "no readings on",
        (f"intent/{NAME}", "--since", "1h", "--model", "md/pm25-anomaly@9.9.9"): (
            f"modeldeployment/pm25-anomaly serves no version 9.9.9 (it serves stable "
            f"{stable['version']})"
        ),
        (f"intent/{NAME}", "--since", "1h", "--model", "md/pm25-forecast@1"): (
            f"intent {NAME} calls no model of modeldeployment/pm25-forecast"
        ),
    }
    for args, message in bad_inputs.items():
        refused = aiosctl(site, "replay", *args, "-n", namespace)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"rules": [{"name": "r", "when": "reading.pm25 >"}]}))
    refused = aiosctl(site, "replay", f"intent/{NAME}", "-n", namespace, "--since", "1h",
                      "--rules", str(broken))  # fmt: skip
    assert refused.returncode == 2 and "rules.0.action" in refused.stderr, refused.stderr

    # Retention (168 h) removed what came first: the window reaches back past it.
    admin = kafka.admin(bootstrap)
    for future in admin.delete_records([TopicPartition(source, 0, 1)]).values():
        future.result(30)
    gone = aiosctl(site, "replay", f"intent/{NAME}", "-n", namespace, "--since", "8d")
    assert gone.returncode == 2, gone.stderr
    assert f"{source} keeps readings for 168 h" in gone.stderr
