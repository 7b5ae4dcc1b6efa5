"""What users do on a running site: its environment, the examples applied, waiting for
aios to take them in. Used by ``aiosctl up`` and by the integration fixtures, so both run
the same thing (aios itself is installed by ``aios.stack.release``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from aios.stack.components import REPO_ROOT
from aios.stack.models import mirror_environment
from aios.stack.site import Site

EXAMPLES = REPO_ROOT / "examples" / "city-air-quality"
LOCAL_SITE = REPO_ROOT / "examples" / "local-site"
"""The example as the local site runs it, actions pointed at a stand-in alert service."""


def site_environment(site: Site) -> dict[str, str]:
    """The variables every aios process reads to find the site (what ``aiosctl env`` prints)."""
    e = site.endpoints
    return {
        "KUBECONFIG": e.kubeconfig,
        "AIOS_KAFKA_BOOTSTRAP": e.kafka_bootstrap,
        "AIOS_KAFKA_CONFIG": e.kafka_config,  # the site admin's SASL identity
        "AIOS_TEMPORAL_ADDRESS": e.temporal_address,
        "TEMPORAL_ADDRESS": e.temporal_address,  # the Temporal CLI's own
        "AIOS_OPA_URL": e.opa_url,
        "AIOS_TRITON_URL": e.triton_http,
        "AIOS_TRITON_GRPC": e.triton_grpc,
        "AIOS_MQTT_URL": e.mqtt_url,
        "AIOS_JAEGER_URL": e.jaeger_url,
        "AIOS_PROMETHEUS_URL": e.prometheus_url,
        "KUBECACHEDIR": str(site.directory / "kube-cache"),  # kubectl's cache, not in ~/.kube
        **mirror_environment(),  # the example models' buckets, served from a local mirror
    }


def apply_examples(site: Site, namespace: str = "default") -> bool:
    """Apply the example city on the site's first start only, and say whether it did: on a
    restart the objects are the user's, and applying again would take back the fields a
    ``kubectl patch`` or ``edit`` changed (or fail on the conflict)."""
    applied = site.directory / "examples.applied"
    if applied.exists():
        return False
    site.kubectl(["apply", "-n", namespace, "--server-side", "-k", str(LOCAL_SITE)])
    applied.touch()
    return True


def wait_accepted(
    site: Site, namespace: str = "default", timeout: float = 60
) -> list[dict[str, Any]]:
    """Wait until every aios object in ``namespace`` has observed its generation."""
    deadline = time.monotonic() + timeout
    pending: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = site.get("aios", "-n", namespace)["items"]
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
    """The example's aios objects, one per file (not its RBAC or kustomization)."""

    def aios_only(path: Path) -> bool:
        documents = list(yaml.safe_load_all(path.read_text()))
        return len(documents) == 1 and documents[0]["apiVersion"].startswith("aios.dev/")

    return sorted(p for p in EXAMPLES.glob("*.yaml") if aios_only(p))
