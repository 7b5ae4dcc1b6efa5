"""Approvals: who may decide, what ``aiosctl approve|reject`` asks for, what admission
refuses, and which recorded approval a ModelDeployment's status may carry."""

from __future__ import annotations

import pytest
import typer

from aios.api.approval import ApprovalSpec, permits
from aios.api.events import ActionState
from aios.cli.approvals import Identity, Refused, Request, approval_manifest, parse_target
from aios.operator.reconcile.approval import (
    action_refusal,
    identity_refusal,
    model_deployment_refusal,
    record_refusal,
)

ALICE = Identity("alice", ("system:authenticated", "air-quality-leads"))
ACTION_ID = "city.pm25-alerting.dispatch.0123456789abcdef01234567"


def waiting(phase: str = "AwaitingApproval", approvers: list[str] | None = None) -> dict:
    return {
        "spec": {"approval": {"required": True, "approvers": approvers or ["user:alice"]}},
        "status": {"rollout": {"version": "2024.11.3", "phase": phase}},
    }


def request(decision: str = "approved", version: str | None = "2024.11.3") -> Request:
    return Request("md", "pm25-anomaly", "city", decision, version, "checked the report")


def spec(username: str = "alice", groups: list[str] | None = None, **target: str) -> ApprovalSpec:
    return ApprovalSpec.model_validate(
        {
            "target": target
            or {"kind": "ModelDeployment", "name": "pm25-anomaly", "version": "2024.11.3"},
            "decision": "approved",
            "approver": {"username": username, "groups": groups or []},
        }
    )


def test_approvers_are_users_or_groups() -> None:
    approvers = ["user:alice", "group:air-quality-leads", "carol"]
    assert permits(approvers, "alice", []) and permits(approvers, "bob", ["air-quality-leads"])
    assert permits(approvers, "carol", [])
    assert not permits(approvers, "mallory", ["air-quality"])
    assert not permits(approvers, "air-quality-leads", []), "a group is not a user"
    assert permits([], "anyone", []), "without a list, RBAC alone decides"


def test_the_approval_names_the_authenticated_caller_and_the_version() -> None:
    manifest = approval_manifest(request(), ALICE)
    assert manifest["kind"] == "Approval"
    assert manifest["metadata"] == {"generateName": "pm25-anomaly-", "namespace": "city"}
    assert manifest["spec"] == {
        "target": {"kind": "ModelDeployment", "name": "pm25-anomaly", "version": "2024.11.3"},
        "decision": "approved",
        "approver": {"username": "alice", "groups": ["air-quality-leads"]},
        "reason": "checked the report",
    }
    ApprovalSpec.model_validate(manifest["spec"])  # what the CRD's schema admits


def test_an_action_approval_goes_to_the_intents_namespace() -> None:
    action = Request("action", ACTION_ID, "default", "rejected", None)
    manifest = approval_manifest(action, ALICE)
    assert manifest["metadata"]["namespace"] == "city"
    assert manifest["spec"]["target"] == {"kind": "Action", "name": ACTION_ID}


def test_a_model_decision_names_its_version() -> None:
    with pytest.raises(Refused, match="--version"):
        approval_manifest(request(version=None), ALICE)


def test_admission_checks_the_approver_is_the_requesting_user() -> None:
    user = {"username": "alice", "groups": ["air-quality-leads", "system:authenticated"]}
    assert (
        identity_refusal(spec(groups=["air-quality-leads"]).approver, user, "spec.approver") is None
    )
    forged = identity_refusal(spec(username="bob").approver, user, "spec.approver")
    assert forged is not None and "authenticated as 'alice', not 'bob'" in forged
    borrowed = identity_refusal(spec(groups=["city-council"]).approver, user, "spec.approver")
    assert borrowed is not None and "not a member of city-council" in borrowed


@pytest.mark.parametrize(
    ("md", "approval", "message"),
    [
        (waiting("Progressing"), spec(), "is not waiting for a decision"),
        (waiting(), spec(kind="ModelDeployment", name="pm25-anomaly", version="9"), "not 9"),
        (waiting(), spec(username="mallory"), "mallory is not among the approvers"),
        ({"spec": {}, "status": {}}, spec(), "rollout of nothing: none"),
        (None, spec(), "does not exist in namespace city"),
    ],
)
def test_a_model_decision_that_cannot_count_is_refused(md, approval, message) -> None:
    refused = model_deployment_refusal(approval, md, "city")
    assert refused is not None and message in refused
    assert model_deployment_refusal(spec(), waiting(), "city") is None


def test_an_action_decision_is_checked_against_the_current_stage() -> None:
    target = {"kind": "Action", "name": ACTION_ID}
    state = ActionState(
        phase="awaiting-approval", allowed_approvers=["group:street-cleaning"], refused=[]
    )
    lead = spec(groups=["street-cleaning"], **target)
    assert action_refusal(lead, state, "city") is None
    outsider = action_refusal(spec(**target), state, "city")
    assert outsider is not None and "alice is not among the approvers" in outsider
    done = action_refusal(lead, state.model_copy(update={"phase": "executed"}), "city")
    assert done is not None and "not waiting for approval (executed)" in done
    assert "no such action" in (action_refusal(lead, None, "city") or "")
    elsewhere = action_refusal(lead, state, "default")
    assert elsewhere is not None and "belongs to namespace city" in elsewhere


def test_a_recorded_approval_must_be_what_its_approval_object_says() -> None:
    approval = {"spec": spec().model_dump(mode="json", by_alias=True)}
    record = {
        "name": "pm25-anomaly-x7",
        "version": "2024.11.3",
        "decision": "approved",
        "by": "alice",
    }
    assert record_refusal(record, "pm25-anomaly", approval) is None
    assert "does not match" in (
        record_refusal({**record, "by": "mallory"}, "pm25-anomaly", approval) or ""
    )
    assert "does not match" in (record_refusal(record, "other-model", approval) or "")
    assert "only the rollout workflow" in (
        record_refusal({**record, "name": ""}, "pm25-anomaly", None) or ""
    )
    assert "only the rollout workflow" in (record_refusal(record, "pm25-anomaly", None) or "")


def test_targets_name_a_kind_and_an_object() -> None:
    assert parse_target("md/pm25-anomaly") == ("md", "pm25-anomaly")
    assert parse_target("ModelDeployment/x") == ("modeldeployment", "x")
    for bad in ("pm25-anomaly", "widget/x", "md/"):
        with pytest.raises(typer.BadParameter):
            parse_target(bad)
