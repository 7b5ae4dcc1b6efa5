"""Bad input to a running ModelDeployment: an unreadable storageUri or a model that fails
to load is Degraded with the reason, and the previous version keeps serving."""

from __future__ import annotations

import pytest
from model_support import (
    anomaly,
    apply,
    broken_repository,
    condition,
    eventually,
    infer,
    phase,
    ready,
    wait_for,
)

from aios.stack.models import storage_uri

STABLE = "2024.11.2"


def direct(version: str, uri: str) -> dict:
    return anomaly(
        version,
        uri,
        rollout={"strategy": "direct", "progressDeadlineSeconds": 20},
        approval={"required": False},
    )


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("unreadable", "not ready within 20s"),
        ("load", "ImportError: weights and code do not match"),
    ],
)
async def test_a_version_that_cannot_serve_leaves_the_previous_one_serving(
    kubectl, operator, namespace, model_dir, fault, reason
):
    apply(kubectl, namespace, direct(STABLE, storage_uri("pm25-anomaly", STABLE)))
    wait_for(lambda: ready(kubectl, namespace), timeout=180)
    uri = (
        f"file://{model_dir}/nowhere"
        if fault == "unreadable"
        else broken_repository(model_dir, fault)
    )
    apply(kubectl, namespace, direct("2024.12.1", uri))

    found = await eventually(lambda: phase(kubectl, namespace, "Promoted", "RolledBack"), 120)
    assert found["rollout"]["phase"] == "RolledBack", found["rollout"]["message"]
    assert reason in found["rollout"]["message"]
    degraded = condition(found, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "VersionNotServed"
    assert reason in degraded["message"] and f"{STABLE} keeps serving" in degraded["message"]
    assert condition(found, "Ready")["status"] == "True"
    version, outputs = await infer(kubectl, found, "http")
    assert version == STABLE and outputs["score"].shape == (2,)
