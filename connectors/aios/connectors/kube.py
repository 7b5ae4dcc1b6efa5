"""The Kubernetes API client every aios process builds the same way."""

from __future__ import annotations

import os

from kubernetes import client, config


def api_client(connections: int | None = None, kubeconfig: str | None = None) -> client.ApiClient:
    """``kubeconfig`` or ``KUBECONFIG`` when set (a developer, the local site), else
    in-cluster credentials. ``connections``: how many requests may be in flight at once
    (the client's default is a few; a controller running many reconciles at once needs as
    many as its threads)."""
    configuration = client.Configuration()
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    if connections is not None:
        configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)
