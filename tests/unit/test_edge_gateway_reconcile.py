"""EdgeGateway, purely: the compiled config record, heartbeats → status, the simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aios.edge.protocol import AgentConfig, Heartbeat, config_partition, parse_config
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.reconcile.edge_gateway import (
    SIMULATE_ANNOTATION,
    compile_config,
    heartbeat_status,
    privacy_budget_per_window,
    render_simulator,
    simulation_changed,
    status_changes,
)
from aios.operator.settings import OperatorSettings

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def beat(**changes: object) -> Heartbeat:
    base = {
        "gateway": "city/district-7",
        "agent": "gw-7/42",
        "time": NOW - timedelta(seconds=2),
        "heartbeatSeconds": 5,
        "appliedGeneration": 3,
        "bufferBytes": 10,
        "bufferCapacityBytes": 100,
        "forwarded": 7,
        "dropped": 2,
        "quarantined": 1,
        "privacyBudgetRemaining": 0.5,
        "privacySensorsExhausted": 2,
    }
    return Heartbeat.model_validate(base | changes)


def by_type(conditions: list[ConditionUpdate]) -> dict[str, ConditionUpdate]:
    return {c.type: c for c in conditions}


def test_the_config_record_round_trips_and_its_digest_follows_the_spec(edge_gateway) -> None:
    config = compile_config(edge_gateway())
    assert config.gateway == "city/district-7" and config.generation == 3
    assert parse_config(config.to_bytes()) == config
    same = compile_config(edge_gateway(generation=4))
    assert same.digest == config.digest  # only the spec counts
    changed = edge_gateway()
    changed.spec.sink.kafka_topic = "elsewhere"
    assert compile_config(changed).digest != config.digest
    assert isinstance(config, AgentConfig) and config.filters == edge_gateway().spec.filters


def test_the_config_partition_is_stable_and_in_range() -> None:
    seen = {config_partition(f"ns/gw-{i}", 12) for i in range(200)}
    assert seen <= set(range(12)) and len(seen) > 6
    assert config_partition("city/district-7", 12) == config_partition("city/district-7", 12)


def test_a_fresh_heartbeat_of_the_current_generation_makes_the_gateway_ready() -> None:
    fields, conditions = heartbeat_status(3, 3, beat(), NOW)
    c = by_type(conditions)
    assert {t: c[t].status for t in c} == {
        "ConfigPublished": "True",
        "Connected": "True",
        "ConfigApplied": "True",
        "BufferPressure": "False",
        "Ready": "True",
    }
    assert fields["appliedGeneration"] == 3 and fields["forwarded"] == 7
    assert fields["bufferFillRatio"] == 0.1 and fields["privacyBudgetRemaining"] == 0.5
    assert fields["privacySensorsExhausted"] == 2


def test_stale_old_or_rejecting_agents_are_not_ready() -> None:
    _, stale = heartbeat_status(3, 3, beat(time=NOW - timedelta(seconds=16)), NOW)
    assert by_type(stale)["Connected"].reason == "HeartbeatMissed"
    assert by_type(stale)["Ready"].status == "False"
    _, old = heartbeat_status(4, 4, beat(), NOW)
    assert by_type(old)["ConfigApplied"].reason == "Pending"
    assert by_type(old)["Ready"].reason == "ConfigAppliedPending"
    _, rejected = heartbeat_status(3, 3, beat(configError="bad record"), NOW)
    assert by_type(rejected)["ConfigApplied"].reason == "ConfigRejected"
    _, none = heartbeat_status(3, 3, None, NOW)
    assert by_type(none)["Connected"].reason == "NoHeartbeat"
    _, unpublished = heartbeat_status(3, 2, beat(), NOW)
    assert by_type(unpublished)["Ready"].reason == "ConfigPublishedPending"


def test_buffer_pressure_from_the_fill_ratio() -> None:
    _, full = heartbeat_status(3, 3, beat(bufferBytes=85), NOW)
    assert by_type(full)["BufferPressure"].status == "True"
    assert by_type(full)["Ready"].status == "True"  # pressure is a warning, not an outage


def test_counters_are_written_only_when_due_conditions_always() -> None:
    fields, _ = heartbeat_status(3, 3, beat(), NOW)
    current = dict(fields) | {"forwarded": 1}
    assert status_changes(current, fields, counters_due=False) == {}
    assert status_changes(current, fields, counters_due=True) == {"forwarded": 7}
    current["appliedGeneration"] = 2
    assert "appliedGeneration" in status_changes(current, fields, counters_due=False)


def test_the_simulated_agent_runs_only_when_asked(edge_gateway) -> None:
    settings = OperatorSettings(kafka_bootstrap="kafka.aios.svc:9092", temporal_address="")
    assert render_simulator(edge_gateway().model_dump(by_alias=True), settings) == []
    body = edge_gateway(**{SIMULATE_ANNOTATION: "3"}).model_dump(by_alias=True)
    (deployment,) = render_simulator(body, settings)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["aios-edge"]
    assert "--gateway=city/district-7" in container["args"]
    assert "--simulate=3" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AIOS_KAFKA_BOOTSTRAP"]["value"] == "kafka.aios.svc:9092"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "aios"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_setting_changing_or_removing_the_simulation_asks_for_a_reconcile(edge_gateway) -> None:
    body = edge_gateway(**{SIMULATE_ANNOTATION: "3"}).model_dump(by_alias=True)
    assert not simulation_changed(body), "never reconciled: the new generation asks already"
    body["status"] = {"observedGeneration": 1, "simulatedSensors": "3"}
    assert not simulation_changed(body)
    body["metadata"]["annotations"] = {}
    assert simulation_changed(body), "removed: the simulated agent goes"
    body["status"].pop("simulatedSensors")
    assert not simulation_changed(body)
    body["metadata"]["annotations"] = {SIMULATE_ANNOTATION: "5"}
    assert simulation_changed(body)


def test_the_privacy_budget_per_window_is_the_chains_differential_privacy_steps() -> None:
    step = {"epsilon": 0.5, "sensitivity": 1, "budgetPerWindow": 2.0}
    gateway = {"spec": {"filters": [{"deadband": {}}, {"differentialPrivacy": step}]}}
    assert privacy_budget_per_window(gateway) == 2.0
    assert privacy_budget_per_window({"spec": {"filters": [{"deadband": {}}]}}) is None
