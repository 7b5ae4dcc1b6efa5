"""A ModelDeployment becomes Ready and answers V2 inference, on Triton and on KServe's
ModelServer, through the same tritonclient code; a model that cannot load is Degraded."""

from __future__ import annotations

import pytest
from model_support import (
    anomaly,
    apply,
    condition,
    example,
    infer,
    ready,
    status,
    wait_for,
)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_the_example_anomaly_model_serves_on_triton(kubectl, operator, namespace, protocol):
    manifest = example("pm25-anomaly")
    manifest["spec"]["autoscaling"]["minReplicas"] = 1
    apply(kubectl, namespace, manifest)
    found = wait_for(lambda: ready(kubectl, namespace), timeout=180)

    assert found["activeVersion"] == "2024.11.2"
    assert found["stable"]["http"] == f"http://pm25-anomaly-2024-11-2.{namespace}.svc:8000"
    assert found["endpoints"]["grpc"] == f"pm25-anomaly.{namespace}.svc:8001"
    assert "team-air-quality" in found["modelCardSummary"]
    version, outputs = await infer(kubectl, found, protocol)
    assert version == "2024.11.2"
    assert outputs["score"].shape == (2,) and outputs["confidence"].shape == (2,)
    assert outputs["score"][1] > 0.5 > outputs["score"][0], "the spike is the anomaly"

    deployment = kubectl.json("get", "deployment", "pm25-anomaly-2024-11-2", "-n", namespace)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["tritonserver"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    owner = deployment["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ModelDeployment" and owner["name"] == "pm25-anomaly"
    hpa = kubectl.json("get", "hpa", "pm25-anomaly", "-n", namespace)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pm25-anomaly-2024-11-2"


async def test_the_example_forecast_model_serves_on_kserve(kubectl, operator, namespace):
    apply(kubectl, namespace, example("pm25-forecast"))
    found = wait_for(lambda: ready(kubectl, namespace, "pm25-forecast"), timeout=180)
    for protocol in ("grpc", "http"):
        version, outputs = await infer(kubectl, found, protocol)
        assert version == "2024.10.0"
        assert outputs["forecast"].shape == (2, 24) and outputs["confidence"].shape == (2,)
        assert 10 < float(outputs["forecast"].mean()) < 40
    deployment = kubectl.json("get", "deployment", "pm25-forecast-2024-10-0", "-n", namespace)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "aios.connectors.model_server"]
    assert "--host=$(POD_IP)" in container["args"]


def test_a_model_that_cannot_load_is_degraded_with_the_reason(
    kubectl, operator, namespace, model_dir
):
    from model_support import broken_repository

    apply(kubectl, namespace, anomaly("9.9.9", broken_repository(model_dir, "load")))

    def degraded():
        found = status(kubectl, namespace)
        return found if condition(found, "Degraded").get("status") == "True" else None

    found = wait_for(degraded, timeout=120)
    ready_condition = condition(found, "Ready")
    assert ready_condition["status"] == "False"
    wait_for(
        lambda: (
            "weights and code do not match"
            in condition(status(kubectl, namespace), "Degraded").get("message", "")
        ),
        timeout=60,
    )
    assert "stable" not in status(kubectl, namespace), "nothing ever answered"
