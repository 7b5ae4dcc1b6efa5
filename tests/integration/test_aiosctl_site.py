"""`aiosctl up --detach`, `aiosctl env`, `kubectl get aios`, `aiosctl down`, as a user runs them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from aios.stack.process import group_alive

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


def test_up_env_get_down(tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    run([*AIOSCTL, "up", "--detach", "--site-dir", str(site_dir)])
    state = json.loads((site_dir / "site.json").read_text())
    pids = [state["supervisor_pid"], *state["processes"].values()]
    try:
        assert state["ready"] and "operator" in state["processes"]
        variables = exported(run([*AIOSCTL, "env", "--site-dir", str(site_dir)]))
        for name in [
            "KUBECONFIG",
            "AIOS_KAFKA_BOOTSTRAP",
            "AIOS_TEMPORAL_ADDRESS",
            "AIOS_OPA_URL",
            "AIOS_TRITON_URL",
            "AIOS_MQTT_URL",
            "PATH",
        ]:
            assert variables.get(name), f"aiosctl env lacks {name}"
        env = {**os.environ, **variables}
        kubectl = run(["bash", "-c", "command -v kubectl"], env=env).strip()
        tools = state["endpoints"]["tools_path"].split(os.pathsep)
        assert kubectl.startswith(tools[0]), "the site's kubectl first"
        temporal = run(["bash", "-c", "command -v temporal"], env=env).strip()
        assert temporal.startswith(tools[1]), "and the Temporal CLI"
        table = run(["kubectl", "get", "aios"], env=env)
        for name in [
            "pm25-anomaly",
            "pm25-forecast",
            "pm25-alerting",
            "actuation-needs-approval",
            "district-7",
        ]:
            assert name in table
        as_json = json.loads(run([*AIOSCTL, "env", "--site-dir", str(site_dir), "-o", "json"]))
        assert as_json == variables, "-o json carries what the export lines carry"
        chart = yaml.safe_load(run([*AIOSCTL, "env", "--site-dir", str(site_dir), "--helm-values"]))
        assert chart["kafka"]["bootstrap"] == variables["AIOS_KAFKA_BOOTSTRAP"]
        assert chart["webhook"]["endpoint"] == "podIP"
        listed = json.loads(run([*AIOSCTL, "status", "-o", "json"], env=env))["items"]
        assert {i["name"] for i in listed} >= {"pm25-anomaly", "pm25-alerting", "district-7"}
        again = subprocess.run(
            [*AIOSCTL, "up", "--detach", "--site-dir", str(site_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode != 0 and "already runs" in again.stderr
    finally:
        run([*AIOSCTL, "down", "--site-dir", str(site_dir)], timeout=180)
    leftovers = [pid for pid in pids if group_alive(pid)]
    assert not leftovers, f"processes left behind: {leftovers}"
