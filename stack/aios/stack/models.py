"""The example models: trained at build time, served in the local site from a bucket mirror.

``hack/models/build.py`` trains the air-quality models on synthetic data and lays them out
as the buckets the examples name (``s3://city-models/air-quality/...``). The local site
has no object storage, so the operator serves ``s3://`` and ``gs://`` model URIs from a
local mirror of the buckets: ``AIOS_MODEL_MIRROR`` names its directory, and
``s3://bucket/key`` is read from ``$AIOS_MODEL_MIRROR/bucket/key`` (as an on-premises
cluster would mount a synced copy). The cache is keyed by the training code's digest, so
a change to it retrains and nothing else does.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aios.stack.components import HACK, ComponentUnavailable, cache_root, exclusive

if TYPE_CHECKING:
    from aios.stack.site import Site

MODEL_MIRROR_ENV = "AIOS_MODEL_MIRROR"
SOURCES = HACK / "models"
BUCKET = "city-models/air-quality"


def digest() -> str:
    """What the built models depend on: the training and serving code."""
    sha = hashlib.sha256()
    for path in sorted(SOURCES.glob("*.py")):
        sha.update(path.name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()[:12]


def example_models() -> Path:
    """The mirror directory with every example model version, built on first use."""
    home = cache_root() / "models" / digest()
    with exclusive(home.with_name(home.name + ".lock")):
        if (home / ".complete").exists():
            return home
        building = home.with_name(home.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        result = subprocess.run(
            [sys.executable, str(SOURCES / "build.py"), str(building)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ComponentUnavailable(
                "training the example models failed (hack/models/build.py):\n"
                + result.stderr[-3000:]
            )
        (building / ".complete").touch()
        shutil.rmtree(home, ignore_errors=True)
        building.rename(home)
    return home


def storage_uri(model: str, version: str, scheme: str = "s3") -> str:
    """The bucket URI of an example model version, as the example manifests write it."""
    return f"{scheme}://{BUCKET}/{model}/{version}"


def repository(model: str, version: str) -> Path:
    """The local model repository of an example model version."""
    return example_models() / BUCKET / model / version


def mirror_environment() -> dict[str, str]:
    """What the operator needs to serve the examples' bucket URIs locally."""
    return {MODEL_MIRROR_ENV: str(example_models())}


def wait_serving(site: Site, namespace: str = "default", timeout: float = 300) -> list[str]:
    """Wait (up to ``timeout``) until every ModelDeployment in ``namespace`` answers; one
    line per model: its version and endpoints, or why it does not serve (what ``aiosctl
    up`` prints)."""
    deadline = time.monotonic() + timeout
    while True:
        items = site.get("modeldeployments", "-n", namespace)
        lines, waiting = [], False
        for item in items["items"]:
            status = item.get("status") or {}
            ready: dict[str, Any] = next(
                (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
            )
            name, endpoints = item["metadata"]["name"], status.get("endpoints") or {}
            if ready.get("status") == "True":
                lines.append(
                    f"{name} {status.get('activeVersion')} on {item['spec']['runtime']}: "
                    f"{endpoints.get('http')} (gRPC {endpoints.get('grpc')})"
                )
            else:
                waiting = True
                lines.append(f"{name}: not serving yet ({ready.get('message', 'no status')})")
        if not waiting or time.monotonic() > deadline:
            return lines
        time.sleep(1)
