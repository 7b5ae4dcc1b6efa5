"""Server-side apply of rendered children, and pruning of those no longer rendered.

Server-side apply with one field manager makes a re-run a no-op and never touches fields
other managers own (an HPA's replicas, a user's labels).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from kubernetes import dynamic
from kubernetes.dynamic.exceptions import NotFoundError

from aios.connectors.kube import api_client
from aios.operator.reconcile.children import OPERATOR, OWNER_UID


@cache
def dynamic_client() -> dynamic.DynamicClient:
    """One client per process: ``KUBECONFIG`` when set, else in-cluster credentials."""
    return dynamic.DynamicClient(api_client())


def _resource(api_version: str, kind: str) -> Any:
    return dynamic_client().resources.get(api_version=api_version, kind=kind)


def _apply_sync(obj: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
    resource = _resource(obj["apiVersion"], obj["kind"])
    applied = resource.server_side_apply(
        body=dict(obj),
        name=obj["metadata"]["name"],
        namespace=obj["metadata"].get("namespace"),
        field_manager=field_manager,
        force_conflicts=True,
    )
    return dict(applied.to_dict())


async def apply(
    objects: Iterable[Mapping[str, Any]], field_manager: str = OPERATOR
) -> list[dict[str, Any]]:
    """Apply each object in order (e.g. a ConfigMap before the Deployment that mounts it)."""
    results = []
    for obj in objects:
        results.append(await asyncio.to_thread(_apply_sync, obj, field_manager))
    return results


def _prune_sync(
    namespace: str, owner_uid: str, kinds: Iterable[tuple[str, str]], keep: set[tuple[str, str]]
) -> list[str]:
    deleted = []
    for api_version, kind in kinds:
        resource = _resource(api_version, kind)
        listed = resource.get(namespace=namespace, label_selector=f"{OWNER_UID}={owner_uid}")
        for item in listed.items:
            name = item.metadata.name
            if (kind, name) in keep:
                continue
            try:
                resource.delete(
                    name=name, namespace=namespace, body={"propagationPolicy": "Background"}
                )
                deleted.append(f"{kind}/{name}")
            except NotFoundError:
                pass
    return deleted


async def prune(
    namespace: str,
    owner_uid: str,
    kinds: Iterable[tuple[str, str]],
    desired: Iterable[Mapping[str, Any]],
) -> list[str]:
    """Delete the owner's children of ``kinds`` ((apiVersion, kind) pairs) that are not in
    ``desired``; return what was deleted as ``Kind/name``."""
    keep = {(o["kind"], o["metadata"]["name"]) for o in desired}
    return await asyncio.to_thread(_prune_sync, namespace, owner_uid, list(kinds), keep)


async def get(api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""

    def read() -> dict[str, Any] | None:
        try:
            return dict(_resource(api_version, kind).get(name=name, namespace=namespace).to_dict())
        except NotFoundError:
            return None

    return await asyncio.to_thread(read)
