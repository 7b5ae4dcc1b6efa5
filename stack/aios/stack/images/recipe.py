"""What the images are and the settings every build of them shares: names, versions,
labels, the pinned build inputs, and where builds keep their work."""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from aios.stack.components import REPO_ROOT, Component, cache_root

SOURCES = REPO_ROOT / "images"
REGISTRY = "ghcr.io/aios-dev"
SOURCE_URL = "https://github.com/aios-dev/aios"
NAMES = ("aios", "aios-edge", "tritonserver", "coredns", "pause")
TRITON_VERSION = "2.51.0"  # the tritonserver in nvidia-pytriton 0.7.0
PAUSE_VERSION = "1.0.0"
COREDNS = Component("coredns", "COREDNS_VERSION")

# The one instant every file and image is dated: builds are reproducible.
EPOCH = 0
CREATED = "1970-01-01T00:00:00Z"
WHEEL_EPOCH = 315532800  # zip cannot store times before 1980

# The folders holding the portions of the namespace package aios (pyproject.toml's list).
PROJECT_ROOTS = (
    "crds",
    "operator",
    "workflows",
    "connectors",
    "runner",
    "edge-agent",
    "cli",
    "stack",
    "console",
)
# What the edge agent imports (tests/unit/test_images.py checks it against its imports).
EDGE_REQUIREMENTS = (
    "confluent-kafka",
    "numpy",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-sdk",
    "paho-mqtt",
    "prometheus-client",
    "pydantic",
)
# The installer: its wheel is in every wheelhouse and is run from there, so it never lands
# in an image.
PIP = "pip==26.3"
# Wheels for the images' interpreter (Debian bookworm: CPython 3.11, glibc 2.36), whatever
# the host's Python.
WHEEL_TARGET = (
    "--only-binary=:all:",
    "--implementation=cp",
    "--python-version=3.11",
    "--abi=cp311",
    *(f"--platform=manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    "--platform=manylinux2014_x86_64",
    "--platform=manylinux2010_x86_64",
    "--platform=manylinux1_x86_64",
)

# Base root file systems: Debian packages extracted, not installed (see images/base/).
BASE_OF = {"aios": "python", "aios-edge": "python", "tritonserver": "python-embed"}
SUITE = "bookworm"
MMDEBSTRAP_OPTIONS = (
    "--variant=extract",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/lintian/*",
    "--dpkgopt=path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*",
)
# What mmdebstrap leaves that an image must not carry: the host's name and resolver, device
# nodes (the runtime provides /dev), apt's sources and state (there is no apt).
BASE_DROPPED = (
    "./etc/hostname",
    "./etc/resolv.conf",
    "./etc/apt",
    "./var/cache/apt",
    "./var/lib/apt",
    "./var/log/apt",
)

# Debian packages the build runs (buildah, mmdebstrap, gcc for pause, skopeo to push them)
# and how each is found; those that shape an image are part of every key.
TOOLS = {
    "buildah": "buildah",
    "mmdebstrap": "mmdebstrap",
    "skopeo": "skopeo",
    "gcc": "gcc",
    "libc6-dev": "/usr/lib/x86_64-linux-gnu/libc.a",
}
BUILD_PACKAGES = ("buildah", "mmdebstrap", "gcc", "libc6-dev")


@dataclass(frozen=True)
class BuiltImage:
    """One built image: ``archive`` is an OCI archive (``ctr images import`` takes it);
    ``size`` is what a pull transfers (compressed layers, config, manifest), in bytes;
    ``unpacked_size`` the layers' uncompressed size."""

    name: str
    reference: str
    digest: str
    archive: Path
    size: int
    unpacked_size: int

    @property
    def pinned_reference(self) -> str:
        """``repository@sha256:…``: the image exactly, as a pod may name it."""
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"


@cache
def project_version() -> str:
    return str(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"])


def version(name: str) -> str:
    """The tag of an image: aios's version, or the version of what it packages."""
    if name in ("aios", "aios-edge"):
        return project_version()
    if name == "tritonserver":
        return TRITON_VERSION
    if name == "coredns":
        return COREDNS.version.removeprefix("v")
    if name == "pause":
        return PAUSE_VERSION
    raise ValueError(f"unknown image {name!r}: one of {', '.join(NAMES)}")


def reference(name: str) -> str:
    """The name an image is built, imported and pushed as, e.g. ghcr.io/aios-dev/aios:0.1.0."""
    return f"{REGISTRY}/{name}:{version(name)}"


def labels(name: str, commit: str) -> dict[str, str]:
    """The OCI labels our build adds to those in the Containerfile (which a Docker build
    has too): what differs per build, so buildah's layer cache never reuses a stale one."""
    return {
        "org.opencontainers.image.version": version(name),
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.created": CREATED,
    }


def work_dir() -> Path:
    return cache_root() / "images"


def note(message: str) -> None:
    print(f"aios images: {message}", file=sys.stderr, flush=True)
