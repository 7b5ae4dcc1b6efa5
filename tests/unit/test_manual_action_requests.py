"""A person's action (ManualAction), purely: what is admitted, the request it starts, what
the workflow's activities make of it, and how the audit trail links a reversal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from aios.api import AutomationIntent, ManualAction
from aios.api.approval import User
from aios.api.events import ActionRequest
from aios.api.manual_action import manual_action_manifest
from aios.cli.audit import lines
from aios.cli.main import app
from aios.cli.manual_actions import started
from aios.connectors import audit
from aios.connectors.audit import AuditRecord
from aios.connectors.audit import log as audit_log
from aios.connectors.audit.lineage import trace
from aios.operator.reconcile.manual_action import (
    Original,
    act_refusal,
    manual_request,
    revert_id,
    revert_refusal,
)
from aios.workflows.action_activities import payload_fields, policy_input, step_details
from aios.workflows.action_io import ActionStep

NOW = datetime(2026, 12, 3, 17, tzinfo=UTC)
ACTIONS = [
    {"name": "notify", "type": "webhook", "target": "http://hooks/notify"},
    {
        "name": "dispatch",
        "type": "webhook",
        "target": "http://hooks/dispatch",
        "compensation": "recall",
    },
    {"name": "recall", "type": "webhook", "target": "http://hooks/recall"},
]


def intent_body(actions: list[dict[str, Any]] = ACTIONS) -> dict[str, Any]:
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "AutomationIntent",
        "metadata": {"name": "smoke", "namespace": "city", "generation": 4, "labels": {"a": "b"}},
        "spec": {"sources": [{"name": "r", "kafkaTopic": "readings"}], "actions": actions},
    }


INTENT = AutomationIntent.model_validate(intent_body())


def manual(uid: str = "u-1", **spec: Any) -> ManualAction:
    return ManualAction.model_validate(
        {
            "apiVersion": "aios.dev/v1alpha1",
            "kind": "ManualAction",
            "metadata": {
                "name": f"smoke-{uid}",
                "namespace": "city",
                "uid": uid,
                "creationTimestamp": NOW.isoformat(),
            },
            "spec": {
                "reason": "smoke seen on Elm Street",
                "requestedBy": {"username": "alice", "groups": ["duty-officers"]},
                **spec,
            },
        }
    )


def test_a_manual_action_names_one_action_or_one_reversal() -> None:
    with pytest.raises(ValidationError, match="exactly one of action, reverts"):
        manual(intent="smoke")
    with pytest.raises(ValidationError, match="exactly one of action, reverts"):
        manual(intent="smoke", action="notify", reverts="city.x")
    with pytest.raises(ValidationError, match="an action is named with its intent"):
        manual(action="notify")
    with pytest.raises(ValidationError, match="reason"):
        manual(intent="smoke", action="notify", reason="")
    assert manual(reverts="city.smoke.dispatch.abc").spec.intent is None


def test_a_compensation_is_another_declared_action() -> None:
    unknown = [*ACTIONS[:2], {**ACTIONS[0], "name": "other"}]
    with pytest.raises(ValidationError, match="every compensation must name an action"):
        AutomationIntent.model_validate(intent_body(unknown))
    itself = [{**ACTIONS[0], "compensation": "notify"}]
    with pytest.raises(ValidationError, match="cannot be its own compensation"):
        AutomationIntent.model_validate(intent_body(itself))


def test_an_action_is_admitted_when_its_intent_declares_it() -> None:
    spec = manual(intent="smoke", action="notify").spec
    assert act_refusal(spec, intent_body(), "city") is None
    missing = act_refusal(spec, None, "city")
    assert missing == "spec.intent: automationintent/smoke does not exist in namespace city"
    other = act_refusal(manual(intent="smoke", action="evacuate").spec, intent_body(), "city")
    assert other is not None and other.startswith("spec.action:")
    assert "no action 'evacuate' (it declares: notify, dispatch, recall)" in other


def test_the_request_runs_the_declared_action_for_the_person_once_per_object() -> None:
    asked = manual(intent="smoke", action="notify", sensorId="aq-1")
    request = manual_request(asked, INTENT, None)
    assert request.action.target == "http://hooks/notify" and request.decision is None
    assert request.action_id.startswith("city.smoke.notify.")
    assert request.action_id == manual_request(asked, INTENT, None).action_id, "a retry: same id"
    assert (
        request.action_id
        != manual_request(
            manual("u-2", **asked.spec.model_dump(by_alias=True)), INTENT, None
        ).action_id
    )
    assert request.manual is not None
    assert (request.manual.requested_by.username, request.manual.reason) == (
        "alice",
        "smoke seen on Elm Street",
    )
    assert request.manual.requested_at == NOW and request.sensor_id == "aq-1"
    assert request.intent.generation == 4 and request.intent_labels == {"a": "b"}
    assert request.actions_topic == "aios.city.smoke.actions"
    assert request.trace_id is None


def executed(action: str = "dispatch") -> ActionRequest:
    return manual_request(manual(intent="smoke", action=action, sensorId="aq-1"), INTENT, None)


def test_a_reversal_runs_the_compensation_under_an_id_derived_from_the_original() -> None:
    original = executed()
    request = manual_request(manual("u-3", reverts=original.action_id), INTENT, original)
    assert request.action.name == "recall"
    assert request.action_id == revert_id(original.action_id) == f"{original.action_id}.revert"
    assert request.manual is not None and request.manual.reverts == original.action_id
    assert request.sensor_id == "aq-1", "the original's sensor"


@pytest.mark.parametrize(
    ("found", "wanted"),
    [
        (Original(None, None, False), "no such action"),
        (Original(executed("notify"), "executed", False), "declares no compensation"),
        (Original(executed(), "denied", False), "has not run (denied): there is nothing to undo"),
        (Original(executed(), "executed", True), "was already reverted (action/"),
    ],
)
def test_a_reversal_is_refused_saying_why(found: Original, wanted: str) -> None:
    target = found.request.action_id if found.request else "city.smoke.dispatch.x"
    refused = revert_refusal(manual(reverts=target).spec, found, intent_body(), "city")
    assert refused is not None and refused.startswith("spec.reverts:") and wanted in refused


def test_a_reversal_of_an_executed_compensated_action_is_admitted_once() -> None:
    original = executed()
    found = Original(original, "executed", False)
    assert (
        revert_refusal(manual(reverts=original.action_id).spec, found, intent_body(), "city")
        is None
    )
    elsewhere = revert_refusal(
        manual(reverts=original.action_id).spec, found, intent_body(), "town"
    )
    assert elsewhere is not None and "belongs to namespace city" in elsewhere
    wrong = manual(reverts=original.action_id, intent="other").spec
    assert "is an action of smoke, not other" in (
        revert_refusal(wrong, found, intent_body(), "city") or ""
    )
    reversal = manual_request(manual("u-4", reverts=original.action_id), INTENT, original)
    twice = revert_refusal(
        manual(reverts=reversal.action_id).spec,
        Original(reversal, "executed", False),
        intent_body(),
        "city",
    )
    assert twice is not None and "cannot be reverted" in twice
    gone = intent_body([ACTIONS[1] | {"compensation": None}])
    assert "its compensation" in (
        revert_refusal(manual(reverts=original.action_id).spec, found, gone, "city") or ""
    )


def test_the_activities_see_the_person_instead_of_a_decision() -> None:
    request = executed("notify")
    asked = policy_input(request, None, 0, NOW)
    assert asked["decision"] is None
    assert (asked["requestedBy"], asked["reason"]) == ("alice", "smoke seen on Elm Street")
    fields = payload_fields(request, None)
    assert (fields["requestedBy"], fields["sensorId"], fields["rule"]) == ("alice", "aq-1", "")
    assert fields["time"] == NOW.isoformat()
    details = step_details(request, ActionStep(request, "requested", {"status": "pending"}))
    assert details["decision"] is None and details["requestedBy"] == "alice"
    assert "reverts" not in details


def raw_record(seq: int, request: ActionRequest, step: str) -> str:
    """One ``action-step`` line of the log as the appender writes it (unchained here)."""
    details = step_details(request, ActionStep(request, step, {"status": step}))
    return json.dumps(
        {
            "seq": seq,
            "eventId": f"{request.action_id}:{step}",
            "time": NOW.isoformat(),
            "kind": "action-step",
            "subject": f"action/{request.action_id}",
            "actor": "alice",
            "details": details,
            "prevHash": "0" * 64,
            "hash": "0" * 64,
        }
    )


def record(seq: int, request: ActionRequest, step: str) -> AuditRecord:
    return AuditRecord.parse(raw_record(seq, request, step))


def test_the_audit_trail_links_a_reversal_and_the_action_it_undoes() -> None:
    original = executed()
    reversal = manual_request(manual("u-5", reverts=original.action_id), INTENT, original)
    records = [record(1, original, "executed"), record(2, reversal, "executed")]
    first, second = trace(records, original.action_id), trace(records, reversal.action_id)
    assert first["revertedBy"] == reversal.action_id and first["requestedBy"] == "alice"
    assert second["reverts"] == original.action_id and second["revertedBy"] is None
    shown = dict(lines(first))
    assert shown["requested by"] == "alice: smoke seen on Elm Street"
    assert shown["reverted by"] == reversal.action_id and "sensor readings" not in shown
    assert dict(lines(second))["reverts"] == original.action_id


def test_the_cli_asks_as_the_authenticated_user_and_waits_for_the_start() -> None:
    who = User.authenticated("alice", ("duty-officers", "system:authenticated"))
    body = manual_action_manifest("city", who, "smoke", "smoke", "notify", sensor="aq-1")
    spec = ManualAction.model_validate({**body, "metadata": {"name": "x"}}).spec
    assert spec.requested_by.groups == ["duty-officers"] and spec.sensor_id == "aq-1"
    assert body["metadata"]["generateName"] == "smoke-notify-"
    assert started({}) is None
    ready = {"type": "Ready", "status": "True", "reason": "Started"}
    assert started({"status": {"actionId": "a1", "conditions": [ready]}}) == ("a1", "")
    refused = {"type": "Ready", "status": "False", "reason": "AlreadyStarted", "message": "m"}
    assert started({"status": {"conditions": [refused]}}) == ("", "AlreadyStarted: m")
    retried = {**refused, "reason": "ReconcileError"}
    assert started({"status": {"conditions": [retried]}}) is None


def test_trace_waits_for_policys_answer_and_says_when_it_gave_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``aiosctl act`` returns as the workflow starts; its request is audited a moment
    later and policy's answer a moment after that: ``trace --wait`` reads the log again
    until the answer is there, and prints what it holds when the wait ends first."""
    action = executed()
    log = tmp_path / "audit.log"
    other = manual_request(manual("u-9", intent="smoke", action="notify"), INTENT, None)
    log.write_text(raw_record(0, other, "authorized") + "\n")
    appended = iter([raw_record(1, action, "requested"), raw_record(2, action, "authorized")])
    reads: list[int] = []

    def read_then_append(path: Path) -> list[str]:
        raw = audit_log.read_file(path)
        step = next(appended, None)  # each step lands after a read, as after act returns
        if step is not None:
            with path.open("a") as log_file:
                log_file.write(step + "\n")
        reads.append(len(raw))
        return raw

    monkeypatch.setattr(audit, "read_file", read_then_append)
    cli = CliRunner()
    trace_cli = ["audit", "trace", action.action_id, "--file", str(log), "-o", "json"]
    waited = cli.invoke(app, [*trace_cli, "--wait", "30"])
    assert waited.exit_code == 0, waited.output
    lineage = json.loads(waited.stdout)
    assert [s["step"] for s in lineage["steps"]] == ["requested", "authorized"]
    assert lineage["requestedBy"] == "alice" and reads == [1, 2, 3]

    undecided = manual_request(manual("u-8", intent="smoke", action="notify"), INTENT, None)
    log.write_text(raw_record(0, undecided, "requested") + "\n")
    read_before = len(reads)
    pending_cli = ["audit", "trace", undecided.action_id, "--file", str(log), "-o", "json"]
    pending = cli.invoke(app, [*pending_cli, "--wait", "0.5"])
    assert pending.exit_code == 0, pending.output
    assert json.loads(pending.stdout)["result"] == {"status": "requested"}
    assert len(reads) - read_before >= 2, "the log was read again while waiting"

    missing = ["audit", "trace", "no-such-action", "--file", str(log)]
    hurried = cli.invoke(app, missing)
    assert hurried.exit_code == 1 and "--wait SECONDS reads the log again" in hurried.stderr
    gave_up = cli.invoke(app, [*missing, "--wait", "0.5"])
    assert gave_up.exit_code == 1 and "within 0.5s" in gave_up.stderr
