"""Decision rules: confidence, fallback reasons, hysteresis, compile errors — pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from aios.api import AutomationIntent
from aios.api.events import Reading
from aios.api.runner import PartitionCounts, PartitionState
from aios.runner.rules import CallResult, Decider, RuleError, RuleSet
from aios.runner.state import Partition

EXAMPLE = AutomationIntent.model_validate(
    yaml.safe_load(
        (Path(__file__).parents[2] / "examples/city-air-quality/pm25-alerting.yaml").read_text()
    )
)
NOW = datetime(2026, 11, 27, 10, tzinfo=UTC)


def reading(pm25: float, sensor: str = "s1") -> Reading:
    return Reading(event_id=f"{sensor}-{pm25}", sensor_id=sensor, time=NOW, metrics={"pm25": pm25})


def ok(score: float, confidence: float = 0.95) -> dict[str, CallResult]:
    return {"anomaly": CallResult("ok", {"score": score, "confidence": confidence})}


@pytest.fixture
def decider() -> Decider:
    return Decider(RuleSet.compile(EXAMPLE.spec))


def test_a_confident_model_decides_with_the_first_rule_that_holds(decider: Decider) -> None:
    severe = decider.decide(reading(80), ok(0.95), NOW)
    assert (severe.rule, severe.action, severe.fallback) == (
        "pm25-sustained",
        "dispatch-street-cleaning",
        False,
    )
    verdict = decider.decide(reading(50), ok(0.95), NOW)
    assert (verdict.rule, verdict.action, verdict.fallback) == (
        "pm25-spike",
        "notify-health-office",
        False,
    )
    assert verdict.calls == {"anomaly"}


def test_a_confident_no_is_no_action_and_no_fallback(decider: Decider) -> None:
    verdict = decider.decide(reading(80), ok(0.1), NOW)
    assert verdict.action is None and not verdict.fallback


def test_rules_needing_more_confidence_are_skipped(decider: Decider) -> None:
    # 0.8 ≥ pm25-spike's 0.75 but < pm25-sustained's 0.85: only the spike rule may decide
    verdict = decider.decide(reading(100), ok(0.95, confidence=0.8), NOW)
    assert verdict.rule == "pm25-spike"


@pytest.mark.parametrize(
    "result,reason",
    [
        (CallResult("unavailable"), "unavailable"),
        (CallResult("stale"), "stale"),
        (CallResult("incomplete"), "incomplete"),
        (CallResult("ok", {"score": 0.99, "confidence": 0.2}), "unsure"),
        (CallResult("ok", {"score": 0.99}), "unsure"),
    ],
)
def test_the_fallback_decides_and_says_why(
    decider: Decider, result: CallResult, reason: str
) -> None:
    high = decider.decide(reading(60), {"anomaly": result}, NOW)
    assert (high.rule, high.action, high.fallback, high.fallback_reason) == (
        "pm25-static-threshold",
        "notify-health-office",
        True,
        reason,
    )
    low = decider.decide(reading(20), {"anomaly": result}, NOW)
    assert (low.action, low.fallback, low.fallback_reason) == (None, True, reason)


def test_hysteresis_keeps_a_fired_rule_latched_until_the_score_falls_by_the_margin(
    decider: Decider,
) -> None:
    assert decider.decide(reading(50), ok(0.85), NOW).rule == "pm25-spike"
    assert decider.decide(reading(50), ok(0.78), NOW).rule == "pm25-spike", "within the margin"
    assert decider.decide(reading(50), ok(0.74), NOW).rule is None, "fell below 0.8 - 0.05"
    assert decider.decide(reading(50), ok(0.78), NOW).rule is None, "re-armed: 0.78 ≤ 0.8"
    assert decider.decide(reading(50, "s2"), ok(0.78), NOW).rule is None, "latches are per sensor"


def test_a_condition_on_a_missing_metric_is_false(decider: Decider) -> None:
    no_pm25 = Reading(event_id="e", sensor_id="s", time=NOW, metrics={"no2": 10.0})
    verdict = decider.decide(no_pm25, ok(0.99), NOW)
    assert verdict.action is None


def test_an_intent_without_models_is_decided_by_its_fallback() -> None:
    spec = EXAMPLE.spec.model_copy(update={"models": [], "rules": []})
    verdict = Decider(RuleSet.compile(spec)).decide(reading(60), {}, NOW)
    assert verdict.fallback and verdict.fallback_reason == "no-model" and verdict.rule


@pytest.mark.parametrize(
    "when,message",
    [
        ("anomaly.score >", "Syntax error"),
        ("forecast.score > 1", r"unknown variable\(s\) forecast"),
    ],
)
def test_bad_conditions_are_rejected_naming_the_rule(when: str, message: str) -> None:
    rules = [EXAMPLE.spec.rules[0].model_copy(update={"when": when})]
    with pytest.raises(RuleError, match=f"rule {rules[0].name}: .*{message}"):
        RuleSet.compile(EXAMPLE.spec.model_copy(update={"rules": rules}))


def test_the_reading_exposes_its_age() -> None:
    from aios.runner.rules import reading_context

    assert reading_context(reading(1), NOW + timedelta(seconds=90))["ageSeconds"] == 90


def test_a_latch_restored_from_the_partition_state_keeps_firing_in_another_replica(
    decider: Decider,
) -> None:
    assert decider.decide(reading(50), ok(0.85), NOW).rule == "pm25-spike"
    saved = Partition(12, PartitionCounts(events=1), decider).state()
    record = PartitionState.model_validate_json(saved.model_dump_json(by_alias=True))
    assert record.latched == [("s1", "pm25-spike")] and record.offset == 12

    taken_over = Partition.start(RuleSet.compile(EXAMPLE.spec), record)
    assert taken_over.decider.decide(reading(50), ok(0.78), NOW).rule == "pm25-spike"
    fresh = Decider(RuleSet.compile(EXAMPLE.spec))
    assert fresh.decide(reading(50), ok(0.78), NOW).rule is None, "without it, the latch is lost"
    assert taken_over.counts.events == 1


def test_a_partition_reports_its_lag_once_it_has_an_offset_and_a_fetch(decider: Decider) -> None:
    """The heartbeat's lag is the partition's end less the next record to decide; unknown
    before the first commit (the group then has no position) or before the first fetch."""
    held = Partition(12, PartitionCounts(events=12), decider)
    assert held.report(end=20).lag == 8
    assert held.report(end=12).lag == 0
    assert held.report(end=-1).lag is None
    assert Partition(-1, PartitionCounts(), decider).report(end=20).lag is None
