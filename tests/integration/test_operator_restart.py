"""An operator restarted with nothing changed makes no writes: no status writes, no applies
that change nothing, no Events. The site's API server keeps an audit log of every write by
aios's own service accounts (``cluster.AUDIT_LOG``); it is the witness here."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from support import OPERATOR_PODS, wait_for

from aios.stack.cluster import AUDIT_LOG
from aios.stack.release import NAMESPACE, RELEASE

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "city-air-quality"
POD_NAME = "authentication.kubernetes.io/pod-name"
KINDS = ("EdgeGateway", "AutomationIntent", "Policy")


def steady_objects() -> list[dict[str, Any]]:
    """What a city has in the thousands, each in a state that stays put: a gateway whose
    agent runs elsewhere, a paused intent reading it, a Policy in dryrun."""
    gateway = yaml.safe_load((EXAMPLES / "district-7.yaml").read_text())
    gateway["metadata"]["annotations"] = {}  # no simulated agent
    intent = yaml.safe_load((EXAMPLES / "pm25-alerting.yaml").read_text())
    intent["spec"]["mode"] = "paused"
    policy = yaml.safe_load((EXAMPLES / "actuation-needs-approval.yaml").read_text())
    policy["spec"]["enforcement"] = "dryrun"
    return [gateway, intent, policy]


def converged(kubectl: Any, namespace: str) -> bool:
    """Every object's generation observed, the Policy and the intent Ready, the gateway's
    config published (its agent is not there: it waits for it, and the refresh follows)."""
    items = kubectl.json("get", "aios", "-n", namespace)["items"]
    if len(items) != len(KINDS):
        return False
    for item in items:
        status = item.get("status") or {}
        if status.get("observedGeneration") != item["metadata"]["generation"]:
            return False
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        wanted = "ConfigPublished" if item["kind"] == "EdgeGateway" else "Ready"
        if conditions.get(wanted) != "True":
            return False
    return True


def writes(site: Any, pod: str, namespace: str) -> list[str]:
    """Each write the operator pod ``pod`` made in ``namespace``: verb, resource, name."""
    found = []
    for line in (site.logs / AUDIT_LOG).read_text().splitlines():
        event = json.loads(line)
        if (event["user"].get("extra") or {}).get(POD_NAME) != [pod]:
            continue
        ref = event.get("objectRef") or {}
        if ref.get("namespace") == namespace:
            resource = "/".join(p for p in (ref.get("resource"), ref.get("subresource")) if p)
            found.append(f"{event['verb']} {resource} {ref.get('name')}")
    return found


def metrics(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}:9090/metrics", timeout=5) as answer:
        lines = answer.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("aios_operator_") and not line.startswith("#")
    }


def settled(address: str) -> bool:
    """Every kind's periodic pass has gone over every object twice and nothing waits."""
    found = metrics(address)
    ticked = all(found.get(f'aios_operator_ticks_total{{kind="{k}"}}', 0) >= 2 for k in KINDS)
    idle = all(found.get(f'aios_operator_queue_depth{{kind="{k}"}}', 1) == 0 for k in KINDS)
    return ticked and idle


def leader(kubectl: Any) -> dict[str, Any] | None:
    """The operator pod that holds the release's Lease, once it is running."""
    holder = (kubectl.json("get", "lease", RELEASE, "-n", NAMESPACE).get("spec") or {}).get(
        "holderIdentity"
    )
    pods = kubectl.json("get", "pods", "-n", NAMESPACE, "-l", OPERATOR_PODS)["items"]
    return next(
        (p for p in pods if p["metadata"]["name"] == holder and p["status"].get("podIP")), None
    )


def test_a_restarted_operator_with_nothing_changed_writes_nothing(
    site, kubectl, operator, namespace
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(steady_objects()))
    wait_for(lambda: converged(kubectl, namespace), timeout=300, what="the objects to converge")
    before = wait_for(lambda: leader(kubectl), what="the leading operator")["metadata"]["name"]

    kubectl("rollout", "restart", "deployment", RELEASE, "-n", NAMESPACE)
    after = wait_for(
        lambda: (pod := leader(kubectl)) and pod["metadata"]["name"] != before and pod,
        timeout=300,
        what="a new operator pod to lead",
    )
    name, address = after["metadata"]["name"], after["status"]["podIP"]
    wait_for(lambda: settled(address), timeout=120, what="two passes over every object")
    assert converged(kubectl, namespace)
    assert writes(site, name, namespace) == [], "the restarted operator wrote nothing"

    # The witness sees writes: a real change after the restart is written by the new pod.
    kubectl(
        "patch", "policy", "actuation-needs-approval", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"enforcement": "warn"}}',
    )  # fmt: skip
    wait_for(lambda: converged(kubectl, namespace), what="the change to be reconciled")
    assert "patch policies/status actuation-needs-approval" in writes(site, name, namespace)
