"""Replay, purely: a window decided again with a candidate spec, held against decisions the
runner's own code made, and the report checked against changes computed by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
import yaml

from aios.api import AutomationIntent
from aios.api.events import Decision, IntentRef, Reading
from aios.api.replay import Outcome
from aios.api.runner import RunnerConfig, RunnerTopics
from aios.runner.records import Position, decide_record
from aios.runner.replay import Recorded, Replay, ReplayError, candidate_spec, recorded_calls
from aios.runner.rules import CallResult, Decider, RuleSet

EXAMPLE = Path(__file__).parents[2] / "examples/city-air-quality/pm25-alerting.yaml"
INTENT = AutomationIntent.model_validate(yaml.safe_load(EXAMPLE.read_text()))
LIVE = RunnerConfig(
    intent=IntentRef(namespace="city", name="pm25-alerting", generation=1),
    spec=INTENT.spec,
    consumer_group="g",
    task_queue="q",
    topics=RunnerTopics(sources=["s"], decisions="d", actions="a", dead_letters="x", state="t"),
)
NOW = datetime(2026, 11, 27, 10, tzinfo=UTC)
FEATURES = {"pm10": 30.0, "no2": 20.0, "o3": 40.0, "temperature": 12.0, "humidity": 60.0}
STRICTER = {
    "rules": [
        {**rule, "when": "anomaly.score > 0.8 && reading.pm25 > 50"}
        if rule["name"] == "pm25-spike"
        else rule
        for rule in yaml.safe_load(EXAMPLE.read_text())["spec"]["rules"]
    ]
}


def value(sensor: str, pm25: float) -> bytes:
    return json.dumps(
        {
            "eventId": f"{sensor}-e",
            "sensorId": sensor,
            "time": NOW.isoformat(),
            "metrics": {"pm25": pm25, **FEATURES},
        }
    ).encode()


def window() -> list[tuple[Position, bytes, float, float]]:
    """60 sensors, one reading each (no hysteresis between them): pm25 and score spread."""
    return [
        (Position("s", i % 3, i // 3), value(f"s{i}", 20.0 + 2 * i), 0.75 + (i % 5) * 0.05, 0.9)
        for i in range(60)
    ]


def live_decisions(
    records: list[tuple[Position, bytes, float, float]], decided: datetime = NOW
) -> dict[Position, Decision]:
    """What the live runner's own code decided on ``records``."""
    decider = Decider(RuleSet.compile(LIVE.spec))
    made = {}
    for position, raw, score, confidence in records:
        reading = Reading.model_validate_json(raw)
        calls = {"anomaly": CallResult("ok", {"score": score, "confidence": confidence})}
        verdict = decider.decide(reading, calls, decided)
        made[position] = decide_record(LIVE, position, reading, verdict, calls, {}, decided)
    return made


def by_hand(pm25: float, score: float, spike_above: float) -> str | None:
    """The example's rules written out: the rule that decides (confidence is 0.9)."""
    if score > 0.9 and pm25 > 75:
        return "pm25-sustained"
    if score > 0.8 and pm25 > spike_above:
        return "pm25-spike"
    return None


def replayed(spec: dict, records=None, made=None):
    return replaying(spec, records, made).report(NOW - timedelta(hours=1), NOW, "test")


def replaying(spec: dict, records=None, made=None) -> Replay:
    records = records if records is not None else window()
    made = made if made is not None else live_decisions(records)
    replay = Replay(LIVE, candidate_spec(LIVE.spec, spec))
    for position, raw, _, _ in records:
        decision = made.get(position)
        replay.add(position, raw, None if decision is None else Recorded.of(decision))
    return replay


def test_the_live_spec_changes_nothing() -> None:
    report = replayed({})
    assert (report.readings, report.compared, report.changed) == (60, 60, 0)
    assert report.changes == [] and all(t.before == t.after for t in report.rules)
    assert all(a.added_count == a.removed_count == 0 for a in report.actions)


def test_a_stricter_threshold_changes_what_the_rules_written_out_say() -> None:
    records = window()
    report = replayed(STRICTER, records)
    expected = []
    for _, raw, score, _ in records:
        pm25 = json.loads(raw)["metrics"]["pm25"]
        if by_hand(pm25, score, 35) != by_hand(pm25, score, 50):
            expected.append(json.loads(raw)["sensorId"])
    assert expected, "the window holds readings the stricter rule decides differently"
    assert report.changed == len(expected) < report.compared
    (change,) = report.changes
    assert change.before == Outcome(rule="pm25-spike", action="notify-health-office")
    assert change.after == Outcome() and change.count == len(expected)
    assert len(change.examples) == 3 and {e.sensor_id for e in change.examples} < set(expected)
    spike = next(t for t in report.rules if t.rule == "pm25-spike")
    assert spike.before - spike.after == len(expected)
    notify = next(a for a in report.actions if a.action == "notify-health-office")
    assert notify.removed_count == len(expected) and notify.added_count == 0
    assert len(notify.removed) == min(5, len(expected))
    assert notify.before - notify.after == len(expected)


def test_readings_without_a_decision_and_records_that_are_no_reading_are_counted_apart() -> None:
    records = window()[:10]
    made = live_decisions(records)
    del made[records[0][0]]
    records.append((Position("s", 0, 99), b"{not json", 0.0, 0.0))
    report = replayed({}, records, made)
    assert (report.readings, report.dead_letters, report.undecided) == (11, 1, 1)
    assert report.compared == 9


def test_calls_are_as_the_runner_had_them_when_it_decided() -> None:
    reading = Reading.model_validate_json(value("s1", 80.0))
    made = live_decisions([(Position("s", 0, 0), value("s1", 80.0), 0.95, 0.9)])
    decision = next(iter(made.values()))
    recorded = Recorded.of(decision)
    assert recorded_calls(LIVE.spec, reading, recorded)["anomaly"].state == "ok"
    late = Recorded.of(decision.model_copy(update={"decided_at": NOW + timedelta(seconds=601)}))
    assert recorded_calls(LIVE.spec, reading, late)["anomaly"].state == "stale"
    unanswered = Recorded.of(decision.model_copy(update={"outputs": {}}))
    assert recorded_calls(LIVE.spec, reading, unanswered)["anomaly"].state == "unavailable"
    bare = Reading.model_validate_json(
        json.dumps(
            {"eventId": "b", "sensorId": "b", "time": NOW.isoformat(), "metrics": {"pm25": 9.0}}
        )
    )
    assert recorded_calls(LIVE.spec, bare, recorded)["anomaly"].state == "incomplete"


def test_a_window_the_model_could_not_answer_is_decided_by_the_fallback_again() -> None:
    records = window()[:20]
    made = {
        p: d.model_copy(update={"outputs": {}}) for p, d in live_decisions(records).items()
    }  # as if the model had been down: the live decisions were the fallback's
    decider = Decider(RuleSet.compile(LIVE.spec))
    for position, raw, _, _ in records:
        reading = Reading.model_validate_json(raw)
        verdict = decider.decide(reading, {"anomaly": CallResult("unavailable")}, NOW)
        made[position] = decide_record(
            LIVE, position, reading, verdict, {"anomaly": CallResult("unavailable")}, {}, NOW
        )
    assert replayed({}, records, made).changed == 0
    stricter_fallback = {
        "fallback": [{"name": "f", "when": "reading.pm25 > 40", "action": "notify-health-office"}]
    }
    report = replayed(stricter_fallback, records, made)  # named f: above 55 changes rule too
    assert report.changed == sum(
        1 for _, raw, _, _ in records if json.loads(raw)["metrics"]["pm25"] > 40
    )


def test_a_candidate_is_checked_field_by_field() -> None:
    with pytest.raises(ReplayError, match=r"rules\.0\.when"):
        candidate_spec(LIVE.spec, {"rules": [{"name": "r", "action": "notify-health-office"}]})
    manifest = {"kind": "AutomationIntent", "spec": {"sources": []}}
    with pytest.raises(ReplayError, match=r"^spec\."):
        candidate_spec(LIVE.spec, manifest)
    whole = yaml.safe_load(EXAMPLE.read_text())
    assert candidate_spec(LIVE.spec, whole) == LIVE.spec
    with pytest.raises(ReplayError, match="unknown variable"):
        Replay(
            LIVE, candidate_spec(LIVE.spec, {"rules": [{**STRICTER["rules"][0], "when": "x > 1"}]})
        )


def test_a_model_the_live_intent_did_not_call_cannot_be_replayed_from_records() -> None:
    models = [{"name": "forecast", "modelDeployment": "pm25-forecast"}]
    with pytest.raises(ReplayError, match=r"models\[forecast\].*no outputs of it were recorded"):
        Replay(LIVE, candidate_spec(LIVE.spec, {"models": models, "rules": [], "fallback": []}))


def test_the_summary_an_event_carries_names_the_share_and_the_actions() -> None:
    from aios.cli.replay import summary

    report = replayed(STRICTER)
    text = summary(report)
    assert f": {report.changed} of 60 decisions ({report.change_ratio:.1%}) would change" in text
    assert f"notify-health-office: 0 more, {report.changed} fewer" in text
    assert "runs of" not in summary(replayed({}))


POLICY = Path(__file__).parents[1] / "data" / "webhooks-need-approval.yaml"


def test_a_candidate_policy_denies_exactly_the_actions_it_objects_to(tmp_path: Path) -> None:
    from aios.cli.replay import judged

    records = window()
    made = live_decisions(records)
    replay = replaying({}, records, made)
    report = replay.report(NOW - timedelta(hours=1), NOW, "test")
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.read_text())
    webhooks = {d.action_id for d in made.values() if d.action == "notify-health-office"}
    assert webhooks and any(d.action == "dispatch-street-cleaning" for d in made.values())
    found = judged(report, replay, path, "city")
    assert found.denied_count == len(webhooks), "every webhook without approval; no MQTT one"
    assert {d.action_id for d in found.denied} <= webhooks and len(found.denied) == 5
    assert all("needs a human approval" in d.messages[0] for d in found.denied)
    path.write_text(POLICY.read_text().replace("actuation-needs-approval", "no-such-module"))
    with pytest.raises(typer.Exit):
        judged(report, replay, path, "city")


def test_a_replay_is_kept_with_its_intent_and_only_the_newest_are() -> None:
    from aios.api import IntentReplay
    from aios.api.replay import ReplayReport
    from aios.cli.replay import replay_record, superseded

    now = datetime(2026, 12, 3, 17, tzinfo=UTC)
    report = ReplayReport(
        namespace="city", intent="pm25-alerting", since=now - timedelta(hours=1), until=now,
        candidate="--rules stricter.yaml", readings=10, dead_letters=0, undecided=0,
        compared=10, changed=2,
    )  # fmt: skip
    intent = {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "AutomationIntent",
        "metadata": {"name": "pm25-alerting", "namespace": "city", "uid": "u-1"},
    }
    record = replay_record(intent, report, 0.05, True)
    kept = IntentReplay.model_validate({**record, "metadata": {"name": "x"}}).spec
    assert (kept.changed, kept.max_change, kept.exceeded) == (2, 0.05, True)
    assert record["metadata"]["ownerReferences"][0]["uid"] == "u-1", "it goes with the intent"
    assert record["metadata"]["labels"] == {"aios.dev/intent": "pm25-alerting"}
    records = [
        {"metadata": {"name": f"r{i}", "creationTimestamp": f"2026-12-03T17:{i:02d}:00Z"}}
        for i in range(5)
    ]
    assert superseded(records, kept=3) == ["r1", "r0"], "all but the newest three"
    assert superseded(records[:2], kept=3) == []
