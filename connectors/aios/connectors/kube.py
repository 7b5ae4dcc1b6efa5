"""The Kubernetes API client every aios process builds the same way."""

from __future__ import annotations

import os

from kubernetes import client, config


def api_client() -> client.ApiClient:
    """``KUBECONFIG`` when set (a developer, the local site), else in-cluster credentials."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)
