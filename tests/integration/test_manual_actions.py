"""A person's action, as a duty officer runs it: ``aiosctl act`` and ``aiosctl revert``
create a ManualAction the API server vouches for, the chart's operator starts the action
workflow, and the namespace's worker pod checks policy, acts once and audits every step
with the person and their reason. A reversal runs the declared compensation once; a
second reversal, or one of an action that declares none, is refused saying why."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import yaml
from model_support import aiosctl
from support import wait_for
from test_audit_log import aiosctl as audit_cli
from test_intent_e2e import audited_steps, deploy

from aios.connectors.audit import read_log
from aios.stack import release

DUTY = "duty-officers"
AS_OFFICER = ("--as", "alice", "--as-group", DUTY)
REASON = "smoke seen on Elm Street"


def officers(kubectl, namespace: str) -> None:
    """The chart's ClusterRole for people who act by hand, bound to the duty officers here."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "duty-officers"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": f"{release.RELEASE}-actor",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": DUTY}],
    }
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(binding))


def smoke_intent(url: str) -> dict[str, Any]:
    """A paused intent (its worker runs; no runner reads) declaring what officers may run:
    an alert (Alertmanager's API), and a dispatch whose compensation is a recall."""
    hook = {"type": "webhook", "idempotencyWindowSeconds": 3600}
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "AutomationIntent",
        "metadata": {"name": "smoke"},
        "spec": {
            "sources": [{"name": "readings", "kafkaTopic": f"smoke-{uuid.uuid4().hex[:8]}"}],
            "topics": {"partitions": 1, "deletePolicy": "Delete"},
            "actions": [
                {**hook, "name": "notify", "type": "alert", "target": f"{url}/notify"},
                {**hook, "name": "dispatch", "target": f"{url}/dispatch", "compensation": "recall"},
                {**hook, "name": "recall", "target": f"{url}/recall"},
            ],
            "mode": "paused",
        },
    }


def act(site, namespace: str, action: str, *args: str) -> subprocess.CompletedProcess[str]:
    return aiosctl(
        site, "act", "intent/smoke", action, "-n", namespace, "--reason", REASON, *args,
        timeout=180,
    )  # fmt: skip


def started(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    action_id: str = json.loads(result.stdout)["actionId"]
    return action_id


def taken(receiver, path: str, action_id: str) -> None:
    """Wait until the target took the action (its webhook answered with success)."""
    wait_for(lambda: (path, action_id) in receiver.taken, what=f"{path} took {action_id}")


def test_a_person_runs_a_declared_action_through_policy_and_audit_once(
    site, operator, kubectl, namespace: str, receiver
) -> None:
    officers(kubectl, namespace)
    deploy(kubectl, namespace, smoke_intent(receiver.url))

    action_id = started(
        act(site, namespace, "notify", "--sensor", "aq-d7-001", *AS_OFFICER, "-o", "json")
    )
    assert action_id.startswith(f"{namespace}.smoke.notify.")
    bootstrap = site.endpoints.kafka_bootstrap
    followed = audit_cli("trace", action_id, "--bootstrap", bootstrap, "--wait", "60", "-o", "json")
    assert followed.returncode == 0, f"traced at once, as act says: {followed.stderr}"
    lineage = json.loads(followed.stdout)
    assert lineage["requestedBy"] == "alice"
    assert lineage["policyDecisions"], "--wait waits for policy's answer, not the request only"
    taken(receiver, "/notify", action_id)
    alerts = next(b for _, h, b in receiver.calls if h.get("Idempotency-Key") == action_id)
    assert alerts[0]["labels"]["sensor"] == "aq-d7-001"
    summary = json.loads(alerts[0]["annotations"]["summary"])
    assert (summary["requestedBy"], summary["reason"]) == ("alice", REASON)
    wait_for(lambda: audited_steps(site, action_id) == ["requested", "authorized", "executed"])
    records = [r for r in read_log(bootstrap) if r.subject == f"action/{action_id}"]
    assert all(r.actor == "alice" and r.details["reason"] == REASON for r in records)
    assert records[1].policy_decision_id, "OPA decided on the person's action"
    listed = kubectl.json("get", "manualactions", "-n", namespace)["items"]
    assert [m["status"]["actionId"] for m in listed] == [action_id]

    undeclared = act(site, namespace, "evacuate", *AS_OFFICER)
    assert undeclared.returncode == 1
    assert "spec.action: automationintent/smoke declares no action 'evacuate'" in undeclared.stderr
    outsider = act(site, namespace, "notify", "--as", "mallory")
    assert outsider.returncode == 1 and "manualactions" in outsider.stderr, outsider.stderr
    forged = {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "ManualAction",
        "metadata": {"name": "forged"},
        "spec": {
            "intent": "smoke",
            "action": "notify",
            "reason": "on bob's behalf",
            "requestedBy": {"username": "bob", "groups": [DUTY]},
        },
    }
    refused = kubectl.run(
        "create", "-n", namespace, "-f", "-", "--as", "alice", "--as-group", DUTY,
        stdin=yaml.safe_dump(forged),
    )  # fmt: skip
    assert refused.returncode != 0
    assert (
        "spec.requestedBy.username: you are authenticated as 'alice', not 'bob'" in refused.stderr
    )

    def attempts() -> list[str]:
        return [
            r.details["outcome"]
            for r in read_log(bootstrap)
            if r.kind == "manual-action" and r.subject.startswith(f"manualaction/{namespace}/")
        ]

    # The refusal was stored before kubectl got it, and becomes readable once Kafka has
    # written the transaction's markers, a moment later (``read_raw_log``).
    wait_for(lambda: len(attempts()) >= 3, what=lambda: f"audited: {attempts()}")
    assert attempts() == ["admitted", "denied", "denied"], "every attempt is audited once"
    assert [k for _, k in receiver.taken].count(action_id) == 1, "once"


def test_a_compensated_action_is_reverted_once_and_others_cannot_be(
    site, operator, kubectl, namespace: str, receiver
) -> None:
    officers(kubectl, namespace)
    deploy(kubectl, namespace, smoke_intent(receiver.url))
    dispatched = started(act(site, namespace, "dispatch", *AS_OFFICER, "-o", "json"))
    taken(receiver, "/dispatch", dispatched)

    def revert(action_id: str) -> subprocess.CompletedProcess[str]:
        return aiosctl(
            site, "revert", f"action/{action_id}", "--reason", "false alarm", *AS_OFFICER,
            "-o", "json", timeout=180,
        )  # fmt: skip

    recalled = started(revert(dispatched))
    assert recalled == f"{dispatched}.revert"
    taken(receiver, "/recall", recalled)
    wait_for(lambda: "executed" in audited_steps(site, recalled))
    again = revert(dispatched)
    assert again.returncode == 1 and f"action/{dispatched} was already reverted" in again.stderr
    assert [k for _, k in receiver.taken].count(recalled) == 1, "the compensation ran once"

    notified = started(act(site, namespace, "notify", *AS_OFFICER, "-o", "json"))
    taken(receiver, "/notify", notified)
    wait_for(lambda: "executed" in audited_steps(site, notified))
    plain = revert(notified)
    assert plain.returncode == 1
    assert "cannot be reversed: its action 'notify' declares no compensation" in plain.stderr
    assert revert(f"{namespace}.smoke.notify.nothing").returncode == 1

    bootstrap = site.endpoints.kafka_bootstrap
    traced = audit_cli("trace", dispatched, "--bootstrap", bootstrap, "-o", "json")
    assert traced.returncode == 0, traced.stderr
    lineage = json.loads(traced.stdout)
    assert (lineage["requestedBy"], lineage["revertedBy"]) == ("alice", recalled)
    reversal = json.loads(
        audit_cli("trace", recalled, "--bootstrap", bootstrap, "-o", "json").stdout
    )
    assert (reversal["reverts"], reversal["reason"], reversal["action"]["name"]) == (
        dispatched,
        "false alarm",
        "recall",
    )
