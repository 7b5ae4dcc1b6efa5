"""What an image's content depends on, each as a digest or a version: the cache key of
its build (a second build with the same inputs builds nothing)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tomllib
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from packaging.utils import canonicalize_name

from aios.stack.components import REPO_ROOT
from aios.stack.images.recipe import (
    BASE_DROPPED,
    BASE_OF,
    BUILD_PACKAGES,
    COREDNS,
    EDGE_REQUIREMENTS,
    MMDEBSTRAP_OPTIONS,
    PIP,
    PROJECT_ROOTS,
    SUITE,
    WHEEL_TARGET,
    reference,
)

BUILD_CODE = Path(__file__).parent
"""This package: a change to how images are built is an input of every image."""


def digest_files(files: Iterable[Path], root: Path) -> str:
    """One digest of files' paths (relative to ``root``) and contents, not of their mtimes."""
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(path.relative_to(root).as_posix().encode() + b"\0")
        sha.update(hashlib.sha256(path.read_bytes()).digest())
    return sha.hexdigest()


def project_files(root: Path = REPO_ROOT) -> list[Path]:
    """What goes into aios's wheel: the packages' modules, pyproject.toml, the README."""
    files = [root / "pyproject.toml", root / "README.md"]
    for portion in PROJECT_ROOTS:
        modules = (root / portion / "aios").rglob("*.py")
        files += (p for p in modules if "__pycache__" not in p.parts)
    return files


def policy_files(root: Path = REPO_ROOT) -> list[Path]:
    """The policy library the operator loads into OPA (its tests stay out)."""
    return [p for p in (root / "policies").rglob("*.rego") if not p.stem.endswith("_test")]


def image_files(name: str, root: Path = REPO_ROOT) -> list[Path]:
    """The image's own recipe: its folder under images/."""
    return [p for p in (root / "images" / name).rglob("*") if p.is_file()]


def base_files(base: str, root: Path = REPO_ROOT) -> list[Path]:
    folder = root / "images" / "base"
    return [folder / f"{base}.packages", folder / "customize.sh", folder / "Containerfile"]


def constraints(root: Path = REPO_ROOT) -> dict[str, str]:
    """The pins of hack/constraints.txt, by canonical name."""
    pins: dict[str, str] = {}
    for line in (root / "hack" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, pinned = line.split("==", 1)
            pins[canonicalize_name(name)] = pinned.strip()
    return pins


def requirements(name: str, root: Path = REPO_ROOT) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What an image's wheelhouse holds: requirements installed with their dependencies,
    and wheels used on their own (pip, the pytriton wheel Triton is taken from)."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    if name == "aios":
        return tuple(project["dependencies"] + project["optional-dependencies"]["model-server"]), (
            PIP,
        )
    if name == "aios-edge":
        return EDGE_REQUIREMENTS, (PIP,)
    if name == "tritonserver":
        return ("numpy",), (PIP, "nvidia-pytriton")
    return (), ()


def wheelhouse_key(name: str, root: Path = REPO_ROOT) -> str:
    """What an image's wheelhouse depends on: its requirements, the pins, the target."""
    with_deps, alone = requirements(name, root)
    return digest_json(
        {
            "requirements": with_deps,
            "alone": alone,
            "constraints": sorted(constraints(root).items()),
            "target": WHEEL_TARGET,
        }
    )


def apt_sources() -> list[Path]:
    """The host's apt sources for Debian bookworm (one-line or deb822 files), which
    mmdebstrap reads: the image's packages come from where the host's come from."""
    listed = [Path("/etc/apt/sources.list")]
    for pattern in ("*.list", "*.sources"):
        listed += sorted(Path("/etc/apt/sources.list.d").glob(pattern))
    suite = re.compile(rf"^(?!\s*#).*(\s|^){SUITE}(-\w+)?(\s|$)", re.MULTILINE)
    return [p for p in listed if p.is_file() and suite.search(p.read_text())]


def base_key(base: str, root: Path = REPO_ROOT) -> str:
    """What a base root file system depends on: its recipe, the host's Debian mirror."""
    return digest_json(
        {
            "recipe": digest_files(base_files(base, root), root),
            "mmdebstrap": [*MMDEBSTRAP_OPTIONS, SUITE, *BASE_DROPPED],
            "sources": [p.read_text() for p in apt_sources()],
            "tools": tool_versions().get("mmdebstrap", ""),
        }
    )


def source_paths(name: str) -> list[str]:
    """Every repository path an image is built from (for its revision label)."""
    paths = [f"images/{name}", "stack/aios/stack/images"]
    if name in BASE_OF:
        paths += ["images/base", "hack/constraints.txt"]
    if name in ("aios", "aios-edge"):
        paths += ["pyproject.toml", "README.md", *PROJECT_ROOTS]
    if name == "aios":
        paths.append("policies")
    if name == "coredns":
        paths += ["hack/versions.env", "hack/obtain.sh"]
    return paths


def revision(paths: Sequence[str], root: Path = REPO_ROOT) -> str:
    """The last commit that touched ``paths``, ``-dirty`` if they have changes not committed."""
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run(
            [*git, "log", "-1", "--format=%H", "--", *paths], capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", *paths], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not commit:
        return "unknown"
    return commit + ("-dirty" if changed else "")


def image_inputs(name: str) -> dict[str, str]:
    """Everything an image's content depends on, each as a digest or a version."""
    inputs = {
        "reference": reference(name),
        "recipe": digest_files(image_files(name), REPO_ROOT),
        "build": digest_files(BUILD_CODE.glob("*.py"), BUILD_CODE),
        "tools": digest_json(tool_versions()),
        "revision": revision(source_paths(name)),
    }
    if name in BASE_OF:
        inputs["base"] = base_key(BASE_OF[name])
        inputs["wheelhouse"] = wheelhouse_key(name)
    if name in ("aios", "aios-edge"):
        inputs["project"] = digest_files(project_files(), REPO_ROOT)
    if name == "aios":
        inputs["policies"] = digest_files(policy_files(), REPO_ROOT)
    if name == "coredns":
        inputs["binary"] = file_digest(COREDNS.binary())
    return inputs


def input_key(inputs: dict[str, str]) -> str:
    return digest_json(inputs)[:16]


@cache
def tool_versions() -> dict[str, str]:
    """The Debian versions of the build tools (part of every key: they shape the output)."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *BUILD_PACKAGES],
        capture_output=True,
        text=True,
    )
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


def digest_json(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()
