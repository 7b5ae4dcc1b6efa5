"""What the operator loads into OPA for a Policy, and what admission and status say."""

from __future__ import annotations

from typing import Any

import pytest

from aios.operator.reconcile import policy as plan
from aios.operator.reconcile.bookkeeping import LAST_APPLIED
from aios.operator.reconcile.conditions import ConditionUpdate


def test_inline_rego_gets_the_policy_package_in_place(policy) -> None:
    rego = "# no GPUs\npackage whatever.they.wrote\n\nviolation contains msg if false\n"
    loaded = plan.load_plan("pilot", "no-gpu", policy(rego=rego), {})
    assert loaded.module_id == "aios/policies/pilot/no-gpu"
    assert loaded.rego.splitlines()[1] == 'package aios.policies["pilot"]["no-gpu"]'
    assert loaded.line_offset == 0 and loaded.library is None and loaded.parameters == {}


def test_rego_without_a_package_gets_one_and_lines_are_reported_as_written(policy) -> None:
    loaded = plan.load_plan("a", "b", policy(rego="violation contains 1 if {\n"), {})
    assert loaded.rego.startswith('package aios.policies["a"]["b"]\nviolation')
    assert loaded.line_offset == 1
    assert (
        plan.user_lines("line 3, column 1: unexpected eof", 1) == "line 2, column 1: unexpected eof"
    )
    assert plan.user_lines("line 1: x", 1) == "line 1: x"
    assert plan.user_lines("line 7: x", 0) == "line 7: x"


def test_a_library_policy_is_data_only_naming_its_module_and_parameters(policy) -> None:
    spec = {"module": {"name": "actuation-needs-approval", "parameters": {"actionTypes": ["mqtt"]}}}
    loaded = plan.load_plan("city", "ana", policy(**spec), {"actuation-needs-approval": "lib"})
    assert loaded.library == ("aios/library/actuation-needs-approval", "lib")
    assert loaded.rego is None, "no module of its own: loading it compiles nothing"
    assert loaded.registry["library"] == "actuation-needs-approval"
    assert loaded.parameters == {"actionTypes": ["mqtt"]}
    assert loaded.parameters_path == "aios_index/parameters/city/ana"
    assert (
        loaded.source == "lib" and loaded.decisions_path == "aios/library/actuation-needs-approval"
    )
    inline = plan.load_plan("city", "own", policy(rego="package x"), {})
    assert "library" not in inline.registry and inline.decisions_path == "aios/policies/city/own"


def test_no_data_path_is_an_ancestor_of_a_module_path(policy) -> None:
    """OPA reads every rule path's ancestors on each data write: data beneath one of them
    is copied whole on every write of a Policy's entry (an O(Policies) write)."""
    spec = {"module": {"name": "actuation-needs-approval", "parameters": {}}}
    library = plan.load_plan("city", "ana", policy(**spec), {"actuation-needs-approval": "lib"})
    inline = plan.load_plan("city", "own", policy(rego="package x"), {})
    modules = {plan.SYSTEM_MODULE_ID, library.decisions_path, inline.module_id}
    data = {library.registry_path, library.parameters_path, *library.scope_paths}
    for path in data:
        for module in modules:
            assert path.split("/")[0] != module.split("/")[0], (path, module)


def test_an_unknown_module_names_the_known_ones(policy) -> None:
    with pytest.raises(plan.UnknownModule, match=r"no module 'nope'.*known: a, b"):
        plan.load_plan("n", "p", policy(module={"name": "nope"}), {"b": "", "a": ""})


def test_registry_scope_defaults_to_the_policy_namespace(policy) -> None:
    entry = plan.registry_entry("city", policy(rego="package x", enforcement="warn"))
    assert entry == {
        "enforcement": "warn",
        "kinds": ["ModelDeployment", "AutomationIntent", "EdgeGateway", "Action"],
        "namespaces": ["city"],
    }
    scoped = policy(
        rego="package x",
        scope={
            "kinds": ["Action"],
            "namespaces": ["*"],
            "labelSelector": {"matchLabels": {"a": "b"}},
        },
    )
    assert plan.registry_entry("city", scoped) == {
        "enforcement": "deny",
        "kinds": ["Action"],
        "namespaces": ["*"],
        "labelSelector": {"matchLabels": {"a": "b"}},
    }


def test_conditions_for_each_outcome(policy) -> None:
    loaded = plan.load_plan("n", "p", policy(rego="package x"), {})
    assert {(u.type, u.status) for u in plan.loaded_conditions(loaded)} == {
        ("Compiled", "True"),
        ("Loaded", "True"),
        ("Ready", "True"),
    }
    rejected = {u.type: u for u in plan.rejected_conditions("RegoError", "line 2: bad", True)}
    assert rejected["Compiled"].status == "False" and rejected["Compiled"].message == "line 2: bad"
    assert "previously loaded version is still enforced" in rejected["Loaded"].message
    first = {u.type: u for u in plan.rejected_conditions("RegoError", "x", False)}
    assert "Nothing is enforced" in first["Loaded"].message
    assert {u.type for u in plan.unavailable_conditions("down")} == {"Loaded", "Ready"}


def test_a_retry_that_concludes_the_same_is_not_audited_again() -> None:
    updates = [ConditionUpdate("Ready", "False", "RegoError", "line 1: x")]
    status = {
        "observedGeneration": 2,
        "conditions": [{"type": "Ready", "status": "False", "message": "line 1: x"}],
    }
    assert plan.already_reported(status, 2, updates)
    assert not plan.already_reported(status, 3, updates)
    assert not plan.already_reported(status, 2, [ConditionUpdate("Ready", "True", "Loaded", "")])


def body(spec: dict[str, Any], labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "pilot", "labels": labels or {}, **meta},
        "spec": spec,
        "status": {"observedGeneration": 1},
    }


def test_admission_reviews_user_changes_only() -> None:
    old = body({"a": 1})
    assert plan.needs_review("CREATE", old, None)
    assert plan.needs_review("UPDATE", body({"a": 2}), old)
    assert plan.needs_review("UPDATE", body({"a": 1}, {"tier": "x"}), old)
    assert not plan.needs_review("UPDATE", body({"a": 1}, finalizers=["aios.dev/x"]), old)
    assert not plan.needs_review("UPDATE", body({"a": 2}, deletionTimestamp="now"), old)


def test_the_review_input_carries_object_user_and_no_status() -> None:
    bookkeeping = {LAST_APPLIED: '{"spec": {"a": 1}}', "team": "air"}
    new = body({"a": 2}, managedFields=[{"manager": "kubectl"}], annotations=bookkeeping)
    document = plan.review(new, "UPDATE", body({"a": 1}), {"username": "ana", "groups": ["g"]})
    assert document["kind"] == "ModelDeployment" and document["namespace"] == "pilot"
    assert document["object"]["spec"] == {"a": 2} and "status" not in document["object"]
    assert "managedFields" not in document["object"]["metadata"]
    assert document["object"]["metadata"]["annotations"] == {"team": "air"}, "as audits have it"
    assert document["oldObject"]["spec"] == {"a": 1}
    assert document["user"] == {"username": "ana", "groups": ["g"]}
    assert document["approver"] is None
    promote = plan.review(new, "PROMOTE", approver="lead@city")
    assert (promote["operation"], promote["approver"]) == ("PROMOTE", "lead@city")


def test_violations_in_status_are_bounded_and_counted() -> None:
    reviews = [plan.review(body({}, name=f"m{i:03}"), "AUDIT") for i in range(120)]
    findings = [(i, "too big") for i in reversed(range(120))]
    status = plan.violations_status(reviews, findings, limit=50)
    assert status["violationCount"] == 120
    assert len(status["violations"]) == 50
    assert status["violations"][0] == {
        "kind": "ModelDeployment",
        "namespace": "pilot",
        "name": "m000",
        "message": "too big",
    }
    assert plan.violations_status([], []) == {"violations": [], "violationCount": 0}


def step(action_id: str, at: str, asked: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """``(time, details)`` of an ``action-step`` audit record."""
    details: dict[str, Any] = {
        "actionId": action_id,
        "intent": {"namespace": "city", "name": "pm25"},
        "action": {"name": "notify"},
    }
    if asked is not None:
        details["policyInput"] = asked
    return at, details


def test_a_past_action_is_asked_about_the_last_document_opa_decided_on() -> None:
    first = {"approver": None, "time": "2026-12-01T10:00:00+00:00"}
    after_approval = {"approver": "ana", "time": "2026-12-01T10:05:00+00:00"}
    actions = plan.past_actions(
        [
            step("a1", "t1", None),  # requested: OPA not asked yet
            step("a1", "t2", first),
            step("a2", "t3", {"approver": None}),
            step("a1", "t4", after_approval),  # executed, after the approval
        ]
    )
    assert [a.action_id for a in actions] == ["a2", "a1"], "ordered by their last decision"
    assert actions[1].asked == after_approval
    assert actions[1].decided_at == "2026-12-01T10:05:00+00:00", "OPA's time, not the record's"
    assert actions[0].decided_at == "t3", "the record's time when the document has none"
    assert (actions[1].intent, actions[1].action) == ("city/pm25", "notify")


def test_the_look_back_reports_the_denials_among_the_latest_covered_actions() -> None:
    actions = plan.past_actions(step(f"a{i}", f"t{i}", {}) for i in range(150))
    covered = [i for i in range(150) if i % 3]  # the others are out of scope
    findings = [(i, "not a city endpoint") for i in range(0, 150, 2)]
    status = plan.look_back_status(actions, covered, findings, limit=5)
    newest = covered[-plan.LOOK_BACK_ACTIONS :]
    expected = [i for i in reversed(newest) if i % 2 == 0]
    assert status["actions"] == plan.LOOK_BACK_ACTIONS
    assert status["wouldHaveDeniedCount"] == len(expected)
    assert [d["actionId"] for d in status["wouldHaveDenied"]] == [f"a{i}" for i in expected[:5]]
    assert status["wouldHaveDenied"][0]["messages"] == ["not a city endpoint"]
    assert plan.look_back_status([], [], []) == {
        "actions": 0,
        "wouldHaveDenied": [],
        "wouldHaveDeniedCount": 0,
    }


def test_only_a_dry_run_policy_over_actions_looks_back(policy) -> None:
    rego = "package p\nviolation contains 1 if false\n"
    assert plan.looks_back(policy(rego=rego, enforcement="dryrun", scope={"kinds": ["Action"]}))
    assert not plan.looks_back(policy(rego=rego, enforcement="deny", scope={"kinds": ["Action"]}))
    assert not plan.looks_back(
        policy(rego=rego, enforcement="dryrun", scope={"kinds": ["AutomationIntent"]})
    )


def test_an_audit_sends_only_the_namespaces_a_scope_names_unless_one_is_a_pattern(policy) -> None:
    own = plan.registry_entry("pilot", policy(rego="package x"))
    assert plan.literal_namespaces(own["namespaces"]) == ["pilot"], "its own, by default"
    assert plan.literal_namespaces(["north", "south", "north"]) == ["north", "south"]
    for pattern in ("*", "lab-*", "lab-?", "lab-[12]", "{north,south}"):
        assert plan.literal_namespaces(["pilot", pattern]) is None, pattern
