"""KEDA in the site: its operator and metrics adapter run on the node beside Kubernetes, its
kinds are served, and the adapter is the cluster's ``external.metrics.k8s.io`` (an
APIService behind a Service whose one endpoint is the node's address). A ScaledObject
then becomes a HorizontalPodAutoscaler that reads a consumer group's Kafka lag, as in a
cluster where KEDA runs as pods. The operator and the adapter talk mutual TLS with a
certificate from the site's CA, as they would with KEDA's own."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from aios.stack import components
from aios.stack.pki import ensure_site_pki, issue_tls_directory
from aios.stack.site.node_endpoint import service_on_node

if TYPE_CHECKING:
    from aios.stack.site.lifecycle import Site

NAMESPACE = "keda"
OPERATOR_SERVICE = "keda-operator"
ADAPTER_SERVICE = "keda-metrics-apiserver"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
ADAPTER_PORT = 6444
"""The adapter's HTTPS port on the node (the API server has 6443)."""
GRPC_PORT = 9666
"""The operator's metrics service, which the adapter asks (KEDA's default port)."""
OPERATOR_METRICS_PORT, OPERATOR_HEALTH_PORT, ADAPTER_METRICS_PORT = 8090, 8091, 8092
KINDS = ("scaledobjects", "scaledjobs", "triggerauthentications", "clustertriggerauthentications")


def registration(node_address: str, ca_bundle: bytes) -> list[dict[str, Any]]:
    """The adapter as the cluster's external metrics API: KEDA's namespace, a Service
    without a selector whose endpoint is the adapter on the node, and the APIService that
    sends ``external.metrics.k8s.io`` there (verified with the site's CA)."""
    labels = {"app.kubernetes.io/name": ADAPTER_SERVICE, "app.kubernetes.io/part-of": "keda"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        *service_on_node(ADAPTER_SERVICE, NAMESPACE, labels, node_address, ADAPTER_PORT),
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": API_SERVICE, "labels": labels},
            "spec": {
                "service": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE, "port": 443},
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "caBundle": base64.b64encode(ca_bundle).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def start_keda(site: Site) -> None:
    """KEDA's kinds, its operator, then its adapter; returns once the API server serves
    external metrics through the adapter."""
    home = components.KEDA.ensure()
    site.kubectl(["apply", "--server-side", "--force-conflicts", "-f", str(home / "crds")])
    site.wait_established(f"{kind}.keda.sh" for kind in KINDS)
    pki = ensure_site_pki(site.directory / "pki")
    certs = site.directory / "keda"
    issue_tls_directory(
        pki,
        certs,
        "keda",
        [f"{OPERATOR_SERVICE}.{NAMESPACE}.svc", f"{ADAPTER_SERVICE}.{NAMESPACE}.svc"],
        ["127.0.0.1", site.address],
    )
    kubeconfig = site.endpoints.kubeconfig
    env = {
        "KUBECONFIG": kubeconfig,
        "WATCH_NAMESPACE": "",  # every namespace
        "POD_NAMESPACE": NAMESPACE,
        "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
    }
    operator = site.spawn(
        "keda-operator",
        [
            str(home / "bin" / "keda-operator"),
            f"--metrics-bind-address=127.0.0.1:{OPERATOR_METRICS_PORT}",
            f"--health-probe-bind-address=127.0.0.1:{OPERATOR_HEALTH_PORT}",
            f"--metrics-service-bind-address=127.0.0.1:{GRPC_PORT}",
            f"--cert-dir={certs}",
            "--zap-log-level=info",
            "--zap-encoder=console",
        ],
        env=env,
    )
    operator.wait_healthy(
        lambda: site.inside_ok(f"http://127.0.0.1:{OPERATOR_HEALTH_PORT}/readyz"), 60
    )
    site.kubectl(
        ["apply", "--server-side", "--force-conflicts", "-f", "-"],
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": registration(site.address, pki.ca_cert.read_bytes()),
            }
        ),
    )
    adapter = site.spawn(
        "keda-adapter",
        [
            str(home / "bin" / "keda-adapter"),
            f"--secure-port={ADAPTER_PORT}",
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'tls.crt'}",
            f"--tls-private-key-file={certs / 'tls.key'}",
            f"--lister-kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--metrics-service-address=127.0.0.1:{GRPC_PORT}",
            f"--port={ADAPTER_METRICS_PORT}",
            "--zap-log-level=info",
        ],
        env=env,
    )
    adapter.wait_healthy(lambda: available(site), 120)


def available(site: Site) -> bool:
    """Whether the API server reaches the adapter (the APIService's ``Available``)."""
    found = site.get("apiservice", API_SERVICE)
    conditions = (found.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)
