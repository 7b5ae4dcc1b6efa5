"""The pydantic models: examples parse, defaults apply, bounds and rules are enforced with
the offending field named, and every invalid manifest of the integration corpus is
rejected here too (so a mistake is caught before any API server sees it)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from aios.api import API_VERSION, KINDS, AutomationIntent, EdgeGateway, ModelDeployment, Policy
from aios.api.base import Resource, kube_time
from aios.stack.platform import example_files

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "city-air-quality"
INVALID = sorted((REPO / "tests" / "integration" / "invalid").glob("*.yaml"))
BY_KIND: dict[str, type[Resource[Any, Any]]] = {model.crd.kind: model for model in KINDS}

MINIMAL_SPECS: dict[type[Resource[Any, Any]], dict[str, Any]] = {
    ModelDeployment: {"model": {"name": "m", "version": "1", "storageUri": "file:///models/m"}},
    AutomationIntent: {"sources": [{"name": "readings", "kafkaTopic": "readings"}]},
    Policy: {"rego": "package aios.example"},
    EdgeGateway: {"site": "district-7", "sink": {"kafkaTopic": "readings"}},
}


ACTION = {"name": "notify", "type": "alert", "target": "air-quality-on-call"}
RANGE_5_1 = {"min": 5, "max": 1}
OVERSPENT = {"epsilon": 2, "sensitivity": 1, "budgetPerWindow": 1}


def example_paths() -> list[Path]:
    return example_files()


def parse(manifest: dict[str, Any]) -> Resource[Any, Any]:
    return BY_KIND[manifest["kind"]].model_validate(manifest)


def manifest(
    model: type[Resource[Any, Any]], patch: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A manifest of `model`: its minimal valid spec with `patch` ({"a.b": value}) laid over it."""
    spec = copy.deepcopy(MINIMAL_SPECS[model])
    for dotted, value in (patch or {}).items():
        *parents, leaf = dotted.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return {"kind": model.crd.kind, "metadata": {"name": "x"}, "spec": spec}


def error_paths(error: ValidationError) -> list[str]:
    """Error locations in the API server's notation: spec.sources[0].name."""
    return [
        "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in e["loc"])[1:]
        for e in error.errors()
    ]


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.stem)
def test_every_example_parses_and_round_trips(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert "namespace" not in document["metadata"], "kubectl -n decides the namespace"
    parsed = parse(document)
    wire = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert parse(wire) == parsed


def test_the_kustomization_lists_every_example() -> None:
    kustomization = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())
    files = sorted(p.name for p in EXAMPLES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files


def test_the_examples_cover_every_kind_a_repository_holds() -> None:
    """An Approval and a ManualAction are a person's acts (``aiosctl approve``, ``act``):
    admission refuses one that names anyone but the requesting user, so no repository
    applies them."""
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in example_paths()}
    assert kinds == set(BY_KIND) - {"Approval", "ManualAction"}


def test_model_deployment_defaults() -> None:
    spec = ModelDeployment.model_validate(manifest(ModelDeployment)).spec
    assert spec.runtime == "triton"
    assert spec.model.format == "python"
    assert (spec.resources.gpu, spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (
        0,
        1,
        3,
    )
    assert spec.autoscaling.target_utilization_percent == 70
    assert spec.decision.confidence_threshold == 0.7
    assert spec.rollout.strategy == "direct"
    assert spec.rollout.analysis.max_error_rate == 0.01
    assert spec.rollout.analysis.min_requests == 50
    assert spec.approval.required is False
    assert spec.model_card is None


def test_automation_intent_defaults() -> None:
    spec = AutomationIntent.model_validate(manifest(AutomationIntent)).spec
    assert (spec.topics.partitions, spec.topics.retention_hours) == (6, 168)
    assert spec.topics.delete_policy == "Retain"
    assert (spec.sla.max_latency_ms, spec.sla.max_batch_size) == (2000, 64)
    assert spec.data_policy.personal_data is False
    assert spec.mode == "active"


def test_action_and_rule_defaults() -> None:
    spec = AutomationIntent.model_validate(
        manifest(
            AutomationIntent,
            {
                "models": [{"name": "anomaly", "modelDeployment": "pm25-anomaly"}],
                "rules": [{"name": "r", "when": "anomaly.score > 0.8", "action": ACTION["name"]}],
                "actions": [ACTION],
            },
        )
    ).spec
    assert (spec.models[0].timeout_ms, spec.models[0].max_staleness_seconds) == (200, 300)
    assert (spec.rules[0].min_confidence, spec.rules[0].hysteresis) == (0.7, 0.05)
    action = spec.actions[0]
    assert action.approval.timeout_seconds == 900
    assert action.idempotency_window_seconds == 86400


def test_policy_defaults_to_deny_on_every_kind() -> None:
    spec = Policy.model_validate(manifest(Policy)).spec
    assert spec.enforcement == "deny"
    assert spec.scope.kinds == ["ModelDeployment", "AutomationIntent", "EdgeGateway", "Action"]


def test_edge_gateway_defaults() -> None:
    spec = EdgeGateway.model_validate(
        manifest(EdgeGateway, {"filters": [{"anomaly": {}}, {"validate": {}}]})
    ).spec
    assert spec.buffer.max_bytes == 256 * 2**20
    assert (spec.buffer.overflow_policy, spec.buffer.fsync) == ("dropOldest", "interval")
    assert spec.sink.compression == "zstd"
    assert spec.filters[0].anomaly is not None
    assert (spec.filters[0].anomaly.alpha, spec.filters[0].anomaly.z_threshold) == (0.1, 3.0)
    assert spec.filters[1].validate_ is not None
    assert spec.filters[1].validate_.max_future_skew_seconds == 30


def test_type_meta_is_filled_in_and_checked() -> None:
    built = Policy.model_validate({"spec": {"rego": "package x"}})
    assert (built.api_version, built.kind) == (API_VERSION, "Policy")
    with pytest.raises(ValidationError, match="kind must be Policy"):
        Policy.model_validate({"kind": "EdgeGateway", "spec": {"rego": "package x"}})
    with pytest.raises(ValidationError, match="apiVersion must be"):
        Policy.model_validate({"apiVersion": "aios.dev/v1", "spec": {"rego": "package x"}})


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (ModelDeployment, "decision.confidenceThreshold", 1.5),
        (ModelDeployment, "decision.confidenceThreshold", -0.1),
        (ModelDeployment, "autoscaling.maxReplicas", 101),
        (ModelDeployment, "autoscaling.targetUtilizationPercent", 0),
        (ModelDeployment, "resources.memory", "lots"),
        (ModelDeployment, "runtime", "torchserve"),
        (ModelDeployment, "rollout.steps", [{"weight": 101}]),
        (ModelDeployment, "model.name", "Not-A-Label"),
        (ModelDeployment, "model.storageUri", "ftp://models/m"),
        (ModelDeployment, "model.version", ""),
        (AutomationIntent, "topics.partitions", 1001),
        (AutomationIntent, "sla.maxBatchSize", 0),
        (AutomationIntent, "dataPolicy.retentionDays", 3651),
        (AutomationIntent, "sources", []),
        (AutomationIntent, "mode", "dry"),
        (Policy, "enforcement", "audit"),
        (Policy, "scope.kinds", ["Pod"]),
        (Policy, "rego", "x" * 65537),
        (EdgeGateway, "buffer.maxBytes", 1024),
        (EdgeGateway, "filters", [{"anomaly": {"alpha": 0}}]),
        (EdgeGateway, "filters", [{"window": {"sizeSeconds": 60, "aggregates": ["median"]}}]),
        (EdgeGateway, "filters", [{"rateLimit": {"perSensorPerSecond": 1}}] * 17),
        (
            EdgeGateway,
            "sensors",
            [{"id": "s", "metrics": ["pm25"], "location": {"lat": 0, "lon": 181}}],
        ),
        (EdgeGateway, "site", "x" * 64),
    ],
)
def test_out_of_bounds_values_are_rejected_naming_the_field(
    model: type[Resource[Any, Any]], field: str, value: Any
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(manifest(model, {field: value}))
    assert any(path.startswith(f"spec.{field}") for path in error_paths(caught.value))


ESCALATING_APPROVAL = {
    "required": True,
    "approvers": ["group:duty"],
    "timeoutSeconds": 60,
    "escalation": [{"approvers": ["group:leads"], "afterSeconds": 60}],
}


@pytest.mark.parametrize(
    ("model", "patch", "message"),
    [
        (AutomationIntent, {"sources": [{"name": "s"}]}, "exactly one of kafkaTopic, edge"),
        (Policy, {"module": {"name": "actuation-needs-approval"}}, "exactly one of rego, module"),
        (Policy, {"rego": None}, "exactly one of rego, module"),
        (EdgeGateway, {"filters": [{}]}, "exactly one of validate, deadband"),
        (EdgeGateway, {"filters": [{"anomaly": {}, "validate": {}}]}, "exactly one of validate"),
        (ModelDeployment, {"rollout.strategy": "canary"}, "canary rollout needs at least one step"),
        (ModelDeployment, {"rollout.steps": [{"weight": 20}, {"weight": 20}]}, "strictly increase"),
        (ModelDeployment, {"autoscaling.minReplicas": 4, "autoscaling.maxReplicas": 3}, "minRepl"),
        (ModelDeployment, {"approval.required": True}, "at least one approver"),
        (
            AutomationIntent,
            {"fallback": [{"name": "f", "when": "true", "action": "x"}]},
            "fallback",
        ),
        (AutomationIntent, {"actions": [{**ACTION, "type": "webhook"}]}, r"http\(s\) URL"),
        (AutomationIntent, {"dataPolicy.personalData": True}, "retentionDays and purpose"),
        (AutomationIntent, {"actions": [{**ACTION, "approval": ESCALATING_APPROVAL}]}, "timeout"),
        (EdgeGateway, {"filters": [{"window": {"sizeSeconds": 60, "hopSeconds": 30}}]}, "hopping"),
        (EdgeGateway, {"filters": [{"window": {"kind": "hopping", "sizeSeconds": 6}}]}, "hopping"),
        (EdgeGateway, {"filters": [{"validate": {"ranges": {"pm25": RANGE_5_1}}}]}, "min must not"),
        (EdgeGateway, {"filters": [{"differentialPrivacy": OVERSPENT}]}, "epsilon must not exceed"),
    ],
)
def test_cross_field_rules_are_enforced(
    model: type[Resource[Any, Any]], patch: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        model.model_validate(manifest(model, patch))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_every_invalid_manifest_is_rejected_by_the_models_too(path: Path) -> None:
    """Where pydantic reports a rule on an object, the API server may name a field of it."""
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ").strip()
    with pytest.raises(ValidationError) as caught:
        parse(yaml.safe_load(path.read_text()))
    reported = error_paths(caught.value)
    assert any(p.startswith(expected) or expected.startswith(p) for p in reported), reported


def test_the_invalid_corpus_is_large_enough_and_well_formed() -> None:
    assert len(INVALID) >= 10
    for path in INVALID:
        assert path.read_text().startswith("# expect: spec"), path.name


def test_a_reading_parses_from_the_wire_and_rejects_nonsense() -> None:
    import pydantic
    import pytest

    from aios.api.events import Reading

    wire = {
        "eventId": "e1",
        "sensorId": "s1",
        "time": "2026-11-27T10:00:00Z",
        "metrics": {"pm25": 12.5},
        "lineage": {"gateway": "district-7", "configGeneration": 3},
    }
    reading = Reading.model_validate(wire)
    assert reading.metrics == {"pm25": 12.5} and reading.lineage.config_generation == 3
    raw = Reading.model_validate({**wire, "metrics": {"pt08_s4_no2": 1692.0, "abs_humidity": 0.8}})
    assert raw.metrics["pt08_s4_no2"] == 1692.0, "any named quantity, not only the six"
    for broken, field in [
        ({"metrics": {"pm25": float("nan")}}, "metrics"),
        ({"metrics": {"site": 1.0}}, "reading's own fields"),
        ({"metrics": {"PM25": 1.0}}, "metrics"),
        ({"time": "2026-11-27T10:00:00"}, "time"),
        ({"eventId": ""}, "eventId"),
    ]:
        with pytest.raises(pydantic.ValidationError, match=field):
            Reading.model_validate({**wire, **broken})


def test_times_are_written_as_kubernetes_writes_them_in_utc_whole_seconds() -> None:
    paris = timezone(timedelta(hours=1))
    assert kube_time(datetime(2026, 12, 1, 16, 30, 5, 999_999, paris)) == "2026-12-01T15:30:05Z"
