"""Builders of the four kinds for the unit tests, as fixtures. Each makes an object from
the city example a user applies (``examples/city-air-quality``, in namespace ``city``)
or from one declaration here, with what a test changes laid over."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aios.api import AutomationIntent, EdgeGateway, ModelDeployment, Policy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "city-air-quality"
NAMESPACE = "city"


def _example(file: str, **metadata: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / file).read_text())
    defaults = {"namespace": NAMESPACE, "uid": "u-1", "generation": 1}
    body["metadata"] = {**body["metadata"], **defaults, **metadata}
    return body


@pytest.fixture
def example() -> Callable[..., dict[str, Any]]:
    """``example("district-7.yaml", generation=2)``: a manifest as users apply it."""
    return _example


@pytest.fixture
def edge_gateway() -> Callable[..., EdgeGateway]:
    """The district-7 gateway at ``generation``, with ``annotations``."""

    def build(generation: int = 3, **annotations: str) -> EdgeGateway:
        body = _example("district-7.yaml", generation=generation, annotations=annotations)
        return EdgeGateway.model_validate(body)

    return build


@pytest.fixture
def automation_intent() -> Callable[..., AutomationIntent]:
    """The pm25-alerting intent under ``name``; with ``actions``, its rules name the first."""

    def build(name: str = "pm25-alerting", actions: list[Any] | None = None) -> AutomationIntent:
        raw = _example("pm25-alerting.yaml", name=name)
        if actions is not None:
            raw["spec"]["actions"] = copy.deepcopy(actions)
            for kind in ("rules", "fallback"):
                raw["spec"][kind] = [{**raw["spec"][kind][0], "action": actions[0]["name"]}]
        return AutomationIntent.model_validate(raw)

    return build


@pytest.fixture
def model_deployment() -> Callable[..., ModelDeployment]:
    """pm25-anomaly 2024.11.3 from the city's bucket (a GPU, 2 to 5 replicas), with
    ``spec`` fields laid over and ``status``."""

    def build(status: dict[str, Any] | None = None, **spec: Any) -> ModelDeployment:
        body: dict[str, Any] = {
            "metadata": {"name": "pm25-anomaly", "namespace": NAMESPACE, "uid": "u-1"},
            "spec": {
                "model": {
                    "name": "pm25-anomaly",
                    "version": "2024.11.3",
                    "storageUri": "s3://city-models/air-quality/pm25-anomaly/2024.11.3",
                },
                "resources": {"cpu": "500m", "memory": "1Gi", "gpu": 1},
                "autoscaling": {"minReplicas": 2, "maxReplicas": 5},
                **spec,
            },
        }
        body["metadata"]["generation"] = 1
        if status is not None:
            body["status"] = status
        return ModelDeployment.model_validate(body)

    return build


@pytest.fixture
def policy() -> Callable[..., Policy]:
    """A cluster-wide Policy ``p`` with ``spec``."""

    def build(**spec: Any) -> Policy:
        return Policy.model_validate({"metadata": {"name": "p"}, "spec": spec})

    return build
