"""What is wrong with a site, read from its processes and the cluster's own objects: for a
failed test's report, so a run that fails on a dead component or an evicting node says so
instead of leaving only the symptom (a webhook that refuses connections)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aios.stack.process import ManagedProcess, log_tail

LOG_LINES = 15


def exited(processes: Mapping[str, ManagedProcess]) -> list[str]:
    """Each process that is no longer running, with its exit code and its log's end."""
    return [
        f"{name} exited with code {process.popen.returncode if process.popen else None}\n"
        f"{log_tail(process.log, LOG_LINES)}"
        for name, process in processes.items()
        if not process.running()
    ]


def node_problems(node: Mapping[str, Any]) -> list[str]:
    """The node's conditions that are not as a healthy node has them (Ready true, every
    pressure false) and its taints: what keeps the chart's pods off it or evicts them."""
    name = node["metadata"]["name"]
    conditions = node["status"].get("conditions", [])
    odd = [
        f"{c['type']}={c['status']} ({c.get('reason', '')}: {c.get('message', '')})"
        for c in conditions
        if (c["status"] == "True") != (c["type"] == "Ready")
    ]
    if not any(c["type"] == "Ready" for c in conditions):
        odd.append("Ready not reported yet")
    taints = [f"taint {t['key']}:{t['effect']}" for t in node["spec"].get("taints", [])]
    return [f"node {name}: {'; '.join(odd + taints)}"] if odd or taints else []


def unready_pods(pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """Each pod that is not Ready, with its phase and its containers' states."""
    return [
        f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']} not Ready: "
        f"{pod['status'].get('phase')} {pod['status'].get('reason', '')} "
        f"{_containers(pod['status'])}".rstrip()
        for pod in pods
        if not any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions", [])
        )
    ]


def _containers(status: Mapping[str, Any]) -> str:
    return "; ".join(
        f"{c['name']}: {json.dumps(c.get('state', {}))}, {c.get('restartCount', 0)} restarts, "
        f"last terminated {c.get('lastState', {}).get('terminated', {}).get('reason')}"
        for c in status.get("containerStatuses", [])
    )
