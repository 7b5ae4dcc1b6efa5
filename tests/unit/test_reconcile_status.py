"""Pure status logic: conditions, acceptance, finalizers — no servers."""

from __future__ import annotations

from pathlib import Path

import yaml

from aios.api import ModelDeployment
from aios.operator.reconcile.acceptance import acceptance, needs_reconcile, next_status
from aios.operator.reconcile.conditions import ConditionUpdate, is_true, merge_conditions
from aios.operator.reconcile.finalizers import finalizer_name, with_finalizer, without_finalizer

EXAMPLE = yaml.safe_load(
    (Path(__file__).parents[2] / "examples/city-air-quality/pm25-anomaly.yaml").read_text()
)


def test_transition_time_moves_only_when_status_changes() -> None:
    first = merge_conditions([], [ConditionUpdate("Ready", "False", "Waiting", "a")], 1, "T1")
    same = merge_conditions(
        first, [ConditionUpdate("Ready", "False", "StillWaiting", "b")], 2, "T2"
    )
    flipped = merge_conditions(same, [ConditionUpdate("Ready", "True", "Done")], 3, "T3")
    assert first[0]["lastTransitionTime"] == "T1"
    assert same[0]["lastTransitionTime"] == "T1" and same[0]["reason"] == "StillWaiting"
    assert same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "T3" and is_true(flipped, "Ready")


def test_other_condition_types_are_kept_and_sorted() -> None:
    current = merge_conditions([], [ConditionUpdate("Ready", "True", "Ok")], 1, "T1")
    merged = merge_conditions(current, [ConditionUpdate("Accepted", "True", "Ok")], 1, "T2")
    assert [c["type"] for c in merged] == ["Accepted", "Ready"]


def test_a_valid_spec_is_accepted() -> None:
    update = acceptance(ModelDeployment, EXAMPLE)
    assert (update.type, update.status, update.reason) == ("Accepted", "True", "SpecValid")


def test_an_invalid_spec_is_refused_naming_the_field() -> None:
    body = {**EXAMPLE, "spec": {**EXAMPLE["spec"], "decision": {"confidenceThreshold": 3}}}
    update = acceptance(ModelDeployment, body)
    assert update.status == "False" and update.reason == "InvalidSpec"
    assert "spec.decision.confidenceThreshold" in update.message


def test_reconcile_is_needed_until_the_generation_is_observed() -> None:
    body = {"metadata": {"generation": 2}, "status": {"observedGeneration": 1}}
    assert needs_reconcile(body)
    status = next_status(body, [ConditionUpdate("Accepted", "True", "SpecValid")], "T")
    assert not needs_reconcile({**body, "status": status})
    assert status["conditions"][0]["observedGeneration"] == 2


def test_a_deleting_object_is_left_to_its_finalizers() -> None:
    body = {"metadata": {"generation": 2, "deletionTimestamp": "T"}, "status": {}}
    assert not needs_reconcile(body)


def test_finalizer_arithmetic_reports_when_nothing_changes() -> None:
    name = finalizer_name("kafka-topics")
    assert name == "aios.dev/kafka-topics"
    added = with_finalizer(["other"], name)
    assert added == ["other", name]
    assert with_finalizer(added, name) is None
    assert without_finalizer(added, name) == ["other"]
    assert without_finalizer(["other"], name) is None
