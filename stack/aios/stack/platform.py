"""aios on top of a running site: its CRDs installed and its operator running.

Used by ``aiosctl up`` and by the integration fixtures, so both run the same thing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from aios.stack.components import REPO_ROOT
from aios.stack.models import mirror_environment
from aios.stack.process import ManagedProcess, free_port
from aios.stack.site import Site, http_ok

CRD_DIR = REPO_ROOT / "crds"
EXAMPLES = REPO_ROOT / "examples" / "city-air-quality"
LOCAL_SITE = REPO_ROOT / "examples" / "local-site"
"""The example as the local site runs it, actions pointed at a stand-in alert service."""


def site_environment(site: Site) -> dict[str, str]:
    """The variables every aios process reads to find the site (what ``aiosctl env`` prints)."""
    e = site.endpoints
    return {
        "KUBECONFIG": e.kubeconfig,
        "AIOS_KAFKA_BOOTSTRAP": e.kafka_bootstrap,
        "AIOS_TEMPORAL_ADDRESS": e.temporal_address,
        "AIOS_OPA_URL": e.opa_url,
        "AIOS_TRITON_URL": e.triton_http,
        "AIOS_TRITON_GRPC": e.triton_grpc,
        "AIOS_MQTT_URL": e.mqtt_url,
        **mirror_environment(),  # the example models' buckets, served from a local mirror
    }


def install_crds(site: Site, timeout: float = 60) -> list[str]:
    """Apply the generated CRDs server-side and wait until the API server serves them."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no CRDs in {CRD_DIR}: run `make crds`")
    for path in files:
        site.kubectl(
            [
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=aios-installer",
                "-f",
                str(path),
            ]
        )
    names = [p.name.removesuffix(".yaml") for p in files]
    site.kubectl(
        [
            "wait",
            "--for=condition=Established",
            f"--timeout={int(timeout)}s",
            *[f"crd/{n}" for n in names],
        ]
    )
    return names


def webhook_environment() -> dict[str, str]:
    """The admission webhook on loopback: the local API server calls it there."""
    return {
        "AIOS_WEBHOOK_ADDR": "127.0.0.1",
        "AIOS_WEBHOOK_HOST": "127.0.0.1",
        "AIOS_WEBHOOK_PORT": str(free_port()),
    }


def start_operator(site: Site, extra_env: dict[str, str] | None = None) -> ManagedProcess:
    """Run the operator as a host process and wait for its liveness endpoint."""
    port = free_port()
    process = ManagedProcess(
        "operator",
        [sys.executable, "-m", "aios.operator.main", f"--liveness-port={port}"],
        site.logs / "operator.log",
        env={
            **site_environment(site),
            **webhook_environment(),
            **(extra_env or {}),
            "PYTHONUNBUFFERED": "1",
        },
    ).start()
    site.processes["operator"] = process
    site.state.processes["operator"] = process.pid
    site.state.logs["operator"] = str(process.log)
    site.state.save()
    process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60)
    return process


def apply_examples(site: Site, namespace: str = "default") -> str:
    return site.kubectl(["apply", "-n", namespace, "--server-side", "-k", str(LOCAL_SITE)])


def wait_accepted(
    site: Site, namespace: str = "default", timeout: float = 60
) -> list[dict[str, Any]]:
    """Wait until every aios object in ``namespace`` has observed its generation."""
    deadline = time.monotonic() + timeout
    pending: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = json.loads(site.kubectl(["get", "aios", "-n", namespace, "-o", "json"]))["items"]
        pending = [
            i
            for i in items
            if i.get("status", {}).get("observedGeneration") != i["metadata"]["generation"]
        ]
        if items and not pending:
            return list(items)
        time.sleep(0.5)
    names = [f"{i['kind']}/{i['metadata']['name']}" for i in pending]
    raise TimeoutError(
        f"not observed after {timeout:.0f}s: {', '.join(names) or 'no aios objects'}"
    )


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "kustomization.yaml")
