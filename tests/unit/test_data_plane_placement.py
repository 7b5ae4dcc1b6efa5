"""Where the operator's data-plane pods run and how big they are: the site's ``dataPlane``
(chart values → ``AIOS_DATA_PLANE``) reaches every pod the operator renders."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from aios.api import AutomationIntent, ModelDeployment
from aios.connectors.audit import EVENTS_TOPIC
from aios.operator.reconcile import automation_intent, model_deployment
from aios.operator.reconcile.edge_gateway import render_simulator
from aios.operator.reconcile.kafka_access import worker_principal
from aios.operator.reconcile.worker import render_worker
from aios.operator.settings import DataPlane, OperatorSettings

GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
DATA_PLANE = {
    "nodeSelector": {"aios.dev/pool": "data"},
    "tolerations": [{"key": "dedicated", "value": "aios", "effect": "NoSchedule"}],
    "priorityClassName": "city-critical",
    "modelServers": {"nodeSelector": {"accelerator": "l4"}, "tolerations": [GPU_TAINT]},
    "resources": {"intentRunner": {"requests": {"cpu": "1", "memory": "2Gi"}}},
}

WORKER_USER = worker_principal("city", [], EVENTS_TOPIC)


def site(data_plane: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    """Settings as the chart's operator reads them."""
    monkeypatch.setenv("AIOS_DATA_PLANE", json.dumps(data_plane))
    return OperatorSettings.from_env()


def pod_specs(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = []
    for child in children:
        if child["kind"] in ("Deployment", "StatefulSet"):
            specs.append(child["spec"]["template"]["spec"])
        elif child["kind"] == "InferenceService":
            specs.append(child["spec"]["predictor"])
    assert specs, "something with a pod was rendered"
    return specs


def rendered(
    settings: OperatorSettings, example: Callable[..., dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Every kind of data-plane pod the operator renders, by component."""
    intent = AutomationIntent.model_validate(example("pm25-alerting.yaml"))
    gateway = example("district-7.yaml")
    md = ModelDeployment.model_validate(example("pm25-anomaly.yaml"))
    return {
        "runner": automation_intent.render_runner(intent, settings, ["city.district-7.readings"]),
        "worker": render_worker(WORKER_USER, settings),
        "agent": render_simulator(gateway, settings),
        "model": model_deployment.render_raw(md, settings),
        "kserve": model_deployment.render_kserve(md, settings),
    }


def test_every_data_plane_pod_gets_the_sites_placement(
    monkeypatch: pytest.MonkeyPatch, example
) -> None:
    for component, children in rendered(site(DATA_PLANE, monkeypatch), example).items():
        for spec in pod_specs(children):
            assert spec["nodeSelector"]["aios.dev/pool"] == "data", component
            assert DATA_PLANE["tolerations"][0] in spec["tolerations"], component
            assert spec["priorityClassName"] == "city-critical", component


def test_model_servers_add_their_own_nodes_and_taints(
    monkeypatch: pytest.MonkeyPatch, example
) -> None:
    children = rendered(site(DATA_PLANE, monkeypatch), example)
    for spec in [*pod_specs(children["model"]), *pod_specs(children["kserve"])]:
        assert spec["nodeSelector"] == {"aios.dev/pool": "data", "accelerator": "l4"}
        assert GPU_TAINT in spec["tolerations"]
    for component in ("runner", "worker", "agent"):
        for spec in pod_specs(children[component]):
            assert "accelerator" not in spec["nodeSelector"], component
            assert GPU_TAINT not in spec["tolerations"], component


def test_resources_are_the_sites_where_set_and_the_defaults_elsewhere(
    monkeypatch: pytest.MonkeyPatch, example
) -> None:
    children = rendered(site(DATA_PLANE, monkeypatch), example)
    defaults = DataPlane().resources

    def resources(component: str) -> dict[str, Any]:
        return dict(pod_specs(children[component])[0]["containers"][0]["resources"])

    assert resources("runner") == {"requests": {"cpu": "1", "memory": "2Gi"}}
    assert resources("worker") == defaults.worker
    assert resources("agent") == defaults.edge_agent


def test_without_a_data_plane_setting_pods_carry_no_placement(
    monkeypatch: pytest.MonkeyPatch, example
) -> None:
    monkeypatch.delenv("AIOS_DATA_PLANE", raising=False)
    for component, children in rendered(OperatorSettings.from_env(), example).items():
        for spec in pod_specs(children):
            assert not {"nodeSelector", "tolerations", "affinity"} & set(spec), component


def test_a_misspelt_setting_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="nodeselector"):
        site({"nodeselector": {"pool": "data"}}, monkeypatch)
