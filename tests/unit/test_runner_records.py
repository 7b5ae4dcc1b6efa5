"""What the runner publishes, built purely: decisions, action requests, idempotency keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from aios.api import AutomationIntent
from aios.api.events import IntentRef, Reading
from aios.api.runner import RunnerConfig, RunnerTopics
from aios.connectors.inference import Target
from aios.runner.loop import batch_summary
from aios.runner.records import Position, action_id, action_request, decide_record
from aios.runner.rules import CallResult, Verdict

INTENT = AutomationIntent.model_validate(
    yaml.safe_load(
        (Path(__file__).parents[2] / "examples/city-air-quality/pm25-alerting.yaml").read_text()
    )
)
REF = IntentRef(namespace="city", name="pm25-alerting", generation=3)
CONFIG = RunnerConfig(
    intent=REF,
    spec=INTENT.spec,
    consumer_group="g",
    task_queue="q",
    topics=RunnerTopics(sources=["s"], decisions="d", actions="a", dead_letters="x", state="t"),
)
NOW = datetime(2026, 11, 27, 10, tzinfo=UTC)
READING = Reading.model_validate(
    {
        "eventId": "e1",
        "sensorId": "s1",
        "time": NOW.isoformat(),
        "metrics": {"pm25": 80.0},
        "lineage": {"gateway": "district-7", "configGeneration": 4},
    }
)
CALLS = {"anomaly": CallResult("ok", {"score": 0.93, "confidence": 0.9})}
CANARY = Target("canary", "2", "pm25-anomaly", "http://c:8000", "c:8001")


def test_a_decision_records_its_rule_model_and_lineage() -> None:
    verdict = Verdict("pm25-spike", "notify-health-office", False, None, frozenset({"anomaly"}))
    decision = decide_record(
        CONFIG, Position("s", 2, 41), READING, verdict, CALLS, {"anomaly": CANARY}, NOW
    )
    assert decision.decision_id == "city/pm25-alerting/e1"
    assert decision.outcome == "act" and decision.action_id
    assert decision.model.deployment == "pm25-anomaly" and decision.model.canary
    assert decision.model.version == "2"
    assert (decision.score, decision.confidence) == (0.93, 0.9)
    assert (decision.lineage.partition, decision.lineage.offset) == (2, 41)
    assert decision.lineage.gateway == "district-7" and decision.lineage.config_generation == 4
    request = action_request(CONFIG, decision)
    assert request.action.name == "notify-health-office" and request.actions_topic == "a"
    assert decision.site == "default"
    elsewhere = CONFIG.model_copy(update={"site": "city-b"})
    assert decide_record(elsewhere, Position("s", 0, 0), READING, verdict, CALLS, {}, NOW).site == (
        "city-b"
    )


def test_no_action_no_request_and_shadow_mode_never_acts() -> None:
    none = decide_record(
        CONFIG, Position("s", 0, 0), READING, Verdict(None, None, False, None), CALLS, {}, NOW
    )
    assert none.outcome == "none" and action_request(CONFIG, none) is None
    assert none.model is not None and none.model.deployment == "pm25-anomaly"
    assert none.score == 0.93, "which model saw the reading, and what it said, even so"
    shadow = CONFIG.model_copy(update={"spec": INTENT.spec.model_copy(update={"mode": "shadow"})})
    verdict = Verdict("pm25-static-threshold", "notify-health-office", True, "unavailable")
    decision = decide_record(shadow, Position("s", 0, 0), READING, verdict, {}, {}, NOW)
    assert decision.outcome == "act" and decision.mode == "shadow"
    assert decision.action_id is None and action_request(shadow, decision) is None
    assert (
        decision.fallback and decision.fallback_reason == "unavailable" and decision.model is None
    )


def test_the_idempotency_key_is_stable_within_a_window_and_per_sensor() -> None:
    action = INTENT.spec.actions[0]  # a one-hour window
    first = action_id(REF, action, "s1", NOW)
    assert first == action_id(REF, action, "s1", NOW + timedelta(minutes=59))
    assert first != action_id(REF, action, "s1", NOW + timedelta(minutes=61))
    assert first != action_id(REF, action, "s2", NOW)
    assert first.startswith("city.pm25-alerting.notify-health-office.")


def test_the_trace_context_of_the_reading_travels_with_its_decision() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    decision = decide_record(
        CONFIG,
        Position("s", 0, 0),
        READING,
        Verdict(None, None, False, None),
        CALLS,
        {},
        NOW,
        parent,
    )
    assert decision.traceparent == parent
    assert decision.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert decision.model_copy(update={"traceparent": "garbage"}).trace_id is None


def test_each_batch_is_summarised_in_one_log_line() -> None:
    spike = Verdict("pm25-spike", "notify-health-office", False, None, frozenset({"anomaly"}))
    static = Verdict("pm25-static-threshold", None, True, "unavailable", frozenset())
    quiet = Verdict(None, None, False, None, frozenset())
    decisions = [
        decide_record(CONFIG, Position("s", 0, i), READING, v, CALLS, {}, NOW)
        for i, v in enumerate([spike, static, quiet, quiet])
    ]
    line = batch_summary(decisions, 1)
    assert line.startswith("decided 4 reading(s): ")
    assert "1 act by pm25-spike" in line and "2 none (no rule matched)" in line
    assert "1 none by pm25-static-threshold (fallback: unavailable)" in line
    assert decisions[0].action_id and f"action(s) {decisions[0].action_id}" in line
    assert line.endswith("; 1 dead letter(s)")
