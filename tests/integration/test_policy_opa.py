"""The OPA connector against a real OPA of its own (so it can be stopped): loading with
OPA's compile errors, decisions by enforcement, fail-closed when OPA is gone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aios.api import Policy
from aios.connectors import opa
from aios.operator.handlers.policy import load
from aios.operator.reconcile.policy import load_plan, module_id
from aios.stack.components import OPA
from aios.stack.process import ManagedProcess, free_port
from aios.stack.site import http_ok

LIBRARY_DIR = Path(__file__).resolve().parents[2] / "policies"
LIBRARY = {
    p.stem: p.read_text() for p in LIBRARY_DIR.glob("*.rego") if not p.stem.endswith("_test")
}


def start_opa(tmp_path: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    process = ManagedProcess(
        "opa",
        [
            OPA.binary(),
            "run",
            "--server",
            f"--addr=127.0.0.1:{port}",
            "--set=decision_logs.console=true",
        ],
        tmp_path / "opa.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    process.wait_healthy(lambda: http_ok(f"{url}/health"), 30)
    return process, url


@pytest.fixture
def opa_server(tmp_path: Path) -> Iterator[tuple[ManagedProcess, str]]:
    process, url = start_opa(tmp_path)
    yield process, url
    process.stop()


@pytest.fixture
def opa_url(opa_server: tuple[ManagedProcess, str]) -> str:
    return opa_server[1]


MODULES = opa.LoadedModules()
"""As the operator holds it: one for every load."""


async def apply(url: str, namespace: str, name: str, **spec: Any) -> None:
    policy = Policy.model_validate({"metadata": {"name": name}, "spec": spec})
    await load(url, load_plan(namespace, name, policy, LIBRARY), MODULES)


def action(
    namespace: str, type_: str = "mqtt", approver: str | None = None, waits: bool = False
) -> dict[str, Any]:
    """A runtime action; ``waits``: it declares a human approval it will wait for."""
    return {
        "kind": "Action",
        "namespace": namespace,
        "intent": {"name": "pm25", "labels": {}, "dataPolicy": {"personalData": False}},
        "action": {
            "name": "dispatch",
            "type": type_,
            "target": "city/district-7/street-cleaning/dispatch",
            "idempotencyKey": "k1",
            "approvalRequired": waits,
        },
        "decision": {
            "rule": "r",
            "fallback": False,
            "model": None,
            "score": None,
            "confidence": None,
            "lineage": {},
        },
        "approver": approver,
        "recentActuations": 0,
        "time": "2026-11-27T10:00:00Z",
    }


async def test_bad_rego_is_refused_with_opas_message_and_line(opa_url: str) -> None:
    bad = "package x\n\nviolation contains msg if {\n  msg := \n}\n"
    with pytest.raises(opa.RegoError) as caught:
        await opa.load_module(opa_url, "t/bad", bad)
    assert "line 5" in str(caught.value) and "rego_parse_error" in str(caught.value)
    assert caught.value.problems[0].row == 5
    assert await opa.get_module(opa_url, "t/bad") is None
    good = 'package x\n\nviolation contains msg if {\n  msg := "no"\n}\n'
    await opa.load_module(opa_url, "t/bad", good)
    assert await opa.get_module(opa_url, "t/bad") == good
    await opa.delete_module(opa_url, "t/bad")
    await opa.delete_module(opa_url, "t/bad")  # already gone: fine
    assert await opa.get_module(opa_url, "t/bad") is None


async def test_without_the_system_policy_nothing_is_authorised(opa_url: str) -> None:
    with pytest.raises(opa.PolicyUnavailable, match="system policy is not loaded"):
        await opa.authorize_action(opa_url, action("city"))


async def test_a_module_policy_denies_an_action_with_its_parameters(opa_url: str) -> None:
    await apply(
        opa_url,
        "city",
        "ana",
        module={"name": "actuation-needs-approval", "parameters": {"actionTypes": ["mqtt"]}},
    )
    denied = await opa.authorize_action(opa_url, action("city"))
    assert not denied.allowed
    assert denied.reasons == [
        'city/ana: mqtt action "dispatch" on "city/district-7/street-cleaning/dispatch" '
        "needs a human approval before it runs"
    ]
    assert re.fullmatch(r"[0-9a-f-]{36}", denied.decision_id), denied.decision_id
    waiting = await opa.authorize_action(opa_url, action("city", waits=True))
    assert waiting.allowed, "an action that waits for its approval may proceed to wait"
    approved = await opa.authorize_action(opa_url, action("city", approver="alice"))
    assert approved.allowed and approved.policies == ["city/ana"]
    assert approved.decision_id != denied.decision_id
    assert (await opa.authorize_action(opa_url, action("city", "webhook"))).allowed
    elsewhere = await opa.authorize_action(opa_url, action("other"))
    assert elsewhere.allowed and elsewhere.policies == []


async def test_library_policies_share_one_module_each_with_its_own_parameters(
    opa_url: str,
) -> None:
    """A library Policy loads data only; one that was inline Rego loses its own module."""
    own = 'package p\n\nviolation contains "own rule" if input.action.type == "webhook"\n'
    await apply(opa_url, "city", "b", rego=own)
    assert await opa.get_module(opa_url, module_id("city", "b")) is not None
    for name, types in (("a", ["mqtt"]), ("b", ["webhook"])):
        await apply(
            opa_url,
            "city",
            name,
            module={"name": "actuation-needs-approval", "parameters": {"actionTypes": types}},
        )
    modules = set(await modules_loaded(opa_url))
    assert modules == {"aios/system", "aios/library/actuation-needs-approval"}
    mqtt = await opa.authorize_action(opa_url, action("city", "mqtt"))
    webhook = await opa.authorize_action(opa_url, action("city", "webhook"))
    assert [r.split(":")[0] for r in mqtt.reasons] == ["city/a"]
    assert [r.split(":")[0] for r in webhook.reasons] == ["city/b"]
    assert all("needs a human approval" in r for r in mqtt.reasons + webhook.reasons)
    await apply(opa_url, "city", "b", rego=own)  # back to its own Rego
    webhook = await opa.authorize_action(opa_url, action("city", "webhook"))
    assert webhook.reasons == ["city/b: own rule"]


async def modules_loaded(url: str) -> list[str]:
    async with opa.client(url) as client:
        return [str(found) for found in await client.get_policies_list()]


async def test_warn_and_dryrun_allow_and_report(opa_url: str) -> None:
    rego = 'package p\n\nviolation contains "watched" if input.action.type == "mqtt"\n'
    await apply(opa_url, "city", "warned", rego=rego, enforcement="warn")
    await apply(opa_url, "city", "counted", rego=rego, enforcement="dryrun")
    decision = await opa.authorize_action(opa_url, action("city", approver="a"))
    assert decision.allowed
    assert decision.warnings == ["city/warned: watched"]
    assert decision.dryrun == ["city/counted: watched"]
    assert decision.reasons == []


async def test_retention_cap_and_audit_of_existing_objects(opa_url: str) -> None:
    assert await opa.max_retention_days(opa_url, "city") is None
    await apply(
        opa_url,
        "city",
        "retention",
        module={"name": "personal-data-retention", "parameters": {"maxDays": 14}},
        scope={"kinds": ["AutomationIntent"]},
    )
    assert await opa.max_retention_days(opa_url, "city") == 14
    assert await opa.max_retention_days(opa_url, "elsewhere") is None

    def intent(days: int) -> dict[str, Any]:
        return {
            "kind": "AutomationIntent",
            "namespace": "city",
            "operation": "AUDIT",
            "object": {
                "metadata": {"name": f"i{days}"},
                "spec": {"dataPolicy": {"personalData": True, "retentionDays": days}},
            },
        }

    findings = await opa.audit_objects(opa_url, "city", "retention", [intent(7), intent(30)])
    assert findings == [(1, "personal data may be kept at most 14 days, not 30")]


async def test_with_opa_stopped_nothing_is_authorised(
    opa_server: tuple[ManagedProcess, str],
) -> None:
    process, url = opa_server
    await apply(url, "city", "ana", module={"name": "actuation-needs-approval"})
    assert (await opa.authorize_action(url, action("city", approver="a"))).allowed
    before = opa.DECISIONS.labels("Action", "unavailable")._value.get()
    process.stop()
    with pytest.raises(opa.PolicyUnavailable, match="unreachable"):
        await opa.authorize_action(url, action("city", approver="a"))
    assert opa.DECISIONS.labels("Action", "unavailable")._value.get() == before + 1
    with pytest.raises(opa.PolicyUnavailable):
        await opa.load_module(url, module_id("city", "x"), "package x")


async def test_a_restarted_opa_is_given_the_modules_again(
    opa_server: tuple[ManagedProcess, str],
) -> None:
    """Loads skip modules the running OPA process was seen holding; a new process holds
    nothing, and is given them again."""
    process, url = opa_server
    await apply(url, "city", "ana", module={"name": "actuation-needs-approval"})
    before = await opa.instance(url)
    assert not (await opa.authorize_action(url, action("city"))).allowed
    process.restart()
    assert await opa.instance(url) != before, "a new process, which holds nothing"
    assert await modules_loaded(url) == []
    await apply(url, "city", "ana", module={"name": "actuation-needs-approval"})
    assert set(await modules_loaded(url)) == {
        "aios/system",
        "aios/library/actuation-needs-approval",
    }
    denied = await opa.authorize_action(url, action("city"))
    assert [r.split(":")[0] for r in denied.reasons] == ["city/ana"]


async def test_an_action_input_must_be_an_action(opa_url: str) -> None:
    with pytest.raises(ValueError, match="kind Action"):
        await opa.authorize_action(opa_url, {"kind": "ModelDeployment"})
