"""``aiosctl status`` and ``aiosctl explain`` as an operator on duty runs them, against the
session's site and operator: a Policy that cannot load is listed first and explained from
its conditions; a healthy object is explained as such; ``--wait`` gives up with exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import yaml
from support import wait_for

AIOSCTL = [sys.executable, "-m", "aios.cli.main"]


def aiosctl(site, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": site.endpoints.kubeconfig}
    return subprocess.run([*AIOSCTL, *args], capture_output=True, text=True, timeout=120, env=env)


UNKNOWN_MODULE = {
    "apiVersion": "aios.dev/v1alpha1",
    "kind": "Policy",
    "metadata": {"name": "misnamed"},
    "spec": {"module": {"name": "no-such-module"}, "enforcement": "deny"},
}
POLICY = {
    "apiVersion": "aios.dev/v1alpha1",
    "kind": "Policy",
    "metadata": {"name": "dry"},
    "spec": {"module": {"name": "actuation-needs-approval"}, "enforcement": "dryrun"},
}


def items(site, namespace: str) -> list[dict[str, Any]]:
    result = aiosctl(site, "status", "-n", namespace, "-o", "json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["items"])


def test_status_lists_the_odd_ones_first_and_explain_says_why(
    site, kubectl, operator, namespace
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all([POLICY, UNKNOWN_MODULE]))

    def reported() -> list[dict[str, Any]]:
        found = items(site, namespace)
        return found if len(found) == 2 and all(i["reconciled"] for i in found) else []

    first, second = wait_for(reported, timeout=60)
    assert (first["name"], first["ready"]) == ("misnamed", "False")
    assert first["reason"] == "UnknownModule"
    assert (second["name"], second["ready"]) == ("dry", "True")

    table = aiosctl(site, "status", "-n", namespace)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["KIND", "NAMESPACE", "NAME", "READY"]
    assert "misnamed" in lines[1] and "no module 'no-such-module' in the library" in table.stdout
    assert "1/2 ready and healthy" in table.stdout

    explained = aiosctl(site, "explain", "policy/misnamed", "-n", namespace)
    assert explained.returncode == 0, explained.stderr
    assert "Ready=False" in explained.stdout
    assert "Ready is False (UnknownModule): no module 'no-such-module'" in explained.stdout
    as_yaml = yaml.safe_load(
        aiosctl(site, "explain", "apol/misnamed", "-n", namespace, "-o", "yaml").stdout
    )
    assert as_yaml["ready"] == "False"
    assert any("Compiled is False (UnknownModule)" in f for f in as_yaml["findings"])
    odd_first = [c["type"] for c in as_yaml["conditions"][:3]]
    assert sorted(odd_first) == ["Compiled", "Loaded", "Ready"], "odd ones first"

    healthy = json.loads(aiosctl(site, "explain", "apol/dry", "-n", namespace, "-o", "json").stdout)
    assert healthy["findings"] == ["Nothing is wrong: Ready, reconciled, no warnings."]

    waited = aiosctl(site, "status", "-n", namespace, "--wait", "--timeout", "3")
    assert waited.returncode == 1, "an object that cannot become Ready fails the wait"
    missing = aiosctl(site, "explain", "md/absent", "-n", namespace)
    assert missing.returncode == 1 and "404" in missing.stderr


def test_wait_returns_once_everything_is_ready(site, kubectl, operator, namespace) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(POLICY))
    waited = aiosctl(site, "status", "-n", namespace, "--wait", "--timeout", "120", "-o", "json")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    (only,) = json.loads(waited.stdout)["items"]
    assert only["ready"] == "True" and only["reconciled"]
