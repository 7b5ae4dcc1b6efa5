"""``aiosctl validate``, offline (kustomize and OPA binaries, no server): the examples pass;
each broken manifest fails with its file, the line of the offending field and the API
server's field path; what a shipped Policy would deny at admission fails too."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aios.cli.main import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
INVALID = sorted((REPO / "tests" / "integration" / "invalid").glob("*.yaml"))
runner = CliRunner()


@pytest.fixture
def validate(monkeypatch: pytest.MonkeyPatch):
    """Run ``aiosctl validate`` in ``cwd`` (paths in its report are relative to it)."""

    def run(*args: str, cwd: Path = REPO) -> tuple[int, str]:
        monkeypatch.chdir(cwd)
        monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
        result = runner.invoke(app, ["validate", *args])
        return result.exit_code, result.stdout

    return run


def test_every_example_and_overlay_passes(validate) -> None:
    code, out = validate("examples", "-o", "json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] and report["errors"] == 0
    # city-air-quality, city-a, city-b, local-site: each kustomization is built.
    assert report["targets"] == 4
    assert report["objects"] >= 4 * 5


def line_of(path: Path, dotted: str) -> int:
    """The line of the deepest part of ``dotted`` (spec.sources[0].name) in ``path``, found
    by reading the text top-down: each key after its parent, an item as its first ``-``."""
    lines = path.read_text().splitlines()
    at, found = 0, 0
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", dotted):
        if part.startswith("["):
            items = [i for i in range(at, len(lines)) if lines[i].lstrip().startswith("- ")]
            index = int(part[1:-1])
        else:
            pattern = re.compile(rf"\s*(- )?{re.escape(part)}:")
            items = [i for i in range(at, len(lines)) if pattern.match(lines[i])]
            index = 0
        if len(items) <= index:
            break  # missing: the deepest part present is where the problem is
        at = items[index]
        found = at + 1
    return found


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_each_invalid_manifest_fails_at_its_field(validate, path: Path) -> None:
    code, out = validate(str(path.relative_to(REPO)), "-o", "json")
    assert code == 1
    problems = json.loads(out)["problems"]
    assert problems and all(p["severity"] == "error" for p in problems)
    (first, *_) = problems
    assert first["file"] == str(path.relative_to(REPO))
    assert first["kind"] == yaml.safe_load(path.read_text())["kind"]
    assert first["line"] == line_of(path, first["field"]), first


def test_text_output_is_file_line_severity_message(validate) -> None:
    path = "tests/integration/invalid/md-confidence-above-maximum.yaml"
    code, out = validate(path)
    assert code == 1
    line = line_of(REPO / path, "spec.decision.confidenceThreshold")
    expected = f"{path}:{line}: error: ModelDeployment default/invalid: "
    assert expected + "spec.decision.confidenceThreshold: Input should be less than" in out
    assert "FAILED 1 target(s), 1 object(s): 1 error(s), 0 warning(s)" in out


def test_github_annotations(validate) -> None:
    path = "tests/integration/invalid/md-unknown-field.yaml"
    code, out = validate(path, "-o", "github")
    assert code == 1
    line = line_of(REPO / path, "spec.foo")
    assert f"::error file={path},line={line},title=aiosctl validate::" in out
    assert "spec.foo: Extra inputs are not permitted" in out


def overlay(tmp_path: Path, intent: dict[str, object]) -> Path:
    """A site repository: City A as its base, plus one more intent."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLES, site / "examples")
    overlay = site / "overlay"
    overlay.mkdir()
    (overlay / "intent.yaml").write_text(yaml.safe_dump(intent))
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["../examples/city-a", "intent.yaml"]})
    )
    return site


def intent(action: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "AutomationIntent",
        "metadata": {"name": "barrier", "namespace": "city-a"},
        "spec": {
            "sources": [{"name": "readings", "kafkaTopic": "aios.city-a.district-7.readings"}],
            "rules": [{"name": "always", "when": "reading.pm25 > 1", "action": action["name"]}],
            "actions": [action],
        },
    }


def test_what_the_sites_policies_deny_fails_the_build(validate, tmp_path: Path) -> None:
    site = overlay(tmp_path, intent({"name": "close", "type": "mqtt", "target": "city/barrier"}))
    code, out = validate("overlay", "-o", "json", cwd=site)
    assert code == 1, out
    denied = {p["message"] for p in json.loads(out)["problems"] if p["source"] == "policy"}
    assert any("city-a/actuation-needs-approval" in m and "human approval" in m for m in denied), (
        denied
    )
    assert any("city-a/allowed-action-targets" in m and "city/barrier" in m for m in denied), denied
    text_code, text = validate("overlay", cwd=site)
    assert text_code == 1
    assert "overlay/intent.yaml:" in text, "problems point at the file that declares the object"


def test_an_allowed_action_passes_the_same_policies(validate, tmp_path: Path) -> None:
    action = {
        "name": "notify",
        "type": "webhook",
        "target": "https://alerts.city-a.example/hooks/barrier",
    }
    code, out = validate("overlay", cwd=overlay(tmp_path, intent(action)))
    assert code == 0, out


def test_bad_rego_is_an_error_and_warn_policies_warn(validate, tmp_path: Path) -> None:
    base = yaml.safe_load((EXAMPLES / "city-air-quality" / "pm25-anomaly.yaml").read_text())
    policies = [
        {
            "apiVersion": "aios.dev/v1alpha1",
            "kind": "Policy",
            "metadata": {"name": "no-canaries"},
            "spec": {
                "rego": (
                    "package x\nimport rego.v1\nviolation contains msg if {\n"
                    '  input.object.spec.rollout.strategy == "canary"\n'
                    '  msg := "canaries need a change ticket"\n}\n'
                ),
                "enforcement": "warn",
                "scope": {"kinds": ["ModelDeployment"]},
            },
        },
        {
            "apiVersion": "aios.dev/v1alpha1",
            "kind": "Policy",
            "metadata": {"name": "broken"},
            "spec": {"rego": "package x\nviolation contains msg if { msg := nowhere }\n"},
        },
    ]
    (tmp_path / "site.yaml").write_text(yaml.safe_dump_all([base, *policies]))
    code, out = validate("site.yaml", "-o", "json", cwd=tmp_path)
    assert code == 1
    problems = json.loads(out)["problems"]
    (broken,) = [p for p in problems if p["name"] == "broken"]
    assert "Rego does not compile" in broken["message"] and "nowhere" in broken["message"]
    (warning,) = [p for p in problems if p["severity"] == "warning"]
    assert warning["name"] == "pm25-anomaly" and "change ticket" in warning["message"]


def test_a_build_that_fails_is_reported_not_raised(validate, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    code, out = validate(".", "-o", "json", cwd=tmp_path)
    assert code == 1
    (problem,) = json.loads(out)["problems"]
    assert problem["source"] == "kustomize" and "missing.yaml" in problem["message"]


def test_yaml_that_does_not_parse_names_its_line(validate, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n")
    code, out = validate("bad.yaml", "-o", "json", cwd=tmp_path)
    assert code == 1
    (problem,) = json.loads(out)["problems"]
    assert problem["source"] == "yaml" and problem["line"] == 4
