"""Helpers shared by the integration tests (imported as a module: pytest puts this
folder on sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from temporalio.client import Client, WorkflowExecutionStatus


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 180,
    interval: float = 0.5,
    what: str | Callable[[], str] = "",
) -> Any:
    """Poll until ``predicate`` returns something truthy; fail saying what (``what`` may be
    a function, called only then: e.g. a log tail) and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    detail = what() if callable(what) else what
    raise AssertionError(
        f"{detail or 'condition'} not reached after {timeout}s; last value: {last!r}"
    )


async def activity_attempts(temporal_address: str, workflow_id: str, activity: str) -> int:
    """Which attempt of ``activity`` the workflow is on (0 when none is pending): a test
    that asserts nothing happens while a dependency is down waits for failed attempts,
    not for time to pass."""
    client = await Client.connect(temporal_address)
    description = await client.get_workflow_handle(workflow_id).describe()
    pending = description.raw_description.pending_activities
    return max((p.attempt for p in pending if p.activity_type.name == activity), default=0)


def failed_attempts(temporal_address: str, workflow_id: str, activity: str, count: int) -> None:
    """Wait until ``activity`` of the workflow has failed ``count`` times (is retrying)."""
    wait_for(
        lambda: asyncio.run(activity_attempts(temporal_address, workflow_id, activity)) > count,
        what=f"{count} failed attempts of {activity} in {workflow_id}",
    )


async def _all_closed(temporal_address: str, workflow_ids: set[str]) -> bool:
    client = await Client.connect(temporal_address)
    for workflow_id in workflow_ids:
        status = (await client.get_workflow_handle(workflow_id).describe()).status
        if status in (None, WorkflowExecutionStatus.RUNNING):
            return False
    return True


def workflows_closed(temporal_address: str, workflow_ids: set[str]) -> None:
    """Wait until every one of the workflows has ended: what they did is then final."""
    wait_for(
        lambda: asyncio.run(_all_closed(temporal_address, workflow_ids)),
        what=f"workflows {sorted(workflow_ids)} ended",
    )


async def _intent_workflows(temporal_address: str, intent: str) -> list[str]:
    client = await Client.connect(temporal_address)
    return [w.id async for w in client.list_workflows(f'AiosIntent = "{intent}"')]


def intent_workflows(temporal_address: str, intent: str) -> list[str]:
    """The ids of the action workflows started for ``intent`` (``namespace/name``)."""
    return asyncio.run(_intent_workflows(temporal_address, intent))


def cluster_url(kubectl: Any, url: str) -> str:
    """``url`` with a Service's DNS name (``name.ns.svc[.cluster.local]``) replaced by its
    ClusterIP, which is what the cluster's DNS answers in a pod; the host routes the Service
    range through the node, so the request still goes through kube-proxy to a ready pod."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    labels = (parts.hostname or "").split(".")
    if len(labels) < 3 or labels[2] != "svc":
        return url
    service = kubectl.json("get", "service", labels[0], "-n", labels[1])
    netloc = (
        f"{service['spec']['clusterIP']}:{parts.port}"
        if parts.port
        else service["spec"]["clusterIP"]
    )
    resolved = urlunsplit(parts._replace(netloc=netloc))
    return resolved if "//" in url else resolved.removeprefix("//")


def running_pod(kubectl: Any, namespace: str, selector: str) -> dict[str, Any] | None:
    """The one running, ready pod ``selector`` picks in ``namespace``, if there is one."""
    for pod in kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]:
        statuses = pod["status"].get("containerStatuses") or []
        deleting = pod["metadata"].get("deletionTimestamp")
        if not deleting and statuses and all(s.get("ready") for s in statuses):
            return dict(pod)
    return None


def container_pids(site: Any, pod: dict[str, Any], container: str) -> list[int]:
    """The host's view of a container's processes: its cgroup under the node's pods."""
    status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
    container_id = status["containerID"].split("://", 1)[1]
    root = Path("/sys/fs/cgroup/pids") / site.node.network.cgroup
    found = [p for p in root.rglob(container_id) if p.parent.name == f"pod{pod['metadata']['uid']}"]
    return [int(pid) for d in found for pid in (d / "cgroup.procs").read_text().split()]


@contextlib.contextmanager
def partitioned(site: Any, pod: dict[str, Any], container: str, addresses: list[str]) -> Any:
    """Drop every packet the pod sends to ``addresses`` until the block ends: a network
    partition only the pod sees (its peers stay healthy to the kubelet). The rules live in
    the pod's network namespace, so they go with it, whatever happens."""
    pid = container_pids(site, pod, container)[0]
    rules = [["OUTPUT", "-d", address, "-j", "DROP"] for address in addresses]

    def iptables(*args: str) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", "-t", str(pid), "-n", "iptables", "-w", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    for rule in rules:
        added = iptables("-I", *rule)
        assert added.returncode == 0, f"iptables -I {' '.join(rule)}: {added.stderr}"
    try:
        yield
    finally:
        for rule in rules:
            iptables("-D", *rule)  # fails only if the pod has gone, and its rules with it


def restarts(pod: dict[str, Any], container: str) -> int:
    statuses = pod["status"].get("containerStatuses") or []
    return next((int(s["restartCount"]) for s in statuses if s["name"] == container), 0)


OPERATOR_PODS = "app.kubernetes.io/component=operator,app.kubernetes.io/instance=aios"


def crash_operator(site: Any, kubectl: Any, namespace: str = "aios-system") -> None:
    """SIGKILL the operator's container (a crash, as the kernel's OOM killer would) and wait
    until the kubelet has restarted it and it is ready again."""
    operator_restarted(kubectl, kill_operator(site, kubectl, namespace), namespace)


def kill_operator(site: Any, kubectl: Any, namespace: str = "aios-system") -> dict[str, Any]:
    """SIGKILL the ready operator's container; returns its pod as it was."""
    pod = wait_for(lambda: running_pod(kubectl, namespace, OPERATOR_PODS), what="operator ready")
    for pid in container_pids(site, pod, "operator"):
        os.kill(pid, signal.SIGKILL)
    return pod


def operator_restarted(kubectl: Any, pod: dict[str, Any], namespace: str = "aios-system") -> None:
    """Wait until the kubelet has restarted the operator ``pod`` and it is ready again."""
    wait_for(
        lambda: (
            (again := running_pod(kubectl, namespace, OPERATOR_PODS)) is not None
            and restarts(again, "operator") > restarts(pod, "operator")
        ),
        what="the kubelet restarted the operator",
    )


SESSION_SITE = "suite"
"""The test session's ``site.name`` (not the default: a test sees it reach decisions and pods)."""

SESSION_VALUES = {
    # One replica: two cores run the whole suite (the Helm test runs the default two).
    # Policies audit existing objects, and statuses count, every few seconds, not every
    # minute or half minute.
    "operator": {"replicas": 1, "policyAuditIntervalSeconds": 3, "statusRefreshSeconds": 5},
    "site": {"name": SESSION_SITE},
}


HISTORIES = Path(__file__).resolve().parents[1] / "unit" / "histories"
RECORD_ENV = "AIOS_RECORD_HISTORIES"


async def record_history(temporal_address: str, workflow_id: str, scenario: str) -> None:
    """With ``AIOS_RECORD_HISTORIES=1``, keep the finished workflow's event history as
    ``tests/unit/histories/<scenario>.json``, which the replay test runs the workflow code
    against (README, "Changing a workflow")."""
    if not os.environ.get(RECORD_ENV):
        return
    client = await Client.connect(temporal_address)
    handle = client.get_workflow_handle(workflow_id)
    with contextlib.suppress(Exception):  # a failed workflow's history is as good
        await asyncio.wait_for(handle.result(), 120)
    history = await handle.fetch_history()
    (HISTORIES / f"{scenario}.json").write_text(history.to_json())
