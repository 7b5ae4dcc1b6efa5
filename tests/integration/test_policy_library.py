"""The Rego library under ``opa`` itself: its unit tests, strict checks, formatting, and
a library Policy as the operator loads it (no OPA server needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from aios.api import Policy
from aios.operator.reconcile.policy import data_document, load_plan
from aios.stack.components import OPA

POLICIES = Path(__file__).resolve().parents[2] / "policies"
LIBRARY = sorted(p for p in POLICIES.glob("*.rego") if not p.stem.endswith("_test"))


def opa(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(OPA.binary()), *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def test_opa_test_runs_every_policy_test_and_all_pass() -> None:
    result = opa("test", str(POLICIES), "--format=json")
    outcomes = json.loads(result.stdout)
    failed = [o["name"] for o in outcomes if o.get("fail") or o.get("error")]
    assert result.returncode == 0 and not failed, result.stdout[-3000:] + result.stderr
    tested = {o["package"] for o in outcomes}
    for module in LIBRARY:
        assert f'data.aios.library["{module.stem}"]' in tested, f"{module.name} has no tests"
    assert "data.aios.system" in tested


def test_every_module_has_a_test_file_and_the_library_is_complete() -> None:
    names = {m.stem for m in LIBRARY}
    assert {
        "actuation-needs-approval",
        "model-approval",
        "data-residency",
        "personal-data-retention",
        "allowed-action-targets",
        "actuation-rate-cap",
    } <= names
    for module in LIBRARY:
        assert module.with_name(f"{module.stem}_test.rego").exists(), module.name


def test_the_library_passes_strict_checks_and_is_formatted() -> None:
    check = opa("check", "--strict", str(POLICIES))
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = opa("fmt", "--list", str(POLICIES))
    assert fmt.stdout.strip() == "", f"run `opa fmt -w policies/`: {fmt.stdout}"


def test_a_module_policy_passes_its_parameters_to_the_library(tmp_path: Path) -> None:
    """The example Policy (actuation-needs-approval with actionTypes [mqtt]) as the operator
    loads it: the library module, the parameters and the registry entry naming the module,
    asked through the system entry point."""
    example = POLICIES.parent / "examples" / "city-air-quality" / "actuation-needs-approval.yaml"
    policy = Policy.model_validate(yaml.safe_load(example.read_text()))
    library = {m.stem: m.read_text() for m in LIBRARY}
    plan = load_plan("city", "approval", policy, library)
    assert plan.rego is None and plan.library is not None
    (tmp_path / "data.json").write_text(json.dumps(data_document([plan])))

    def denials(action_type: str) -> list[str]:
        action = {
            "kind": "Action",
            "namespace": "city",
            "action": {"name": "a", "type": action_type, "target": "t"},
            "approver": None,
        }
        result = opa(
            "eval",
            "--format=json",
            "--stdin-input",
            "-d",
            str(tmp_path / "data.json"),
            "-d",
            str(POLICIES / "system" / "system.rego"),
            "-d",
            str(POLICIES / "actuation-needs-approval.rego"),
            "data.aios.system.decision.denials",
            stdin=json.dumps(action),
        )
        assert result.returncode == 0, result.stderr
        return list(json.loads(result.stdout)["result"][0]["expressions"][0]["value"])

    assert denials("mqtt") == [
        'city/approval: mqtt action "a" on "t" needs a human approval before it runs'
    ]
    assert denials("webhook") == []
