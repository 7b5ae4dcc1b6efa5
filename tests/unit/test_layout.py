"""The layout rules of DESIGN.md: one PEP 420 namespace `aios`, no package shadowing stdlib."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
    "find"
]["where"]


def test_no_portion_ships_an_aios_init() -> None:
    assert not list(REPO.glob("*/aios/__init__.py"))


def test_every_portion_is_a_folder_named_in_pyproject() -> None:
    portions = {p.parent.name for p in REPO.glob("*/aios") if list(p.rglob("*.py"))}
    assert portions <= set(ROOTS)
    assert {"crds", "operator", "cli", "stack"} <= portions


def test_no_top_level_package_shadows_the_standard_library() -> None:
    for root in ROOTS:
        assert not (REPO / root / "operator" / "__init__.py").exists()
        assert not (REPO / root / "__init__.py").exists()


def test_versions_are_pinned_in_one_file() -> None:
    from aios.stack.components import versions

    pinned = versions()
    for key in [
        "KUBERNETES_VERSION",
        "ETCD_VERSION",
        "CONTAINERD_VERSION",
        "COREDNS_VERSION",
        "TEMPORAL_CLI_VERSION",
        "OPA_VERSION",
        "HELM_VERSION",
        "KAFKA_VERSION",
    ]:
        assert pinned[key], key
