"""The status of the ModelDeployments an intent calls, kept current by a watch, so every
request follows the rollout's traffic split (``aios.connectors.inference.route``)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from aios.api import GROUP, VERSION, ModelDeployment
from aios.connectors.informer import Informer
from aios.connectors.kube import api_client


class DeploymentStatuses:
    """Latest ``status`` of the named ModelDeployments of one namespace (list, then watch)."""

    def __init__(self, namespace: str, names: Iterable[str]) -> None:
        self.namespace = namespace
        self.names = set(names)
        self._statuses: dict[str, Mapping[str, Any]] = {}
        self._uids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._informer = Informer(
            api_client(),
            GROUP,
            VERSION,
            ModelDeployment.crd.plural,
            namespace,
            self._observe,
            self._relisted,
        )

    def start(self) -> DeploymentStatuses:
        if self.names:
            self._informer.start()
        else:
            self._informer.synced.set()
        return self

    def stop(self) -> None:
        self._informer.stop()

    def wait_synced(self, timeout: float) -> bool:
        return self._informer.synced.wait(timeout)

    def __call__(self, name: str) -> Mapping[str, Any] | None:
        with self._lock:
            return self._statuses.get(name)

    def _observe(self, event_type: str | None, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name not in self.names:
            return
        with self._lock:
            if event_type == "DELETED":
                self._statuses.pop(name, None)
                self._uids.pop(name, None)
            else:
                self._statuses[name] = obj.get("status") or {}
                self._uids[name] = obj["metadata"]["uid"]

    def _relisted(self, _: str | None, uids: set[str]) -> None:
        with self._lock:
            for name in [n for n, uid in self._uids.items() if uid not in uids]:
                self._statuses.pop(name, None)
                del self._uids[name]
