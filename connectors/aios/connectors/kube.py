"""The Kubernetes API client every aios process builds the same way."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config

from aios.api import API_VERSION
from aios.api.base import kube_time


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


def refusal_message(error: client.ApiException, plural: str) -> str:
    """The API server's (or an admission webhook's) own words on creating one of ``plural``."""
    try:
        message = str(json.loads(error.body or "{}").get("message") or "")
    except ValueError:
        message = ""
    hint = f" (you need RBAC: create {plural})" if error.status == 403 and not message else ""
    return (message or str(error.reason)) + hint


def event(
    involved: Mapping[str, Any],
    name: str,
    reason: str,
    message: str,
    component: str,
    instance: str,
    kind: str = "Normal",
) -> dict[str, Any]:
    """A core/v1 Event about the aios object ``involved`` (its stored body), as ``kubectl
    describe`` shows it: ``name`` is the Event's, unique per occurrence."""
    meta = involved["metadata"]
    now = kube_time(datetime.now(UTC))
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message[:1024],
        "type": kind,
        "source": {"component": component},
        "reportingComponent": f"aios.dev/{component}",
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
