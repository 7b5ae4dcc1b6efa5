"""``aiosctl approve|reject``: who may decide, and what gets recorded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import typer

from aios.cli.approvals import (
    Identity,
    Refused,
    Request,
    allowed,
    model_deployment_decision,
    parse_target,
)

ALICE = Identity("alice", ("system:authenticated",))
LEAD = Identity("bob", ("air-quality-leads",))
NOW = datetime(2024, 11, 20, 10, 0, tzinfo=UTC)


def waiting(phase: str = "AwaitingApproval", approvers: list[str] | None = None) -> dict:
    return {
        "spec": {"approval": {"required": True, "approvers": approvers or ["user:alice"]}},
        "status": {"rollout": {"version": "2024.11.3", "phase": phase}},
    }


def request(decision: str = "approved", version: str = "2024.11.3") -> Request:
    return Request("modeldeployment", "pm25-anomaly", "city", decision, version)


def test_approvers_are_users_or_groups() -> None:
    approvers = ["user:alice", "group:air-quality-leads", "carol"]
    assert allowed(approvers, ALICE) and allowed(approvers, LEAD)
    assert allowed(approvers, Identity("carol", ()))
    assert not allowed(approvers, Identity("mallory", ("air-quality",)))
    assert allowed([], Identity("anyone", ())), "without a list, RBAC alone decides"


def test_a_decision_records_who_and_when() -> None:
    patch = model_deployment_decision(waiting(), request(), ALICE, NOW)
    assert patch == {
        "status": {
            "rollout": {
                "approval": {
                    "version": "2024.11.3",
                    "decision": "approved",
                    "by": "alice",
                    "at": "2024-11-20T10:00:00Z",
                }
            }
        }
    }


@pytest.mark.parametrize(
    ("obj", "req", "who", "message"),
    [
        (waiting("Progressing"), request(), ALICE, "is not waiting for a decision"),
        (waiting(), request(version="2024.12.0"), ALICE, "not 2024.12.0"),
        (waiting(), request(), Identity("mallory", ()), "mallory is not among the approvers"),
        ({"spec": {}, "status": {}}, request(), ALICE, "rollout of nothing: none"),
    ],
)
def test_a_decision_that_cannot_count_is_refused(obj, req, who, message) -> None:
    with pytest.raises(Refused, match=message):
        model_deployment_decision(obj, req, who, NOW)


def test_targets_name_a_kind_and_an_object() -> None:
    assert parse_target("md/pm25-anomaly") == ("md", "pm25-anomaly")
    assert parse_target("ModelDeployment/x") == ("modeldeployment", "x")
    for bad in ("pm25-anomaly", "widget/x", "md/"):
        with pytest.raises(typer.BadParameter):
            parse_target(bad)
