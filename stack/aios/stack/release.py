"""aios installed into the local site the way a city installs it: ``helm install`` of
``charts/aios`` with the images the project built, pinned by digest.

``aiosctl up``, ``aiosctl env --helm-values`` and the integration tests all use this, so the
README's walkthrough, ``make run`` and the tests run one path.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from aios.api import API_VERSION, EdgeGateway
from aios.stack.components import HELM, REPO_ROOT
from aios.stack.images import BuiltImage
from aios.stack.node import MODEL_MIRROR
from aios.stack.process import ComponentFailed
from aios.stack.site.probes import admission_reached
from aios.stack.site.services import PROMETHEUS_INTERVAL

if TYPE_CHECKING:
    from aios.stack.site import Endpoints, Site

CHART = REPO_ROOT / "charts" / "aios"
RELEASE, NAMESPACE = "aios", "aios-system"
LOCAL_SAMPLER_RATIO = 0.05
"""The share of readings the local site traces: every twentieth, enough to look at."""
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator,app.kubernetes.io/instance="


def image_values(image: BuiltImage) -> dict[str, str]:
    """The chart's ``repository``/``tag``/``digest`` of a built image."""
    repository, tag = image.reference.rsplit(":", 1)
    return {"repository": repository, "tag": tag, "digest": image.digest}


def local_site_values(
    endpoints: Endpoints, images: Mapping[str, BuiltImage], site: str = "local"
) -> dict[str, Any]:
    """The chart's values for a local site: its servers' addresses, the images the node
    holds (by digest), and the node's copy of the example models' buckets."""
    return {
        "site": {"name": site},
        "image": {**image_values(images["aios"]), "pullPolicy": "IfNotPresent"},
        "edgeImage": image_values(images["aios-edge"]),
        "tritonImage": image_values(images["tritonserver"]),
        "kafka": {
            "bootstrap": endpoints.kafka_bootstrap,
            "config": json.loads(endpoints.kafka_operator_config or "{}"),
        },
        "temporal": {"address": endpoints.temporal_address},
        "opa": {"url": endpoints.opa_url},
        "mqtt": {"url": endpoints.mqtt_url},
        "tracing": {"otlpEndpoint": endpoints.otlp_url, "samplerRatio": LOCAL_SAMPLER_RATIO},
        "monitoring": monitoring_values(endpoints.prometheus_url),
        "operator": {"extraEnv": [{"name": "AIOS_MODEL_MIRROR", "value": str(MODEL_MIRROR)}]},
        # The host's browser reaches the console's ClusterIP over plain HTTP.
        "console": {"secureCookie": False},
    }


def monitoring_values(prometheus_url: str) -> dict[str, Any]:
    """With the site's Prometheus, the chart's monitors on (the site serves their kinds and
    its Prometheus follows them, ``aios.stack.site.monitor_sync``), scraped every 5 s."""
    if not prometheus_url:
        return {}
    return {
        "prometheusUrl": prometheus_url,
        "serviceMonitor": {"enabled": True, "interval": PROMETHEUS_INTERVAL},
        "podMonitor": {"enabled": True, "interval": PROMETHEUS_INTERVAL},
        "prometheusRule": {"enabled": True},
    }


@dataclass(frozen=True)
class Helm:
    """The site's Helm: its kubeconfig, and its caches in the site, not in ``~``."""

    site: Site

    def __call__(self, *args: str, timeout: float = 600) -> str:
        home = self.site.directory / "helm"
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": self.site.endpoints.kubeconfig,
        }
        result = subprocess.run(
            [str(HELM.binary()), *args], capture_output=True, text=True, timeout=timeout, env=env
        )
        if result.returncode != 0:
            raise ComponentFailed(
                "helm", f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}", None
            )
        return result.stdout


def values_file(site: Site, overrides: Mapping[str, Any] | None = None) -> Path:
    """The local site's values (with ``overrides`` merged over them) in a file for Helm:
    the images its node imported."""
    values = merge(local_site_values(site.endpoints, site.images), overrides or {})
    path = site.directory / "helm" / "values.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def install(
    site: Site,
    overrides: Mapping[str, Any] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    timeout: float = 300,
) -> str:
    """``helm upgrade --install`` aios into the site and wait until its operator serves;
    returns Helm's report. A failure raises with the operator's pods' state and log."""
    helm = Helm(site)
    values = values_file(site, overrides)
    try:
        report = helm(
            *("upgrade", "--install", release, str(CHART), "--namespace", namespace),
            *("--create-namespace", "--values", str(values)),
            *("--wait", f"--timeout={int(timeout)}s"),
            timeout=timeout + 60,
        )
        wait_admitting(site, namespace, timeout)
    except ComponentFailed as error:
        why = operator_report(site, release, namespace)
        raise ComponentFailed("aios", f"{error}\n{why}", None) from error
    return report


def console_url(site: Site, namespace: str = NAMESPACE, name: str = RELEASE) -> str | None:
    """The release's web console, at its Service's ClusterIP (which the host reaches);
    None when the release serves none."""
    try:
        service = f"{name}-console"
        found = site.get("service", service, "-n", namespace, request_timeout=10)
    except RuntimeError:
        return None
    spec = found["spec"]
    return f"http://{spec['clusterIP']}:{spec['ports'][0]['port']}"


def wait_admitting(site: Site, namespace: str, timeout: float) -> None:
    """Until the API server reaches the admission webhook: a Ready pod is not yet behind
    its Service (the endpoints follow), and until then every create of an aios kind is
    refused. Probed with a server-side dry run (no side effects, nothing audited); a
    Policy's denial counts as reached."""
    probe = {
        "apiVersion": API_VERSION,
        "kind": EdgeGateway.crd.kind,
        "metadata": {"name": "aios-admission-probe", "namespace": namespace},
        "spec": {"site": "probe", "sink": {"kafkaTopic": "aios.admission.probe"}},
    }
    deadline = time.monotonic() + timeout
    try:
        while not admission_reached(site.kubectl, probe):
            if time.monotonic() > deadline:
                raise ComponentFailed("aios", f"admission not reached in {timeout:.0f} s", None)
            time.sleep(0.5)
    except RuntimeError as error:
        raise ComponentFailed("aios", f"admission not reached: {error}", None) from error


def operator_report(site: Site, release: str, namespace: str) -> str:
    """Why the operator is not serving: its pods' phases, and the last log lines."""
    try:
        pods = site.get("pods", "-n", namespace, "-l", OPERATOR_SELECTOR + release)["items"]
        lines = [
            f"{p['metadata']['name']}: {p['status'].get('phase')} "
            f"{json.dumps(p['status'].get('containerStatuses', []))[:600]}"
            for p in pods
        ]
        if pods:
            lines.append(
                site.kubectl(
                    [
                        "logs",
                        "-n",
                        namespace,
                        pods[0]["metadata"]["name"],
                        "--tail=40",
                        "--all-containers",
                    ]
                )
            )
        return "\n".join(lines)
    except RuntimeError as error:
        return f"(no report: {error})"


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's way: maps merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
