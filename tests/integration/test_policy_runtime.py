"""Policy at run time, through the real action workflow (Temporal), OPA and the audit log:
an action the policy forbids never runs and is audited as denied; with OPA stopped no
action runs, and it runs once OPA answers again; a dry-run Policy applied afterwards lists
exactly the past actions it would have denied."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import failed_attempts
from temporalio.client import Client, WorkflowHandle
from test_operator import wait_for
from test_policy_operator import conditions, policy

from aios.api import Policy
from aios.api.events import ActionRequest
from aios.connectors import audit, opa
from aios.connectors.temporal import connect as connect_temporal
from aios.operator.handlers.policy import library, load
from aios.operator.reconcile.policy import load_plan
from aios.stack.components import OPA
from aios.stack.platform import site_environment
from aios.stack.process import ManagedProcess, free_port
from aios.stack.site import Site, http_ok
from aios.workflows.action_io import AUTHORIZE
from aios.workflows.settings import WorkerSettings
from aios.workflows.worker import build_worker, ensure_search_attributes

TARGETS = """package targets

violation contains msg if {
  not startswith(input.action.target, "https://alerts.city.example/")
  msg := sprintf("%s is not a city alert endpoint", [input.action.target])
}
"""


def action_request(namespace: str, target: str) -> dict[str, Any]:
    key = f"{namespace}.{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC).isoformat()
    intent = {"namespace": namespace, "name": "pm25-alerting", "generation": 1}
    return ActionRequest.model_validate(
        {
            "actionId": key,
            "intent": intent,
            "action": {"name": "notify-health-office", "type": "webhook", "target": target},
            "decision": {
                "decisionId": f"{namespace}/pm25-alerting/{key}",
                "intent": intent,
                "eventId": key,
                "sensorId": "aq-d7-001",
                "time": now,
                "decidedAt": now,
                "outcome": "act",
                "rule": "pm25-static-threshold",
                "fallback": True,
                "fallbackReason": "unavailable",
                "action": "notify-health-office",
                "actionId": key,
                "lineage": {"topic": "aios.district-7.readings", "partition": 0, "offset": 1},
            },
        }
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


@asynccontextmanager
async def worker_for(site: Site, opa_url: str) -> AsyncIterator[tuple[Client, str]]:
    """The real action workflow and activities on a fresh task queue, asking ``opa_url``."""
    client = await connect_temporal(site.endpoints.temporal_address)
    queue = f"test-policy-{uuid.uuid4().hex[:8]}"
    settings = WorkerSettings(
        site.endpoints.temporal_address,
        task_queue=queue,
        env={**site_environment(site), "AIOS_OPA_URL": opa_url},
    )
    await ensure_search_attributes(client, "default")
    async with build_worker(client, settings):
        yield client, queue


async def start(worker: tuple[Client, str], payload: dict[str, Any]) -> WorkflowHandle:
    client, queue = worker
    return await client.start_workflow(
        "ActionWorkflow", payload, id=payload["actionId"], task_queue=queue
    )


def steps(site: Site, action_id: str) -> list[audit.AuditRecord]:
    return [
        r
        for r in audit.read_log(site.endpoints.kafka_bootstrap)
        if r.kind == "action-step" and r.details.get("actionId") == action_id
    ]


async def test_an_action_the_policy_forbids_never_runs_and_is_audited_as_denied(
    site: Site, operator, kubectl, namespace: str, receiver
) -> None:
    manifest = policy("alert-targets", rego=TARGETS, scope={"kinds": ["Action"]})
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
    wait_for(
        lambda: (
            conditions(kubectl, namespace, "alert-targets").get("Ready", {}).get("status") == "True"
        )
    )
    payload = action_request(namespace, f"{receiver.url}/hooks/air")
    async with worker_for(site, site.endpoints.opa_url) as worker:
        result = await (await start(worker, payload)).result()
    assert result["status"] == "denied"
    assert result["reasons"] == [
        f"{namespace}/alert-targets: {receiver.url}/hooks/air is not a city alert endpoint"
    ]
    assert payload["actionId"] not in receiver.idempotency_keys()
    recorded = await asyncio.to_thread(
        wait_for,
        lambda: [r for r in steps(site, payload["actionId"]) if r.details["step"] == "denied"],
    )
    assert recorded[0].policy_decision_id, "the denial names OPA's decision"
    assert "executed" not in [r.details["step"] for r in steps(site, payload["actionId"])]


def look_back(kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    """The Policy's ``status.lookBack`` once the operator has reported one."""
    found = kubectl.json("get", "policy", name, "-n", namespace).get("status") or {}
    return found.get("lookBack")


async def test_a_dry_run_policy_lists_exactly_the_past_actions_it_would_have_denied(
    site: Site, operator, kubectl, namespace: str, receiver
) -> None:
    city = [action_request(namespace, f"{receiver.url}/city/alerts") for _ in range(2)]
    hooks = [action_request(namespace, f"{receiver.url}/hooks/air") for _ in range(3)]
    elsewhere = action_request(f"{namespace}-elsewhere", f"{receiver.url}/hooks/air")
    ran = [*city, *hooks, elsewhere]
    async with worker_for(site, site.endpoints.opa_url) as worker:
        handles = [await start(worker, payload) for payload in ran]
        results = [await handle.result() for handle in handles]
    assert [r["status"] for r in results] == ["executed"] * len(ran)
    await asyncio.to_thread(
        wait_for,
        lambda: all(
            "executed" in [r.details["step"] for r in steps(site, p["actionId"])] for p in ran
        ),
    )

    rego = TARGETS.replace("https://alerts.city.example/", f"{receiver.url}/city/")
    manifest = policy("city-targets", rego=rego, enforcement="dryrun", scope={"kinds": ["Action"]})
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
    found = await asyncio.to_thread(
        wait_for, lambda: look_back(kubectl, namespace, "city-targets"), 90
    )
    assert found["actions"] == len(city) + len(hooks), "the actions of its scope, no other"
    assert found["wouldHaveDeniedCount"] == len(hooks)
    denied = {d["actionId"]: d for d in found["wouldHaveDenied"]}
    assert set(denied) == {p["actionId"] for p in hooks}
    first = denied[hooks[0]["actionId"]]
    assert first["messages"] == [f"{receiver.url}/hooks/air is not a city alert endpoint"]
    assert (first["intent"], first["action"]) == (
        f"{namespace}/pm25-alerting",
        "notify-health-office",
    )
    listed = kubectl("get", "policy", "city-targets", "-n", namespace)
    assert "WOULD-DENY" in listed and listed.split()[-2] == str(len(hooks)), listed


@pytest.fixture
def own_opa(tmp_path: Path) -> Iterator[tuple[ManagedProcess, str]]:
    """An OPA of this test's own, not started yet (the site's stays up for the others)."""
    port = free_port()
    argv = [
        OPA.binary(),
        "run",
        "--server",
        f"--addr=127.0.0.1:{port}",
        "--set=decision_logs.console=true",
    ]
    process = ManagedProcess("opa", argv, tmp_path / "opa.log")
    yield process, f"http://127.0.0.1:{port}"
    process.stop()


@pytest.mark.fault("OPA down (fail closed)")
async def test_with_opa_stopped_no_action_runs_until_it_answers_again(
    site: Site, operator, receiver, own_opa
) -> None:
    process, url = own_opa
    payload = action_request("policy-runtime", f"{receiver.url}/hooks/air")
    async with worker_for(site, url) as worker:  # OPA is not running
        handle = await start(worker, payload)
        await asyncio.to_thread(
            failed_attempts, site.endpoints.temporal_address, handle.id, AUTHORIZE, 2
        )
        state = await handle.query("state")
        assert state["phase"] == "authorizing", state
        assert payload["actionId"] not in receiver.idempotency_keys()

        process.start()
        process.wait_healthy(lambda: http_ok(f"{url}/health"), 30)
        rego = {
            "metadata": {"name": "p"},
            "spec": {"rego": TARGETS.replace("https://alerts.city.example/", receiver.url)},
        }
        policy = Policy.model_validate(rego)
        await load(url, load_plan("policy-runtime", "p", policy, library()), opa.LoadedModules())
        result = await asyncio.wait_for(handle.result(), 60)
    assert result["status"] == "executed"
    assert receiver.idempotency_keys().count(payload["actionId"]) == 1
