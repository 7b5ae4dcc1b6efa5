"""What a failed test reports about its site: the processes that exited, a node that is
not Ready, under pressure or tainted, and pods that are not Ready (``aios.stack.site.health``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aios.stack.process import ManagedProcess
from aios.stack.site.health import exited, node_problems, unready_pods


def test_a_process_that_exited_is_reported_with_its_code_and_log_and_a_running_one_is_not(
    tmp_path: Path,
) -> None:
    gone = ManagedProcess("broker", ["sh", "-c", "echo no space left; exit 3"], tmp_path / "b.log")
    gone.start()
    assert gone.popen is not None and gone.popen.wait(timeout=10) == 3
    steady = ManagedProcess("server", ["sleep", "60"], tmp_path / "s.log").start()
    try:
        [problem] = exited({"broker": gone, "server": steady})
    finally:
        steady.stop()
    assert problem.startswith("broker exited with code 3\n") and "no space left" in problem


def node(conditions: dict[str, str], taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "aios-node"},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "conditions": [
                {"type": kind, "status": status, "reason": f"Kubelet{kind}{status}"}
                for kind, status in conditions.items()
            ]
        },
    }


HEALTHY = {
    "Ready": "True",
    "MemoryPressure": "False",
    "DiskPressure": "False",
    "PIDPressure": "False",
}


def test_a_healthy_node_reports_nothing() -> None:
    assert node_problems(node(HEALTHY)) == []


def test_an_evicting_node_reports_its_pressure_and_taint() -> None:
    evicting = node(
        {**HEALTHY, "DiskPressure": "True"},
        [{"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"}],
    )
    [problem] = node_problems(evicting)
    assert problem.startswith("node aios-node: DiskPressure=True (KubeletDiskPressureTrue")
    assert "taint node.kubernetes.io/disk-pressure:NoSchedule" in problem
    assert "Ready" not in problem.replace("aios-node", "")


def test_a_node_that_is_not_ready_says_so() -> None:
    [problem] = node_problems(node({**HEALTHY, "Ready": "Unknown"}))
    assert "Ready=Unknown" in problem


def test_a_node_just_registered_without_conditions_is_not_healthy() -> None:
    """The start-up wait (``Cluster._node_ready``) reads this: no Ready yet is not ready."""
    [problem] = node_problems(node({}))
    assert "Ready not reported yet" in problem


def pod(name: str, ready: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "aios-system", "name": name},
        "status": {"conditions": [{"type": "Ready", "status": ready}], **status},
    }


def test_only_pods_that_are_not_ready_are_reported_with_their_containers() -> None:
    crashing = pod(
        "aios-operator-1",
        "False",
        phase="Running",
        containerStatuses=[
            {
                "name": "operator",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "restartCount": 4,
                "lastState": {"terminated": {"reason": "OOMKilled"}},
            }
        ],
    )
    evicted = pod("aios-console-2", "False", phase="Failed", reason="Evicted")
    [first, second] = unready_pods([pod("aios-webhook-0", "True"), crashing, evicted])
    assert first.startswith("pod aios-system/aios-operator-1 not Ready: Running")
    assert "CrashLoopBackOff" in first and "4 restarts" in first and "OOMKilled" in first
    assert second == "pod aios-system/aios-console-2 not Ready: Failed Evicted"
