"""AutomationIntent rendering and status, purely."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from aios.api import AutomationIntent
from aios.api.automation_intent import Scaling
from aios.api.runner import PartitionCounts, PartitionReport, RunnerConfig
from aios.operator.reconcile.automation_intent import (
    Heartbeat,
    counts,
    live,
    may_have_acted,
    owned_topics,
    ready,
    render_runner,
    reported_lag,
    retention_ms,
    retention_violation,
    runner_config,
    runtime_conditions,
    source_topics,
    topic_names,
    workload_condition,
    workload_ready,
)
from aios.operator.reconcile.autoscaling import scaling_condition
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.settings import OperatorSettings

RAW = yaml.safe_load(
    (Path(__file__).parents[2] / "examples/city-air-quality/pm25-alerting.yaml").read_text()
)
RAW["metadata"].update(namespace="city", uid="u-1", generation=2)
INTENT = AutomationIntent.model_validate(RAW)
SETTINGS = OperatorSettings(
    kafka_bootstrap="kafka:9092", temporal_address="temporal:7233", image="registry.example/aios:1"
)
GATEWAY = {
    "metadata": {"name": "district-7", "labels": {"aios.dev/site": "district-7"}},
    "spec": {"sink": {"kafkaTopic": "city.district-7.readings"}},
}
OTHER = {
    "metadata": {"name": "d8", "labels": {"aios.dev/site": "district-8"}},
    "spec": {"sink": {"kafkaTopic": "city.d8.readings"}},
}


def test_sources_follow_the_gateway_selector() -> None:
    assert source_topics(INTENT, [GATEWAY, OTHER]) == ["city.district-7.readings"]
    assert source_topics(INTENT, [OTHER]) == []


def test_retention_is_capped_for_personal_data_only() -> None:
    assert retention_ms(INTENT) == 168 * 3_600_000
    personal = INTENT.model_copy(deep=True)
    personal.spec.data_policy.personal_data = True
    personal.spec.data_policy.retention_days = 2
    assert retention_ms(personal) == 48 * 3_600_000
    assert retention_ms(personal, policy_cap_days=1) == 24 * 3_600_000
    assert retention_ms(INTENT, policy_cap_days=1) == 168 * 3_600_000


def test_owned_topics_carry_partitions_and_retention() -> None:
    names = topic_names("city", "pm25-alerting", ["src"])
    specs = owned_topics(INTENT, names, 1000)
    assert [s.name for s in specs] == [
        "aios.city.pm25-alerting.decisions",
        "aios.city.pm25-alerting.actions",
        "aios.city.pm25-alerting.dead-letters",
        "aios.city.pm25-alerting.state",
    ]
    assert all(s.config["retention.ms"] == "1000" for s in specs)
    assert all(s.partitions == 6 and s.config["cleanup.policy"] == "delete" for s in specs[:3])
    state = specs[3]
    assert state.partitions == 1 and state.config["cleanup.policy"] == "compact"
    raw = {
        **RAW,
        "spec": {
            **RAW["spec"],
            "dataPolicy": {"personalData": True, "retentionDays": 7, "purpose": "alerts"},
        },
    }
    personal = owned_topics(AutomationIntent.model_validate(raw), names, 1000)[3]
    assert personal.config["cleanup.policy"] == "compact,delete", "latches name sensors"


def beat(pod: str, **partitions: tuple[int, int, int | None]) -> Heartbeat:
    """A live runner's heartbeat: ``t_0=(offset, events, lag)`` per partition it holds."""
    reported = {
        key.replace("_", "/"): PartitionReport(
            offset=offset, counts=PartitionCounts(events=events, decisions=events), lag=lag
        )
        for key, (offset, events, lag) in partitions.items()
    }
    return Heartbeat(pod, 2, datetime.now(UTC), {}, reported, False)


def test_counts_sum_the_newest_report_of_each_partition() -> None:
    # p-0 held t/0 until 40 and lost it to p-1, which has gone on to 55
    old = beat("p-0", t_0=(40, 40, 15), t_1=(10, 9, 2))
    new = beat("p-1", t_0=(55, 54, 0), t_2=(3, 3, None))
    assert counts([old, new]) == {"events": 66, "decisions": 66, "deadLetters": 0, "fallbacks": 0}
    assert counts([new, old]) == counts([old, new])
    assert counts([beat("p-2")]) == {}, "nothing reported leaves the status as it is"


def test_the_lag_is_what_the_runners_report_of_each_partitions_newest_position() -> None:
    old = beat("p-0", t_0=(40, 40, 15), t_1=(10, 9, 2))
    new = beat("p-1", t_0=(55, 54, 0), t_2=(3, 3, None))
    assert reported_lag([old, new]) == 2, "t/0 at its newest holder's 0, t/1's 2, t/2 unknown"
    assert reported_lag([new, old]) == 2
    assert reported_lag([beat("p-2", t_0=(-1, 0, None))]) is None, "Kafka is asked then"
    assert reported_lag([]) is None


def test_temporal_is_asked_for_action_counts_only_once_something_was_decided() -> None:
    assert not may_have_acted([], {}), "a paused intent that never ran"
    assert not may_have_acted([beat("p-0", t_0=(-1, 0, None))], {"decisions": 0})
    assert may_have_acted([beat("p-0", t_0=(5, 5, 0))], {})
    assert may_have_acted([], {"decisions": 7, "actions": 3}), "runners gone, counts kept"


def test_the_runner_is_rendered_with_its_config_owner_and_least_privilege() -> None:
    config = runner_config(INTENT, ["city.district-7.readings"])
    children = render_runner(INTENT, SETTINGS, ["city.district-7.readings"])
    kinds = [c["kind"] for c in children]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "StatefulSet"]
    for child in children:
        assert child["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert child["metadata"]["namespace"] == "city"
    role = children[1]
    assert role["rules"] == [
        {
            "apiGroups": ["aios.dev"],
            "resources": ["modeldeployments"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    stored = RunnerConfig.model_validate_json(children[3]["data"]["config.json"])
    without_scaling = {"spec": {"scaling"}}  # which the runner does not read
    assert stored.model_dump(exclude=without_scaling) == config.model_dump(exclude=without_scaling)
    assert stored.task_queue == "aios.city"
    assert INTENT.spec.scaling.max_replicas == 3 and stored.spec.scaling == Scaling()
    deployment = children[4]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["aios-intent-runner"]
    assert container["image"] == "registry.example/aios:1"
    env = {e["name"]: e for e in container["env"]}
    assert env["AIOS_KAFKA_BOOTSTRAP"]["value"] == "kafka:9092"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aios"
    assert deployment["spec"]["replicas"] == 1


def test_a_changed_spec_rolls_the_runner_and_paused_scales_it_to_zero() -> None:
    first = render_runner(INTENT, SETTINGS, ["s"])[4]
    paused = INTENT.model_copy(deep=True)
    paused.spec.mode = "paused"
    second = render_runner(paused, SETTINGS, ["s"])[4]
    digest = "aios.dev/config-digest"
    assert (
        first["spec"]["template"]["metadata"]["annotations"][digest]
        != second["spec"]["template"]["metadata"]["annotations"][digest]
    )
    assert second["spec"]["replicas"] == 0


def test_scaling_sets_the_replicas_and_restarts_no_runner() -> None:
    raw = {**RAW, "spec": {**RAW["spec"], "scaling": {"minReplicas": 3, "maxReplicas": 3}}}
    three = AutomationIntent.model_validate(raw)
    one, scaled = (
        render_runner(INTENT, SETTINGS, ["s"])[4],
        render_runner(three, SETTINGS, ["s"])[4],
    )
    assert (one["spec"]["replicas"], scaled["spec"]["replicas"]) == (1, 3)
    assert scaled["spec"]["podManagementPolicy"] == "Parallel", "replicas start together"
    assert one["spec"]["template"] == scaled["spec"]["template"], "the runner does not read it"
    assert scaling_condition(three, True, None, 3) == ConditionUpdate(
        "ScalingActive",
        "False",
        "FixedReplicas",
        "3 runner(s): spec.scaling.minReplicas equals maxReplicas.",
    )
    raw["spec"]["scaling"] = {"minReplicas": 4, "maxReplicas": 2}
    with pytest.raises(ValidationError, match="maxReplicas must not be below minReplicas"):
        AutomationIntent.model_validate(raw)


def test_deployment_readiness() -> None:
    assert workload_ready(None) == (False, "not created yet")
    deployment = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1},
    }
    assert workload_ready(deployment)[0]
    stale = {**deployment, "status": {**deployment["status"], "observedGeneration": 1}}
    assert not workload_ready(stale)[0]
    assert workload_condition("RunnerReady", deployment) == ConditionUpdate(
        "RunnerReady", "True", "Available", "1/1 replicas available"
    )
    waiting = workload_condition("WorkflowsReady", stale)
    assert (waiting.status, waiting.reason) == ("False", "Progressing")


def test_personal_data_kept_longer_than_a_policy_allows_is_named() -> None:
    raw = {
        **RAW,
        "spec": {
            **RAW["spec"],
            "dataPolicy": {"personalData": True, "retentionDays": 30, "purpose": "alerts"},
        },
    }
    personal = AutomationIntent.model_validate(raw)
    assert retention_violation(personal, "city", None) is None, "no Policy caps it"
    assert retention_violation(personal, "city", 30) is None
    assert retention_violation(personal, "city", 7) == (
        "dataPolicy.retentionDays 30 exceeds the 7 days a Policy allows for personal data in city"
    )
    raw["spec"]["dataPolicy"] = {"personalData": False, "retentionDays": 30}
    assert retention_violation(AutomationIntent.model_validate(raw), "city", 7) is None


def test_degraded_names_the_model_that_is_down() -> None:
    now = datetime.now(UTC)
    down = Heartbeat(
        "p",
        2,
        now,
        {"anomaly": {"available": False, "error": "connection refused"}},
        {},
        False,
    )
    old = Heartbeat("q", 2, now - timedelta(minutes=5), {}, {}, False)
    beats = live([down, old], now, 30)
    assert beats == [down]
    [degraded] = runtime_conditions(INTENT, beats)
    assert (degraded.status, degraded.reason) == ("True", "ModelUnavailable")
    assert "anomaly: connection refused" in degraded.message
    healthy = Heartbeat("p", 2, now, {"anomaly": {"available": True}}, {}, False)
    assert runtime_conditions(INTENT, [healthy])[0].status == "False"


def test_ready_waits_for_every_part() -> None:
    parts = [
        ConditionUpdate("TopicsReady", "True", "x"),
        ConditionUpdate("RunnerReady", "False", "Progressing", "0/1 replicas available"),
    ]
    verdict = ready(parts)
    assert verdict.status == "False" and "RunnerReady: 0/1" in verdict.message
    assert ready(parts[:1]).status == "True"


def test_an_intent_whose_selector_matches_nothing_still_has_topic_names() -> None:
    names = topic_names("city", "pm25-alerting", source_topics(INTENT, [OTHER]))
    assert names.sources == [] and names.decisions == "aios.city.pm25-alerting.decisions"
