"""Promotion waits for a human: ``aiosctl approve`` (an Approval, admitted for the user
the API server authenticated) promotes, ``aiosctl reject`` rolls back; who and when are
recorded. The gate holds the traffic: the new version never serves all of it before the
approval. Forgeries fail and are audited: an outsider's Approval, a status patch claiming
an approval (of the ModelDeployment, or of the ModelRollout its workflow publishes into), a
raw Temporal signal carrying an approver's name."""

from __future__ import annotations

import json

import yaml
from model_support import (
    ENDED,
    NEXT,
    STABLE,
    aiosctl,
    apply,
    canary_steps,
    condition,
    eventually,
    phase,
    rolled_out,
)
from support import record_history
from temporalio.client import Client

from aios.connectors.audit import read_log
from aios.workflows.rollout import ApprovalDecision

TARGET = "modeldeployment/pm25-anomaly"

# Approvers need RBAC too: create Approvals. mallory may also patch status (a forger with
# more RBAC than an approver needs).
APPROVER_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: model-approver}
rules:
- {apiGroups: [aios.dev], resources: [approvals], verbs: [create, get]}
- {apiGroups: [aios.dev], resources: [modeldeployments], verbs: [get]}
- {apiGroups: [aios.dev], resources: [modeldeployments/status], verbs: [get, patch]}
- {apiGroups: [aios.dev], resources: [modelrollouts, modelrollouts/status], verbs: [get, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: model-approvers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: model-approver}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: mallory}
"""


def gated(version: str) -> dict:
    steps = canary_steps([(50, 1), (100, 0)])
    rollout = {"strategy": "canary", "steps": steps, "analysis": {"minRequests": 20}}
    approvers = ["user:alice", "group:air-quality-leads"]
    return rolled_out(version, rollout, {"required": True, "approvers": approvers})


async def awaiting_approval(kubectl, stable_served, namespace: str) -> dict:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=APPROVER_RBAC)
    stable_served(gated)
    apply(kubectl, namespace, gated(NEXT))
    return await eventually(lambda: phase(kubectl, namespace, "AwaitingApproval", *ENDED), 240)


async def test_promotion_waits_for_an_approver(site, kubectl, stable_served, namespace):
    found = await awaiting_approval(kubectl, stable_served, namespace)
    assert found["rollout"]["phase"] == "AwaitingApproval", found["rollout"]["message"]
    assert found["canaryWeight"] == 50 and found["activeVersion"] == STABLE
    assert [s["weight"] for s in found["rollout"]["steps"]] == [0, 50], "held before 100 %"
    assert "100% of traffic" not in steps_told(kubectl, namespace)
    approved = condition(found, "Approved")
    assert approved["status"] == "False" and approved["reason"] == "AwaitingApproval"
    assert f"aiosctl approve {TARGET} --version {NEXT}" in approved["message"]

    wrong = aiosctl(site, "approve", TARGET, "-n", namespace, "--version", "9.9", "--as", "alice")
    assert wrong.returncode == 1 and f"waits for a decision on {NEXT}, not 9.9" in wrong.stderr
    outsider = aiosctl(
        site, "approve", TARGET, "-n", namespace, "--version", NEXT, "--as", "mallory"
    )
    assert outsider.returncode == 1 and "mallory is not among the approvers" in outsider.stderr
    stranger = aiosctl(site, "approve", TARGET, "-n", namespace, "--version", NEXT, "--as", "eve")
    assert stranger.returncode != 0, "no RBAC, no approval"
    await forgeries_fail(site, kubectl, namespace, found["rollout"]["workflowId"])
    # Each refusal is published as a new revision: wait until the operator serves the last.
    after = await eventually(lambda: phase(kubectl, namespace, "AwaitingApproval", *ENDED))
    assert after["rollout"]["phase"] == "AwaitingApproval", "nothing was decided yet"

    done = aiosctl(site, "approve", TARGET, "-n", namespace, "--version", NEXT, "--as", "alice")
    assert done.returncode == 0, done.stderr
    assert f"approved {TARGET} version {NEXT} as alice" in done.stdout
    found = await eventually(lambda: phase(kubectl, namespace, *ENDED), 120)
    assert found["rollout"]["phase"] == "Promoted"
    assert found["activeVersion"] == NEXT
    assert found["history"][-1]["approvedBy"] == "alice"
    assert found["rollout"]["approval"]["by"] == "alice"
    name = found["rollout"]["approval"]["name"]
    kept = kubectl.json("get", "approval", name, "-n", namespace)
    assert kept["spec"]["approver"]["username"] == "alice"
    assert condition(kept["status"], "Ready")["reason"] == "Delivered"
    edited = kubectl.run(
        "patch", "approval", name, "-n", namespace, "--type=merge",
        "-p", '{"spec": {"decision": "rejected"}}',
    )  # fmt: skip
    assert edited.returncode != 0 and "an Approval cannot be changed" in edited.stderr
    approved = condition(found, "Approved")
    assert approved["status"] == "True" and "approved by alice at " in approved["message"]
    described = kubectl("describe", "modeldeployment", "pm25-anomaly", "-n", namespace)
    assert "AwaitingApproval" in described and f"{NEXT} approved by alice" in described
    assert "100% of traffic" not in steps_told(kubectl, namespace), "promoted, not stepped"
    await record_history(
        site.endpoints.temporal_address, found["rollout"]["workflowId"], "rollout-approved"
    )


async def forgeries_fail(site, kubectl, namespace: str, workflow_id: str) -> None:
    """Each attempt is refused, says why, and is audited; none decides anything."""
    record = {"by": "alice", "decision": "approved", "version": NEXT, "at": "2024-11-20T10:00:00Z"}
    patch = json.dumps({"status": {"rollout": {"approval": record}}})
    forged = kubectl.run(
        "patch", "md", "pm25-anomaly", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", patch, "--as", "mallory",
    )  # fmt: skip
    assert forged.returncode != 0, "a status patch cannot approve"
    assert "only the rollout workflow records a decision" in forged.stderr, forged.stderr
    (published,) = kubectl.json("get", "modelrollouts", "-n", namespace)["items"]
    forged = kubectl.run(
        "patch", "modelrollout", published["metadata"]["name"], "-n", namespace,
        "--subresource=status", "--type=merge", "-p", patch, "--as", "mallory",
    )  # fmt: skip
    assert forged.returncode != 0, "nor can a patch of what the workflow published"
    assert "only the rollout workflow records a decision" in forged.stderr, forged.stderr
    subject = f"modeldeployment/{namespace}/pm25-anomaly"
    denied = await eventually(
        lambda: [
            r
            for r in read_log(site.endpoints.kafka_bootstrap)
            if r.kind == "approval" and r.subject == subject and r.details["outcome"] == "denied"
        ]
    )
    assert {r.actor for r in denied} >= {"mallory"}, "the outsider's attempts are audited"

    temporal = await Client.connect(site.endpoints.temporal_address)
    claimed = ApprovalDecision(NEXT, "approved", "alice", "2024-11-20T10:00:00Z")
    await temporal.get_workflow_handle(workflow_id).signal("decide", claimed)
    refused = await eventually(
        lambda: kubectl.json(
            "get", "events", "-n", namespace, "--field-selector", "reason=ApprovalRefused"
        )["items"]
    )
    assert "a Temporal signal approves nothing" in refused[0]["message"]
    assert "claimed approved by alice" in refused[0]["message"]


def steps_told(kubectl, namespace: str) -> str:
    """Every canary step the rollout announced, as Events."""
    events = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", "reason=CanaryStep"
    )["items"]
    return "\n".join(e["message"] for e in events)


async def test_a_rejection_rolls_back(site, kubectl, stable_served, namespace):
    waiting = await awaiting_approval(kubectl, stable_served, namespace)
    assert waiting["rollout"]["phase"] == "AwaitingApproval", waiting["rollout"]["message"]
    done = aiosctl(site, "reject", TARGET, "-n", namespace, "--version", NEXT, "--as", "alice")
    assert done.returncode == 0, done.stderr
    found = await eventually(lambda: phase(kubectl, namespace, *ENDED), 120)
    assert found["rollout"]["phase"] == "RolledBack"
    assert found["rollout"]["message"] == f"{NEXT} rejected by alice"
    await record_history(
        site.endpoints.temporal_address, found["rollout"]["workflowId"], "rollout-rejected"
    )
    assert found["activeVersion"] == STABLE and "canary" not in found
    assert condition(found, "Approved")["reason"] == "Rejected"
    assert found["history"][-1]["outcome"] == "rolledBack"
    assert "approvedBy" not in found["history"][-1]
    assert (
        yaml.safe_load(kubectl("get", "md", "pm25-anomaly", "-n", namespace, "-o", "yaml"))[
            "status"
        ]["canaryWeight"]
        == 0
    )
