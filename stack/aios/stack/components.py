"""Where each real component of the local site comes from.

Versions are pinned once, in ``hack/versions.env``; ``hack/obtain.sh`` builds or downloads a
component into ``$AIOS_CACHE/<name>/<version>/`` from the package registries. This module
finds those artefacts and obtains a missing one on demand, so ``aiosctl up`` and the test
fixtures work on a fresh machine without a separate set-up step.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
HACK = REPO_ROOT / "hack"


class ComponentUnavailable(RuntimeError):
    """A real component could not be obtained; the message says which and how to fix it."""


@cache
def versions() -> dict[str, str]:
    """The pinned versions, read from ``hack/versions.env``."""
    pinned: dict[str, str] = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pinned[key] = value
    return pinned


def cache_root() -> Path:
    return Path(os.environ.get("AIOS_CACHE", Path.home() / ".cache" / "aios"))


@contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """One process at a time across processes (``make`` beside a test run, two ``make``
    jobs), as ``hack/obtain.sh`` builds each component: an advisory lock on ``lock``."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Component:
    """A component built by ``hack/obtain.sh`` into a version-keyed directory."""

    name: str
    version_key: str

    @property
    def version(self) -> str:
        return versions()[self.version_key]

    @property
    def home(self) -> Path:
        return cache_root() / self.name / self.version

    @property
    def cached(self) -> bool:
        return (self.home / ".complete").exists()

    def ensure(self) -> Path:
        """Return the component's directory, building it first if the cache lacks it (or
        waiting for the build already under way: ``hack/obtain.sh`` holds a lock)."""
        if not self.cached:
            result = subprocess.run(
                [str(HACK / "obtain.sh"), self.name], capture_output=True, text=True
            )
            if result.returncode != 0 or not self.cached:
                tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
                raise ComponentUnavailable(
                    f"could not obtain {self.name} {self.version} with hack/obtain.sh "
                    f"{self.name} (exit {result.returncode}):\n{tail}"
                )
        return self.home

    def obtain_in_background(self) -> subprocess.Popen[bytes] | None:
        """Start building a missing component at the lowest CPU priority, for what only
        late tests need to build in the test session's idle time; ``ensure`` waits for it
        (and reports its failure, building again). None when it is cached."""
        if self.cached:
            return None
        return subprocess.Popen(
            ["nice", "-n", "19", str(HACK / "obtain.sh"), self.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def binary(self, name: str | None = None) -> Path:
        return self.ensure() / "bin" / (name or self.name)


KUBERNETES = Component("kubernetes", "KUBERNETES_VERSION")
ETCD = Component("etcd", "ETCD_VERSION")
CONTAINERD = Component("containerd", "CONTAINERD_VERSION")
TEMPORAL = Component("temporal", "TEMPORAL_CLI_VERSION")
TEMPORAL_TEST_SERVER = Component("temporal-test-server", "TEMPORAL_TEST_SERVER_VERSION")
"""Temporal's time-skipping server (Java): the workflow timer tests run on it."""
OPA = Component("opa", "OPA_VERSION")
HELM = Component("helm", "HELM_VERSION")
KAFKA = Component("kafka", "KAFKA_VERSION")
BENTHOS = Component("benthos", "BENTHOS_VERSION")
JAEGER = Component("jaeger", "JAEGER_VERSION")
"""Jaeger v2: the site's trace backend (OTLP in, its query API out)."""
PROMETHEUS = Component("prometheus", "PROMETHEUS_VERSION")
"""Prometheus 3: scrapes the site the way the chart's monitors tell it to."""
PROMETHEUS_OPERATOR_CRDS = Component("prometheus-operator-crds", "PROMETHEUS_OPERATOR_VERSION")
"""The Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule kinds (``crds/``)."""
KEDA = Component("keda", "KEDA_VERSION")
"""KEDA's operator and metrics adapter (``bin/keda-operator``, ``bin/keda-adapter``) and its
kinds (``crds/``): runners scaled on their consumer group's lag."""
S3PROXY = Component("s3proxy", "S3PROXY_VERSION")
"""An S3 server over a directory (``libs/``, Java): the site's model mirror as object storage."""
KSERVE = Component("kserve", "KSERVE_VERSION")
"""The KServe controller (``bin/kserve-controller``), its kinds (``crds/``) and its
published webhook configurations and ``inferenceservice-config`` (``config/``)."""


def mosquitto() -> Path:
    """Mosquitto comes from Debian's package (installed by ``hack/obtain.sh mosquitto``)."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        result = subprocess.run(
            [str(HACK / "obtain.sh"), "mosquitto"], capture_output=True, text=True
        )
        if result.returncode != 0 or not Path("/usr/sbin/mosquitto").exists():
            raise ComponentUnavailable(
                "mosquitto is not installed and `hack/obtain.sh mosquitto` failed:\n"
                + result.stderr[-2000:]
            )
        found = "/usr/sbin/mosquitto"
    return Path(found)


@dataclass(frozen=True)
class TritonDistribution:
    """The ``tritonserver`` shipped in the nvidia-pytriton wheel, made runnable on the host."""

    root: Path
    libs: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.root / "backends"

    def environment(self) -> dict[str, str]:
        """LD_LIBRARY_PATH with the wheel's libraries and this interpreter's libpython.

        Without the interpreter's LIBDIR first, the Python-backend stub loads the system
        libpython, which differs from the interpreter's and breaks models at import time.
        """
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        paths = [libdir, str(self.libs), os.environ.get("LD_LIBRARY_PATH", "")]
        return {
            "LD_LIBRARY_PATH": ":".join(p for p in paths if p),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }


def triton() -> TritonDistribution:
    """Copy the wheel's Triton tree with this Python's backend stub into the cache, once."""
    try:
        import pytriton
    except ImportError as error:
        raise ComponentUnavailable(
            "Triton comes from the nvidia-pytriton wheel: install the `serving` extra "
            "(make does this) — " + str(error)
        ) from error
    from importlib.metadata import version

    source = Path(pytriton.__file__).parent / "tritonserver"
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    root = cache_root() / "triton" / f"{version('nvidia-pytriton')}-py{python}"
    with exclusive(root.with_name(root.name + ".lock")):
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(
                source, root, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__")
            )
            stub = source / "python_backend_stubs" / python / "triton_python_backend_stub"
            if not stub.exists():
                raise ComponentUnavailable(
                    f"nvidia-pytriton has no backend stub for Python {python}"
                )
            shutil.copy(stub, root / "backends" / "python" / "triton_python_backend_stub")
            (root / ".complete").touch()
    return TritonDistribution(root=root, libs=libs)
