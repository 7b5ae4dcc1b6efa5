"""The operator's one way to write its objects: a merge patch computed from the stored copy
and conditional on its resourceVersion.

A change computed from a stale copy is never written over a newer one: the API server
refuses it (409), the object is read again and the change computed again. The copy comes
from the watch-fed store, so the common case costs one request, and what was written goes
back into the store, so the next run starts from it even before the watch delivers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from aios.api import GROUP, VERSION
from aios.operator.reconcile.patches import changes_anything
from aios.operator.runtime.store import Store

Change = Callable[[Mapping[str, Any]], dict[str, Any] | None]
"""The patch to write over the object as stored; None, empty or a patch that changes
nothing: nothing is written."""


class Conflict(Exception):
    """The object kept changing under the writer."""


class Writer:
    """Writes one kind's objects (``plural``) and keeps ``store`` current with the results."""

    def __init__(self, api: client.ApiClient, plural: str, store: Store) -> None:
        self._objects = client.CustomObjectsApi(api)
        self.plural = plural
        self.store = store

    async def patch(
        self, uid: str, change: Change, subresource: str | None = None, attempts: int = 5
    ) -> dict[str, Any] | None:
        """Write ``change(stored object)``; returns the object as written, or None when
        nothing was (nothing to change, or the object is gone)."""
        current = self.store.get(uid)
        for _ in range(attempts):
            if current is None:
                return None
            body = change(current)
            if not body or not changes_anything(current, body):
                return None
            meta = current["metadata"]
            version = {"resourceVersion": meta["resourceVersion"]}
            body = {**body, "metadata": {**body.get("metadata", {}), **version}}
            try:
                written = await self._patch(meta["namespace"], meta["name"], body, subresource)
            except client.ApiException as error:
                if error.status == 404:  # gone: the watch's DELETED may still be on its way
                    self.store.forget(uid)
                    return None
                if error.status != 409:
                    raise
                current = await self.read(meta["namespace"], meta["name"], uid)
                continue
            self.store.observe(written)
            return written
        raise Conflict(f"{self.plural} {uid} kept changing")

    async def read(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        """The object as the API server has it now (after a conflict), into the store."""

        def get() -> dict[str, Any] | None:
            try:
                found: Any = self._objects.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, self.plural, name
                )
            except client.ApiException as error:
                if error.status == 404:
                    return None
                raise
            return dict(found)

        found = await asyncio.to_thread(get)
        if found is None or found["metadata"]["uid"] != uid:
            self.store.forget(uid)  # gone, perhaps replaced by a namesake
            return None
        self.store.observe(found)
        return self.store.get(uid)

    async def _patch(
        self, namespace: str, name: str, body: Mapping[str, Any], subresource: str | None
    ) -> dict[str, Any]:
        method = (
            self._objects.patch_namespaced_custom_object_status
            if subresource == "status"
            else self._objects.patch_namespaced_custom_object
        )
        written: Any = await asyncio.to_thread(
            method, GROUP, VERSION, namespace, self.plural, name, dict(body)
        )
        return dict(written)
