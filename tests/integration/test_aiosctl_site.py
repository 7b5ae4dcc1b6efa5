"""`aiosctl up --detach`, `aiosctl env`, `kubectl get aios`, `aiosctl down`, as a user runs
them (what `make run` does, in the background): a second real node on this machine, aios
installed by its chart, the example city running on real pods within their memory limits;
and `down` leaves the host exactly as it found it."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from support import wait_for

from aios.stack.images import ensure_images
from aios.stack.node import NodeState, cgroup_dirs, processes_in

AIOSCTL = [sys.executable, "-m", "aios.cli.main"]


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def exported(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        assert line.startswith("export "), line
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0]
    return values


def host_state() -> dict[str, Any]:
    """What a site may change on the host: mounts, links, routes, iptables, cgroups, and
    the paths a kubelet or containerd would write outside their roots."""
    tables = {t: run(["iptables", "-t", t, "-S"]) for t in ("filter", "nat", "mangle", "raw")}
    return {
        "mounts": sorted(
            line.split(" - ")[0].split(" ", 4)[4] for line in Path("/proc/1/mountinfo").open()
        ),
        "links": sorted(os.listdir("/sys/class/net")),
        "routes": run(["ip", "route", "show", "table", "all"]),
        "iptables": tables,
        "cgroups": sorted(
            str(p) for h in Path("/sys/fs/cgroup").iterdir() for p in h.iterdir() if p.is_dir()
        ),
        "paths": sorted(
            p
            for p in (
                "/run/containerd",
                "/var/lib/containerd",
                "/var/lib/kubelet",
                "/var/log/pods",
                "/var/lib/cni",
                "/run/netns",
                "/opt/containerd",
                "/etc/cni",
                "/run/xtables.lock",
            )
            if Path(p).exists()
        ),
    }


SITE_MARKS = re.compile(r"\baios(\d+)\b|\b10\.(?:251|244|96)\.(\d+)\.|aios-site-(\d+)")
"""What names a site's link, routes, rules and cgroups: its index."""


def without_other_sites(state: dict[str, Any], own: int) -> dict[str, Any]:
    """``state`` less what other sites (another test run, ``make run``) hold meanwhile:
    theirs come and go while this one runs, and are not this site's to clean up."""

    def foreign(line: str) -> bool:
        return any(
            int(n) != own for match in SITE_MARKS.finditer(line) for n in match.groups() if n
        )

    def keep(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: keep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [v for v in value if not foreign(v)]
        return "\n".join(line for line in value.splitlines() if not foreign(line))

    return {key: keep(value) for key, value in state.items()}


def memory_within_limits(env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Every container's working set (the kubelet's /stats/summary) and its memory limit
    (0: none)."""
    pods = json.loads(run(["kubectl", "get", "pods", "-A", "-o", "json"], env=env))["items"]
    limits = {
        (p["metadata"]["namespace"], p["metadata"]["name"], c["name"]): c.get("resources", {})
        .get("limits", {})
        .get("memory")
        for p in pods
        for c in p["spec"]["containers"]
    }
    raw = run(["kubectl", "get", "--raw", "/api/v1/nodes/aios-node/proxy/stats/summary"], env=env)
    usage = {}
    for pod in json.loads(raw)["pods"]:
        ref = pod["podRef"]
        for container in pod.get("containers", []):
            key = (ref["namespace"], ref["name"], container["name"])
            if key in limits:
                used = container.get("memory", {}).get("workingSetBytes", 0)
                usage["/".join(key)] = (used, quantity(limits[key] or "0"))
    return usage


def quantity(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def test_up_env_get_down(tmp_path: Path) -> None:
    before = host_state()
    site_dir = tmp_path / "site"
    run([*AIOSCTL, "up", "--detach", "--site-dir", str(site_dir)])
    state = json.loads((site_dir / "site.json").read_text())
    node = NodeState.load(site_dir / "node" / "node.json")
    assert node is not None
    try:
        assert state["ready"]
        variables = exported(run([*AIOSCTL, "env", "--site-dir", str(site_dir)]))
        for name in [
            "KUBECONFIG",
            "AIOS_KAFKA_BOOTSTRAP",
            "AIOS_TEMPORAL_ADDRESS",
            "AIOS_OPA_URL",
            "AIOS_TRITON_URL",
            "AIOS_MQTT_URL",
            "AIOS_CONSOLE_URL",
            "AIOS_SITE_DIR",
            "PATH",
        ]:
            assert variables.get(name), f"aiosctl env lacks {name}"
        env = {**os.environ, **variables}
        kubectl = run(["bash", "-c", "command -v kubectl"], env=env).strip()
        tools = state["endpoints"]["tools_path"].split(os.pathsep)
        assert kubectl.startswith(tools[0]), "the site's kubectl first"
        temporal = run(["bash", "-c", "command -v temporal"], env=env).strip()
        assert temporal.startswith(tools[1]), "and the Temporal CLI"
        aiosctl = run(["bash", "-c", "command -v aiosctl"], env=env).strip()
        assert aiosctl == str(site_dir / "bin" / "aiosctl"), "aiosctl runs as it prints itself"
        assert os.listdir(site_dir / "bin") == ["aiosctl"], "and nothing else of the venv"
        assert "export KUBECONFIG=" in run(["aiosctl", "env", "--site-dir", str(site_dir)], env=env)
        table = run(["kubectl", "get", "aios"], env=env)
        for name in [
            "pm25-anomaly",
            "pm25-forecast",
            "pm25-alerting",
            "actuation-needs-approval",
            "district-7",
        ]:
            assert name in table

        operator = json.loads(
            run(["kubectl", "get", "pods", "-n", "aios-system", "-o", "json"], env=env)
        )["items"]
        digest = ensure_images()["aios"].digest
        assert operator and all(
            s["imageID"].endswith(digest)
            for p in operator
            for s in p["status"]["containerStatuses"]
        ), "the operator runs from the image built here, installed by the chart"

        def city_running() -> bool:
            pods = json.loads(run(["kubectl", "get", "pods", "-A", "-o", "json"], env=env))
            phases = {p["metadata"]["name"]: p["status"].get("phase") for p in pods["items"]}
            wanted = ("pm25-alerting-runner", "aios-worker", "district-7-edge-sim", "pm25-anomaly")
            return all(any(n.startswith(w) for n in phases) for w in wanted) and set(
                phases.values()
            ) == {"Running"}

        wait_for(city_running, timeout=300, interval=2, what="every pod of the city Running")
        usage = wait_for(lambda: memory_within_limits(env), what="the kubelet's stats")
        unlimited = [k for k, (_, limit) in usage.items() if not limit]
        assert not unlimited, f"containers without a memory limit: {unlimited}"
        over = {k: v for k, v in usage.items() if v[0] >= v[1]}
        assert not over, f"containers at their memory limit: {over}"
        assert any(k.startswith("default/pm25-alerting-runner") for k in usage), usage

        as_json = json.loads(run([*AIOSCTL, "env", "--site-dir", str(site_dir), "-o", "json"]))
        assert as_json == variables, "-o json carries what the export lines carry"
        chart = yaml.safe_load(run([*AIOSCTL, "env", "--site-dir", str(site_dir), "--helm-values"]))
        assert chart["kafka"]["bootstrap"] == variables["AIOS_KAFKA_BOOTSTRAP"]
        assert chart["image"]["digest"] == digest
        listed = json.loads(run([*AIOSCTL, "status", "-o", "json"], env=env))["items"]
        assert {i["name"] for i in listed} >= {"pm25-anomaly", "pm25-alerting", "district-7"}
        again = subprocess.run(
            [*AIOSCTL, "up", "--detach", "--site-dir", str(site_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode != 0 and "already runs" in again.stderr

        # A user edits the example, stops the site and starts it again: the edit stays.
        steps = '{"spec": {"rollout": {"steps": [{"weight": 50, "pauseSeconds": 5}]}}}'
        run(["kubectl", "patch", "md", "pm25-anomaly", "--type=merge", "-p", steps], env=env)
        alice = (site_dir / "people" / "alice.token").read_text()
        run([*AIOSCTL, "down", "--site-dir", str(site_dir)], timeout=180)
        run([*AIOSCTL, "up", "--detach", "--site-dir", str(site_dir)])
        node = NodeState.load(site_dir / "node" / "node.json") or node
        env = {**os.environ, **exported(run([*AIOSCTL, "env", "--site-dir", str(site_dir)]))}
        kept = json.loads(run(["kubectl", "get", "md", "pm25-anomaly", "-o", "json"], env=env))
        assert kept["spec"]["rollout"]["steps"] == [{"weight": 50, "pauseSeconds": 5}]
        assert (site_dir / "people" / "alice.token").read_text() == alice, "her token stays"
    finally:
        run([*AIOSCTL, "down", "--site-dir", str(site_dir)], timeout=180)
    assert not processes_in(node.mount_namespace), "processes of the site left behind"
    assert not [p for p in cgroup_dirs(f"aios-site-{node.index}") if p.exists()]
    after = without_other_sites(host_state(), node.index)
    for key, value in without_other_sites(before, node.index).items():
        assert after[key] == value, f"aiosctl down left the host's {key} changed"
    stopped = exported(run([*AIOSCTL, "env", "--site-dir", str(site_dir)]))
    assert "AIOS_CONSOLE_URL" not in stopped, "a stopped site serves no console (nor is asked)"


def test_up_detach_fails_at_once_when_its_supervisor_dies(tmp_path: Path) -> None:
    """The supervisor dies while it starts the site: `up --detach` says so with the end of
    its log, at once (not after its timeout), and the half-started node is gone."""
    site_dir = tmp_path / "site"
    command = subprocess.Popen(
        [*AIOSCTL, "up", "--detach", "--site-dir", str(site_dir), "--timeout=900"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    node = wait_for(lambda: NodeState.load(site_dir / "node" / "node.json"), 120, 0.1)
    supervisor = json.loads((site_dir / "site.json").read_text())["supervisor_pid"]
    os.kill(supervisor, signal.SIGKILL)
    _, stderr = command.communicate(timeout=60)
    assert command.returncode != 0
    assert "did not start" in stderr, stderr
    assert stderr.split("did not start:", 1)[1].strip(), "its log's end, or why there is none"
    wait_for(lambda: not processes_in(node.mount_namespace), 60, what="the node's processes gone")
    wait_for(
        lambda: not [p for p in cgroup_dirs(f"aios-site-{node.index}") if p.exists()],
        60,
        what="the node's cgroups gone",
    )
