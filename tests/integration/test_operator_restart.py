"""An operator restarted with nothing changed makes no writes: no status writes, no applies
that change nothing, no Events. The site's API server keeps an audit log of every write by
aios's own service accounts (``cluster.AUDIT_LOG``); it is the witness here."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import OPERATOR_PODS, kill_operator, operator_restarted, wait_for

from aios.connectors.audit import read_log
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


def writes(site: Any, pod: str, namespace: str, since: datetime | None = None) -> list[str]:
    """Each write the operator pod ``pod`` made in ``namespace`` (received ``since``, when
    given): verb, resource, name."""
    found = []
    for line in (site.logs / AUDIT_LOG).read_text().splitlines():
        event = json.loads(line)
        if (event["user"].get("extra") or {}).get(POD_NAME) != [pod]:
            continue
        received = datetime.fromisoformat(event["requestReceivedTimestamp"])
        if since is not None and received < since:
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


def gateway(name: str) -> dict[str, Any]:
    """The example gateway under another name, without its simulated agent."""
    found = yaml.safe_load((EXAMPLES / "district-7.yaml").read_text())
    found["metadata"] = {"name": name}
    return dict(found)


def published(kubectl: Any, namespace: str) -> set[str]:
    """The gateways whose current generation's config is published."""
    found = set()
    for item in kubectl.json("get", "edgegateways", "-n", namespace)["items"]:
        status = item.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        current = status.get("observedGeneration") == item["metadata"]["generation"]
        if current and conditions.get("ConfigPublished") == "True":
            found.add(item["metadata"]["name"])
    return found


@pytest.mark.fault("operator killed mid-reconcile")
def test_an_operator_killed_mid_reconcile_finishes_the_work_and_redoes_none(
    site, kubectl, operator, namespace
) -> None:
    """Three gateways are reconciled. Three more are half done, their configs published
    and their Kafka users made, but their Secrets refused by a quota, when the operator's
    container is SIGKILLed. The restarted operator finishes those three once the quota
    goes, writes nothing for the three it had finished, and each config is audited once."""
    done, pending = {"done-0", "done-1", "done-2"}, {"pending-0", "pending-1", "pending-2"}
    manifests = {name: gateway(name) for name in done | pending}
    kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(manifests[n] for n in done)
    )
    wait_for(lambda: published(kubectl, namespace) == done, what="the first three published")

    secrets = len(kubectl.json("get", "secrets", "-n", namespace)["items"])
    kubectl(
        "create", "quota", "no-more-secrets", "-n", namespace, f"--hard=count/secrets={secrets}"
    )
    wait_for(
        lambda: (
            "count/secrets"
            in (
                kubectl.json("get", "quota", "no-more-secrets", "-n", namespace).get("status") or {}
            ).get("used", {})
        ),
        what="the quota counted",
    )
    kubectl(
        "apply", "-n", namespace, "-f", "-",
        stdin=yaml.safe_dump_all(manifests[n] for n in pending),
    )  # fmt: skip
    leading = wait_for(lambda: leader(kubectl), what="the leading operator")["metadata"]["name"]
    refused = {f"patch secrets {name}-edge-kafka" for name in pending}
    wait_for(
        lambda: refused <= set(writes(site, leading, namespace)),
        what="the operator at each new gateway's Secret",
    )
    pod = kill_operator(site, kubectl)
    killed = datetime.now(UTC)
    assert published(kubectl, namespace) == done, "the kill came mid-reconcile"
    kubectl("delete", "quota", "no-more-secrets", "-n", namespace)
    operator_restarted(kubectl, pod)

    wait_for(
        lambda: published(kubectl, namespace) == done | pending,
        timeout=240,
        what="every gateway published after the restart",
    )
    for name in sorted(done | pending):  # each with the credentials its agent mounts
        kubectl("get", "secret", f"{name}-edge-kafka", "-n", namespace)
    again = writes(site, pod["metadata"]["name"], namespace, since=killed)
    assert not [w for w in again if w.split()[-1].startswith("done-")], again

    def audited() -> list[str]:
        return [
            r.details["gateway"]
            for r in read_log(site.endpoints.kafka_bootstrap)
            if r.kind == "edge-config" and r.details["gateway"].startswith(f"{namespace}/")
        ]

    wait_for(lambda: len(set(audited())) == len(manifests), what="every config audited")
    assert sorted(audited()) == sorted(f"{namespace}/{n}" for n in manifests), "each once"
