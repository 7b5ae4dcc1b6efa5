"""The generated CRDs in the real API server: examples apply, bad manifests are rejected
with the offending field named, and `kubectl explain` reads well."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aios.api import CRD_KINDS
from aios.stack.platform import example_files

INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))


def expected_fragment(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect:"), f"{path.name} must start with '# expect: <field>'"
    return first.removeprefix("# expect:").strip()


def test_every_kind_is_served_with_the_aios_category(kubectl, crds) -> None:
    served = kubectl("api-resources", "--api-group=aios.dev", "--categories=aios", "-o", "name")
    for model in CRD_KINDS:
        assert f"{model.crd.plural}.aios.dev" in served.split()


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_example_applies_with_strict_validation(kubectl, crds, namespace, path: Path) -> None:
    kubectl("apply", "--validate=strict", "-n", namespace, "-f", str(path))
    kind = yaml.safe_load(path.read_text())["kind"]
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    stored = kubectl.json("get", kind, name, "-n", namespace)
    assert stored["spec"], "the API server stored the spec"


@pytest.mark.fault("malformed custom resource")
@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_rejected_naming_the_field(
    kubectl, crds, namespace, path: Path
) -> None:
    result = kubectl.run("apply", "--validate=strict", "-n", namespace, "-f", str(path))
    assert result.returncode != 0, f"{path.name} was accepted"
    assert expected_fragment(path) in result.stderr, result.stderr


def test_the_invalid_corpus_covers_every_kind_of_mistake() -> None:
    assert len(INVALID) >= 10


def test_kubectl_explain_describes_the_fields(kubectl, crds) -> None:
    text = kubectl("explain", "modeldeployment.spec.rollout")
    assert "DESCRIPTION" in text and "strategy" in text
    assert "<string>" in text or "<Object>" in text or "<object>" in text


def test_the_api_server_applies_defaults(kubectl, crds, namespace) -> None:
    manifest = {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "defaults"},
        "spec": {"model": {"name": "m", "version": "1", "storageUri": "file:///models/m"}},
    }
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
    stored = kubectl.json("get", "modeldeployment", "defaults", "-n", namespace)
    assert stored["spec"]["runtime"] == "triton"
    assert stored["spec"]["rollout"]["strategy"] == "direct"
