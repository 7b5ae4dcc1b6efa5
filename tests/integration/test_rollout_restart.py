"""The rollout is durable: restarting the operator, and the worker, mid-rollout neither
repeats nor skips a step (the workflow drives; the operator only starts or signals)."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from model_support import (
    NEXT,
    apply,
    canary_steps,
    eventually,
    phase,
    rolled_out,
    status,
    wait_for,
)
from support import crash_operator

from aios.operator.reconcile.worker import WORKER

STEPS = [(20, 8), (40, 8), (60, 0)]


def canary(version: str) -> dict:
    rollout = {"strategy": "canary", "steps": canary_steps(STEPS), "analysis": {"minRequests": 20}}
    return rolled_out(version, rollout)


def at_step(kubectl, namespace: str, weight: int) -> bool:
    steps = (status(kubectl, namespace).get("rollout") or {}).get("steps") or []
    return bool(steps) and steps[-1]["weight"] == weight


@pytest.mark.fault("operator killed mid-rollout")
async def test_restarts_mid_rollout_neither_repeat_nor_skip_a_step(
    site, kubectl, stable_served, namespace
):
    stable_served(canary)
    apply(kubectl, namespace, canary(NEXT))

    await eventually(lambda: at_step(kubectl, namespace, 20), 120)
    await asyncio.to_thread(crash_operator, site, kubectl)  # during step 1's pause
    await eventually(lambda: at_step(kubectl, namespace, 40), 120)
    worker = kubectl.json("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/name={WORKER}")
    kubectl(
        "delete", "pod", "-n", namespace, worker["items"][0]["metadata"]["name"], "--wait=false"
    )

    await promoted_taking_each_step_once(kubectl, namespace)


@pytest.mark.fault("API server restarted during a rollout")
async def test_an_api_server_restart_mid_rollout_neither_repeats_nor_skips_a_step(
    site, kubectl, stable_served, namespace
):
    """The operator's watches, the worker's status writes and the kubelet all lose the API
    server during a step's pause; the rollout resumes where it was."""
    stable_served(canary)
    apply(kubectl, namespace, canary(NEXT))

    await eventually(lambda: at_step(kubectl, namespace, 20), 120)
    await asyncio.to_thread(site.restart, "kube-apiserver")
    await promoted_taking_each_step_once(kubectl, namespace)

    def admitted() -> bool:  # kube-proxy and the webhook caught up too: the next test may write
        dry_run = ["apply", "-n", namespace, "--server-side", "--dry-run=server", "-f", "-"]
        return kubectl.run(*dry_run, stdin=yaml.safe_dump(canary(NEXT))).returncode == 0

    wait_for(admitted, what="a write through the admission webhook")


async def promoted_taking_each_step_once(kubectl, namespace: str) -> None:
    """The rollout ends Promoted, each step recorded in order and announced by one Event."""
    found = await eventually(lambda: phase(kubectl, namespace, "Promoted", "RolledBack"), 240)
    rollout = found["rollout"]
    assert rollout["phase"] == "Promoted", rollout["message"]
    assert [s["step"] for s in rollout["steps"]] == [0, 1, 2, 3]
    assert [s["weight"] for s in rollout["steps"]] == [0, 20, 40, 60]
    started = [s["startedAt"] for s in rollout["steps"]]
    assert started == sorted(started)
    events = json.loads(
        kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.name=pm25-anomaly,reason=CanaryStep",
            "-o",
            "json",
        )
    )["items"]
    assert sorted(e["message"].split(":")[0] for e in events) == [
        "step 1/3",
        "step 2/3",
        "step 3/3",
    ], "each step was taken once"
    assert all(e.get("count", 1) == 1 for e in events)
    assert found["activeVersion"] == NEXT


async def test_deleting_it_mid_rollout_ends_the_workflow(site, kubectl, stable_served, namespace):
    from temporalio.client import Client, WorkflowExecutionStatus

    stable_served(canary)
    apply(kubectl, namespace, canary(NEXT))
    await eventually(lambda: at_step(kubectl, namespace, 20), 120)
    workflow_id = status(kubectl, namespace)["rollout"]["workflowId"]

    kubectl("delete", "modeldeployment", "pm25-anomaly", "-n", namespace, "--timeout=60s")
    temporal = await Client.connect(site.endpoints.temporal_address)
    described = await temporal.get_workflow_handle(workflow_id).describe()
    assert described.status == WorkflowExecutionStatus.TERMINATED
