"""The operator skeleton against the real API server: every kind is observed, updated and
deleted; status follows the Kubernetes conventions."""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml
from support import wait_for

from aios.stack.platform import example_files

EXAMPLES = {yaml.safe_load(p.read_text())["kind"]: p for p in example_files()}


def observed(kubectl, kind: str, name: str, namespace: str) -> dict | None:
    obj = kubectl.json("get", kind, name, "-n", namespace)
    status = obj.get("status") or {}
    return obj if status.get("observedGeneration") == obj["metadata"]["generation"] else None


@pytest.mark.parametrize("kind", ["ModelDeployment", "AutomationIntent", "Policy", "EdgeGateway"])
def test_kind_is_accepted_updated_and_deleted(kubectl, operator, namespace, kind: str) -> None:
    manifest = yaml.safe_load(EXAMPLES[kind].read_text())
    name = manifest["metadata"]["name"]
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))

    obj = wait_for(lambda: observed(kubectl, kind, name, namespace))
    accepted = {c["type"]: c for c in obj["status"]["conditions"]}["Accepted"]
    assert accepted["status"] == "True"
    assert accepted["observedGeneration"] == obj["metadata"]["generation"] == 1
    assert accepted["reason"] and accepted["message"]
    datetime.fromisoformat(accepted["lastTransitionTime"].replace("Z", "+00:00"))
    first_transition = accepted["lastTransitionTime"]

    kubectl("label", kind, name, "-n", namespace, "aios.dev/touched=yes")  # no new generation
    kubectl("annotate", kind, name, "-n", namespace, "aios.dev/note=spec-change-next")
    manifest["metadata"].setdefault("labels", {})["aios.dev/touched"] = "yes"
    bump_spec(manifest)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
    obj = wait_for(lambda: observed(kubectl, kind, name, namespace))
    assert obj["metadata"]["generation"] == 2
    accepted = {c["type"]: c for c in obj["status"]["conditions"]}["Accepted"]
    assert accepted["observedGeneration"] == 2
    assert accepted["lastTransitionTime"] == first_transition, "status did not change"
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    assert not any(k.startswith("kopf.zalando.org") for k in obj["metadata"]["annotations"]), (
        "no kopf diff-base annotation doubling the object's size"
    )

    kubectl("delete", kind, name, "-n", namespace, "--timeout=30s")
    gone = kubectl.run("get", kind, name, "-n", namespace)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def bump_spec(manifest: dict) -> None:
    """A small, valid spec change for each kind."""
    spec = manifest["spec"]
    match manifest["kind"]:
        case "ModelDeployment":
            spec["model"]["version"] = spec["model"]["version"] + "-next"
        case "AutomationIntent":
            spec["mode"] = "shadow" if spec.get("mode") != "shadow" else "active"
        case "Policy":
            spec["enforcement"] = "warn" if spec.get("enforcement") != "warn" else "dryrun"
        case "EdgeGateway":
            spec["site"] = spec["site"] + "-b"


def test_kubectl_get_aios_lists_every_kind_with_status_columns(
    kubectl, operator, namespace
) -> None:
    for path in EXAMPLES.values():
        kubectl("apply", "-n", namespace, "-f", str(path))
    for kind, path in EXAMPLES.items():
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        wait_for(lambda kind=kind, name=name: observed(kubectl, kind, name, namespace))
    table = kubectl("get", "aios", "-n", namespace)
    for kind in EXAMPLES:
        assert f"{kind.lower()}.aios.dev/" in table
    assert "READY" in table and "AGE" in table
