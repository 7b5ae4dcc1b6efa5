"""The Policy reconcile against the real API server and OPA: OPA's compile errors in
status, the example Policy enforced before actions, unloading, periodic audit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import yaml
from test_operator import wait_for

from aios.connectors import opa
from aios.operator.reconcile.policy import (
    module_id,
    parameters_path,
    registry_path,
    review,
    scope_path,
)
from aios.stack.platform import EXAMPLES
from aios.stack.site import Site

T = TypeVar("T")


def ask(call: Awaitable[T]) -> T:
    """One call to OPA from a test, in an event loop of its own that closes the connection
    it opened (``aios.connectors.opa`` keeps one per loop)."""

    async def once() -> T:
        try:
            return await call
        finally:
            await opa.close_clients()

    return asyncio.run(once())


def apply(kubectl, namespace: str, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))


def policy(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "Policy",
        "metadata": {"name": name},
        "spec": spec,
    }


def conditions(kubectl, namespace: str, name: str, generation: int | None = None) -> dict:
    """The Policy's conditions once the operator has observed (that) generation."""
    obj = kubectl.json("get", "policy", name, "-n", namespace)
    status = obj.get("status") or {}
    wanted = generation or obj["metadata"]["generation"]
    if status.get("observedGeneration") != wanted:
        return {}
    return {c["type"]: c for c in status.get("conditions") or []}


def action(namespace: str, approver: str | None = None, waits: bool = False) -> dict[str, Any]:
    """A runtime action; ``waits``: it declares a human approval it will wait for."""
    return {
        "kind": "Action",
        "namespace": namespace,
        "intent": {"name": "pm25-alerting", "labels": {}, "dataPolicy": {}},
        "action": {
            "name": "dispatch-street-cleaning",
            "type": "mqtt",
            "target": "city/district-7/street-cleaning/dispatch",
            "idempotencyKey": "a1",
            "approvalRequired": waits,
        },
        "decision": {
            "rule": "pm25-sustained",
            "fallback": False,
            "model": None,
            "score": 0.95,
            "confidence": 0.9,
            "lineage": {},
        },
        "approver": approver,
        "recentActuations": 0,
        "time": "2026-11-27T10:00:00Z",
    }


BAD_REGO = """package whatever

violation contains msg if {
  input.kind == "ModelDeployment"
  msg :=
}
"""
GOOD_REGO = BAD_REGO.replace("msg :=\n", 'msg := "no models here"\n')


def test_bad_rego_shows_opas_message_and_line_then_fixed_rego_loads(
    kubectl, operator, namespace: str, site: Site
) -> None:
    apply(kubectl, namespace, policy("rules", rego=BAD_REGO))
    failed = wait_for(lambda: conditions(kubectl, namespace, "rules"))
    compiled = failed["Compiled"]
    assert compiled["status"] == "False" and compiled["reason"] == "RegoError"
    assert "line 6" in compiled["message"] and "rego_parse_error" in compiled["message"]
    assert failed["Ready"]["status"] == "False"
    assert failed["Loaded"]["status"] == "False"
    assert "Nothing is enforced" in failed["Loaded"]["message"]

    apply(kubectl, namespace, policy("rules", rego=GOOD_REGO))
    loaded = wait_for(lambda: conditions(kubectl, namespace, "rules", 2))
    assert {t: loaded[t]["status"] for t in ("Compiled", "Loaded", "Ready")} == {
        "Compiled": "True",
        "Loaded": "True",
        "Ready": "True",
    }
    source = ask(opa.get_module(site.endpoints.opa_url, module_id(namespace, "rules")))
    assert source is not None
    assert f'package aios.policies["{namespace}"]["rules"]' in source
    obj = wait_for(
        lambda: (
            (o := kubectl.json("get", "policy", "rules", "-n", namespace))["status"].get(
                "loadedPath"
            )
            and o
        )
    )
    assert obj["status"]["loadedPath"] == f"aios/policies/{namespace}/rules"

    # Broken again: the last good version stays enforced, and status says so.
    apply(kubectl, namespace, policy("rules", rego=BAD_REGO))
    again = wait_for(lambda: conditions(kubectl, namespace, "rules", 3))
    assert again["Compiled"]["status"] == "False"
    assert "previously loaded version is still enforced" in again["Loaded"]["message"]


def test_an_unknown_module_is_named(kubectl, operator, namespace: str) -> None:
    apply(kubectl, namespace, policy("typo", module={"name": "actuation-needs-aproval"}))
    failed = wait_for(lambda: conditions(kubectl, namespace, "typo"))
    assert failed["Compiled"]["reason"] == "UnknownModule"
    assert "actuation-needs-approval" in failed["Compiled"]["message"]  # the known ones


def test_the_example_policy_guards_actions_until_it_is_deleted(
    kubectl, operator, namespace: str, site: Site
) -> None:
    url = site.endpoints.opa_url
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "actuation-needs-approval.yaml"))
    wait_for(
        lambda: (
            conditions(kubectl, namespace, "actuation-needs-approval")
            .get("Ready", {})
            .get("status")
            == "True"
        )
    )

    denied = ask(opa.authorize_action(url, action(namespace)))
    assert not denied.allowed
    assert denied.reasons == [
        f'{namespace}/actuation-needs-approval: mqtt action "dispatch-street-cleaning" on '
        '"city/district-7/street-cleaning/dispatch" needs a human approval before it runs'
    ]
    assert ask(opa.authorize_action(url, action(namespace, "supervisor-1"))).allowed
    assert ask(opa.authorize_action(url, action(namespace, waits=True))).allowed
    assert ask(opa.authorize_action(url, action(f"{namespace}-other"))).allowed

    indexed = scope_path("Action", namespace, "actuation-needs-approval")
    assert ask(opa.get_data(url, indexed)) == {}  # found by its kind, not by a walk

    # a scope that changes kinds moves its index entry
    kubectl(
        "patch", "policy", "actuation-needs-approval", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"scope": {"kinds": ["ModelDeployment", "Action"]}}}',
    )  # fmt: skip
    moved = scope_path("ModelDeployment", namespace, "actuation-needs-approval")
    wait_for(lambda: ask(opa.get_data(url, moved)) == {}, what="the index follows")
    kubectl(
        "patch", "policy", "actuation-needs-approval", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"scope": {"kinds": ["ModelDeployment"]}}}',
    )  # fmt: skip
    wait_for(lambda: ask(opa.get_data(url, indexed)) is None, what="Action unindexed")
    assert ask(opa.authorize_action(url, action(namespace))).allowed

    kubectl("delete", "policy", "actuation-needs-approval", "-n", namespace, "--timeout=30s")
    for path in (registry_path, parameters_path):
        assert ask(opa.get_data(url, path(namespace, "actuation-needs-approval"))) is None
    assert ask(opa.get_data(url, moved)) is None


def test_a_retention_policy_caps_personal_data_retention(
    kubectl, operator, namespace: str, site: Site
) -> None:
    apply(
        kubectl,
        namespace,
        policy(
            "retention",
            module={"name": "personal-data-retention", "parameters": {"maxDays": 14}},
            scope={"kinds": ["AutomationIntent"]},
        ),
    )
    wait_for(
        lambda: conditions(kubectl, namespace, "retention").get("Ready", {}).get("status") == "True"
    )
    assert ask(opa.max_retention_days(site.endpoints.opa_url, namespace)) == 14
    assert ask(opa.max_retention_days(site.endpoints.opa_url, f"{namespace}-x")) is None


def violations(kubectl, namespace: str, name: str, count: int) -> dict | None:
    """The Policy's status once it reports ``count`` violations."""
    status = kubectl.json("get", "policy", name, "-n", namespace).get("status") or {}
    return status if status.get("violationCount") == count else None


def model_deployment(name: str, gpu: int) -> dict[str, Any]:
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": name, "version": "1", "storageUri": f"s3://models/{name}/1"},
            "resources": {"gpu": gpu},
        },
    }


NO_GPU = """package rules

violation contains msg if {
  gpus := input.object.spec.resources.gpu
  gpus > 0
  msg := sprintf("%s asks for %d GPUs", [input.object.metadata.name, gpus])
}
"""


def test_existing_objects_are_audited_into_bounded_status(
    kubectl, operator, namespace: str
) -> None:
    for name, gpu in [("a-gpu", 1), ("b-cpu", 0), ("c-gpu", 2)]:
        apply(kubectl, namespace, model_deployment(name, gpu))
    apply(
        kubectl,
        namespace,
        policy("no-gpu", rego=NO_GPU, enforcement="dryrun", scope={"kinds": ["ModelDeployment"]}),
    )
    status = wait_for(lambda: violations(kubectl, namespace, "no-gpu", 2), timeout=60)
    assert status["violations"] == [
        {
            "kind": "ModelDeployment",
            "namespace": namespace,
            "name": "a-gpu",
            "message": "a-gpu asks for 1 GPUs",
        },
        {
            "kind": "ModelDeployment",
            "namespace": namespace,
            "name": "c-gpu",
            "message": "c-gpu asks for 2 GPUs",
        },
    ]
    row = kubectl("get", "policy", "no-gpu", "-n", namespace).splitlines()[1].split()
    assert row[:5] == ["no-gpu", "dryrun", "True", "True", "2"]

    kubectl("delete", "modeldeployment", "a-gpu", "-n", namespace, "--timeout=30s")
    assert wait_for(lambda: violations(kubectl, namespace, "no-gpu", 1), timeout=60)


def test_model_approval_at_admission_and_before_promotion(
    kubectl, operator, namespace: str, site: Site
) -> None:
    apply(
        kubectl,
        namespace,
        policy("models", module={"name": "model-approval"}, scope={"kinds": ["ModelDeployment"]}),
    )
    wait_for(
        lambda: conditions(kubectl, namespace, "models").get("Ready", {}).get("status") == "True"
    )
    # pm25-forecast promotes without an approval: refused; pm25-anomaly waits for one.
    forecast = kubectl.run("apply", "-n", namespace, "-f", str(EXAMPLES / "pm25-forecast.yaml"))
    assert forecast.returncode != 0
    assert "promotion of model pm25-forecast 2024.10.0 must wait for a recorded human approval" in (
        forecast.stderr
    )
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "pm25-anomaly.yaml"))

    stored = kubectl.json("get", "modeldeployment", "pm25-anomaly", "-n", namespace)
    url = site.endpoints.opa_url
    unapproved = ask(opa.evaluate(url, review(stored, "PROMOTE")))
    assert unapproved.reasons == [
        f"{namespace}/models: model pm25-anomaly 2024.11.2 cannot be promoted: no approval recorded"
    ]
    approved = ask(opa.evaluate(url, review(stored, "PROMOTE", approver="lead@city")))
    assert approved.allowed
