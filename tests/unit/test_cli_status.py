"""What ``aiosctl status`` and ``explain`` conclude from objects as the API server returns
them (pure functions; the commands against a real site are in tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from aios.cli.explain import (
    condition_findings,
    inference_service_summary,
    parse_target,
    pod_findings,
    workload_summary,
)
from aios.cli.status import is_odd, ordered, row


def condition(kind: str, status: str, reason: str = "R", message: str = "m") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def obj(name: str, conditions: list[dict[str, str]], generation: int = 1, observed: Any = 1) -> Any:
    status: dict[str, Any] = {"conditions": conditions} if conditions else {}
    if conditions and observed is not None:
        status["observedGeneration"] = observed
    return {
        "metadata": {"name": name, "namespace": "city", "generation": generation},
        "status": status,
    }


@pytest.mark.parametrize(
    ("kind", "status", "odd"),
    [
        ("Ready", "True", False),
        ("Ready", "False", True),
        ("Degraded", "True", True),
        ("Degraded", "False", False),
        ("BufferPressure", "True", True),
        ("RolledBack", "True", True),
        ("Connected", "False", True),
        ("Approved", "Unknown", False),  # nothing known yet is not trouble
        ("Progressing", "True", False),
        ("Progressing", "False", False),
        ("ScalingActive", "False", False),  # runners not autoscaled: how it runs, not trouble
    ],
)
def test_which_conditions_are_odd(kind: str, status: str, odd: bool) -> None:
    assert is_odd(condition(kind, status)) is odd


def test_the_odd_ones_come_first() -> None:
    rows = [
        row("Policy", obj("fine", [condition("Ready", "True")])),
        row(
            "EdgeGateway",
            obj("pressed", [condition("Ready", "True"), condition("BufferPressure", "True")]),
        ),
        row("ModelDeployment", obj("stale", [condition("Ready", "True")], generation=2)),
        row("AutomationIntent", obj("broken", [condition("Ready", "False", "NoSource")])),
        row("ModelDeployment", obj("new", [])),
    ]
    names = [r.name for r in ordered(rows)]
    assert names == ["broken", "new", "stale", "pressed", "fine"]  # then by kind and name
    new = next(r for r in rows if r.name == "new")
    assert (new.ready, new.reason) == ("Unknown", "NotReconciled")
    pressed = next(r for r in rows if r.name == "pressed")
    assert [c["type"] for c in pressed.odd] == ["BufferPressure"]


def test_findings_name_the_unseen_generation_and_the_failing_conditions() -> None:
    found = condition_findings(
        obj(
            "x",
            [condition("Ready", "False", "Progressing", "0/1 replicas available"),
             condition("TopicsReady", "True"), condition("Degraded", "True", "ModelDown", "no")],
            generation=3,
            observed=2,
        )
    )  # fmt: skip
    assert found[0].startswith("The operator has not reconciled generation 3 yet")
    assert "Ready is False (Progressing): 0/1 replicas available" in found
    assert "Degraded is True (ModelDown): no" in found
    assert not [f for f in found if "TopicsReady" in f]
    assert condition_findings(obj("y", [])) == [
        "The operator has not reported on it at all: is the operator running?"
    ]


def test_a_deployment_short_of_replicas_says_why() -> None:
    deployment = {
        "metadata": {"name": "pm25-anomaly-2024-11-2"},
        "spec": {"replicas": 2},
        "status": {
            "availableReplicas": 1,
            "conditions": [
                condition("Available", "False", "MinimumReplicasUnavailable", "1 of 2"),
                condition("Progressing", "True", "ReplicaSetUpdated", "progressing"),
            ],
        },
    }
    summary, findings = workload_summary(deployment)
    assert (summary["available"], summary["desired"]) == (1, 2)
    assert findings == [
        "Deployment pm25-anomaly-2024-11-2: 1/2 available (MinimumReplicasUnavailable: 1 of 2)"
    ]
    deployment["status"]["availableReplicas"] = 2
    assert workload_summary(deployment)[1] == []


def test_pods_that_crash_or_cannot_start_are_named() -> None:
    pod = {
        "metadata": {"name": "runner-1"},
        "status": {
            "conditions": [condition("PodScheduled", "True")],
            "containerStatuses": [
                {
                    "name": "runner",
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                },
                {"name": "sidecar", "restartCount": 0, "state": {"running": {}}},
            ],
        },
    }
    assert pod_findings(pod) == [
        "Pod runner-1 container runner waits: CrashLoopBackOff (back-off)",
        "Pod runner-1 container runner restarted 4 time(s)",
    ]


@pytest.mark.parametrize(
    ("typed", "kind"),
    [
        ("md/pm25-anomaly", "ModelDeployment"),
        ("modeldeployments/pm25-anomaly", "ModelDeployment"),
        ("intent/pm25-alerting", "AutomationIntent"),
        ("AutomationIntent/pm25-alerting", "AutomationIntent"),
        ("egw/district-7", "EdgeGateway"),
        ("apol/actuation", "Policy"),
    ],
)
def test_kinds_as_kubectl_accepts_them(typed: str, kind: str) -> None:
    assert parse_target(typed)[0] == kind


@pytest.mark.parametrize("typed", ["pm25-anomaly", "deployment/x", "md/"])
def test_a_target_that_is_not_kind_slash_name_is_refused(typed: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_target(typed)


def test_an_inference_service_that_is_not_ready_says_why_in_kserves_words() -> None:
    isvc = {
        "metadata": {"name": "pm25-anomaly"},
        "status": {
            "url": "http://pm25-anomaly-predictor.city.svc.cluster.local",
            "conditions": [
                {"type": "IngressReady", "status": "True"},
                {
                    "type": "PredictorReady",
                    "status": "False",
                    "reason": "MinimumReplicasUnavailable",
                    "message": "Deployment does not have minimum availability.",
                },
                {"type": "Ready", "status": "False", "reason": "MinimumReplicasUnavailable"},
            ],
        },
    }
    summary, findings = inference_service_summary(isvc)
    assert summary == {
        "kind": "InferenceService",
        "name": "pm25-anomaly",
        "ready": "False",
        "url": "http://pm25-anomaly-predictor.city.svc.cluster.local",
    }
    assert findings[0] == (
        "InferenceService pm25-anomaly: PredictorReady is False (MinimumReplicasUnavailable): "
        "Deployment does not have minimum availability."
    )
    assert len(findings) == 2
    assert inference_service_summary({"metadata": {"name": "x"}}) == (
        {"kind": "InferenceService", "name": "x", "ready": "Unknown", "url": None},
        [],
    )
