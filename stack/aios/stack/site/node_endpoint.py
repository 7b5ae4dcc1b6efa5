"""A cluster Service for a server that runs on the node beside Kubernetes rather than in a
pod (KEDA's metrics adapter, KServe's webhooks): no selector, and one EndpointSlice whose
address is the node's. The API server then reaches it by the Service's DNS name on 443,
verified against the certificate the site issued for that name."""

from __future__ import annotations

from typing import Any


def service_on_node(
    name: str, namespace: str, labels: dict[str, str], node_address: str, port: int
) -> list[dict[str, Any]]:
    """The Service ``name`` (HTTPS on 443) and its one endpoint, ``node_address:port``."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-node",
                "namespace": namespace,
                "labels": {**labels, "kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [node_address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
    ]
