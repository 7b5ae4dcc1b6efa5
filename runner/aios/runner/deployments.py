"""The status of the ModelDeployments an intent calls, kept current by a watch, so every
request follows the rollout's traffic split (``aios.connectors.inference.route``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client, watch

from aios.api import GROUP, VERSION, ModelDeployment
from aios.connectors.kube import api_client

log = logging.getLogger(__name__)


class DeploymentStatuses:
    """Latest ``status`` of the named ModelDeployments of one namespace (list, then watch)."""

    def __init__(self, namespace: str, names: Iterable[str]) -> None:
        self.namespace = namespace
        self.names = set(names)
        self._statuses: dict[str, Mapping[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="md-watch", daemon=True)

    def start(self) -> DeploymentStatuses:
        if self.names:
            self._thread.start()
        else:
            self._synced.set()
        return self

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def __call__(self, name: str) -> Mapping[str, Any] | None:
        with self._lock:
            return self._statuses.get(name)

    def _run(self) -> None:
        api = client.CustomObjectsApi(api_client())
        plural = ModelDeployment.crd.plural
        while not self._stop.is_set():
            try:
                listed: Any = api.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plural
                )
                with self._lock:
                    self._statuses = {
                        i["metadata"]["name"]: i.get("status") or {}
                        for i in listed["items"]
                        if i["metadata"]["name"] in self.names
                    }
                self._synced.set()
                stream = watch.Watch().stream(
                    api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    plural,
                    resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=300,
                )
                event: Any
                for event in stream:
                    if self._stop.is_set():
                        return
                    obj = event["object"]
                    name = obj["metadata"]["name"]
                    if name not in self.names:
                        continue
                    with self._lock:
                        if event["type"] == "DELETED":
                            self._statuses.pop(name, None)
                        else:
                            self._statuses[name] = obj.get("status") or {}
            except Exception as error:  # the API server restarting must not stop routing
                log.warning("watching ModelDeployments failed, retrying: %s", error)
                self._stop.wait(2)
