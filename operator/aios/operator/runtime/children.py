"""Server-side apply of the children kinds render, pruning of those no longer rendered,
and the state of those the kinds read back (workloads, Services), held from a watch.

Server-side apply with one field manager makes a re-run a no-op and never touches fields
other managers own (an HPA's replicas, a user's labels).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client, dynamic
from kubernetes.dynamic.exceptions import NotFoundError

from aios.api.base import DEFAULT_SITE
from aios.operator.reconcile.autoscaling import SCALED_OBJECTS_CRD
from aios.operator.reconcile.children import (
    MANAGED_BY,
    OPERATOR,
    OWNER_UID,
    applied_elsewhere,
    sited,
)
from aios.operator.reconcile.model_deployment.kserve import INFERENCE_SERVICES_CRD
from aios.operator.runtime.store import Store

Child = tuple[str, str]
"""(kind, name)"""
Sent = tuple[str, str, str]
"""(kind, namespace, name)"""

REAPPLY_SECONDS = 60.0
"""An object this process applied, rendered the same again within this time, is not sent
again: a namespace's workflow worker is rendered by every intent in it. After that, the
apply is repeated, which restores what someone changed or deleted."""

HELD_KINDS = (
    ("apps/v1", "StatefulSet", "statefulsets"),
    ("apps/v1", "Deployment", "deployments"),
    ("v1", "Service", "services"),
)
"""(apiVersion, kind, plural) of the children the kinds read back on every reconcile: the
workloads whose availability their conditions report (an intent's runners, its
namespace's worker) and the Services a ModelDeployment's versions are probed through at
their cluster IPs. Watched, not read with a GET each time."""
HELD_SELECTOR = f"{MANAGED_BY}={OPERATOR}"
"""The children held: the operator's own (not every Deployment of the cluster)."""
ADD_ON_DEFINITIONS = (INFERENCE_SERVICES_CRD, SCALED_OBJECTS_CRD)
"""The CustomResourceDefinitions of the add-ons a reconcile asks after (``served``):
KServe's, which a ModelDeployment renders an InferenceService for, and KEDA's, which scales
an intent's runners. Each is watched by name, not read with a GET each time."""
DEFINITIONS = ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions")
"""(apiVersion, kind, plural) of the add-ons' definitions."""
HELD_SPEC = ("replicas", "clusterIP")
"""What is read of a held object's spec: the replicas a workload asks for, a Service's
cluster IP."""


def held_state(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What is read of a held object: its identity, owner and generation, the part of its
    spec read (``HELD_SPEC``), and its status; not a workload's pod template, most of its
    size."""
    meta = obj["metadata"]
    kept = ("name", "namespace", "uid", "resourceVersion", "generation", "ownerReferences")
    spec = obj.get("spec") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in kept if k in meta},
        "spec": {k: spec[k] for k in HELD_SPEC if k in spec},
        "status": obj.get("status") or {},
    }


def refused_as_namespace_goes(error: BaseException) -> bool:
    """Whether the API server refused a create because its namespace is being deleted:
    expected of an object's reconcile until the namespace's deletion reaches the object
    itself, not a fault to log with a traceback each retry."""
    body = getattr(error, "body", None)
    if not isinstance(body, str | bytes):
        return False
    try:
        status = json.loads(body)
    except ValueError:
        return False
    if not isinstance(status, dict):
        return False
    causes = (status.get("details") or {}).get("causes") or []
    return any(cause.get("reason") == "NamespaceTerminating" for cause in causes)


WorkloadChanged = Callable[[dict[str, Any]], None]
"""Told a held object (its ``held_state``) whose status changed."""


class Held:
    """A held kind's objects (their ``held_state``), as its watches and this process's
    applies have them (a feed of ``Watching``). Read only once ``synced``: every watch of
    it has listed, so an object missing is an object that does not exist. An object whose
    status the watch brings changed is told to ``on_status`` (not one a list or an apply
    brings: its owner's own tick and reconcile look at those)."""

    def __init__(self, watches: int, on_status: WorkloadChanged | None = None) -> None:
        self.store = Store()
        self._watches = watches
        self._listed: set[str | None] = set()
        self._on_status = on_status

    @property
    def synced(self) -> bool:
        return len(self._listed) >= self._watches

    def observe(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        uid = raw["metadata"]["uid"]
        if event_type == "DELETED":
            self.store.forget(uid)
            return
        before = self.store.get(uid)
        self.store.observe(held_state(raw))
        after = self.store.get(uid)
        if event_type is None or self._on_status is None or after is None or after is before:
            return  # listed or applied, not held (deleted), or older than the copy held
        if before is None or before["status"] != after["status"]:
            self._on_status(after)

    def relisted(self, namespace: str | None, uids: set[str]) -> None:
        for gone in self.store.missing(namespace, uids):
            self.store.forget(gone["metadata"]["uid"])
        self._listed.add(namespace)


class Children:
    """Applies, prunes and reads an operator's children through one client.

    What this process last applied for each owner is remembered, so a prune LISTs the
    owner's children only when something it applied before is no longer rendered, or
    once for an owner another process may have rendered for (``applied_elsewhere``): a
    steady reconcile, and a new object's first, cost no LIST. What it last applied of each
    object is remembered too (``REAPPLY_SECONDS``). Every object applied carries the
    site's label (``sited``)."""

    def __init__(
        self,
        api: client.ApiClient,
        reapply_seconds: float = REAPPLY_SECONDS,
        site: str = DEFAULT_SITE,
    ) -> None:
        self._api = api
        self._reapply_seconds = reapply_seconds
        self._site = site
        self._client: dynamic.DynamicClient | None = None
        self._resources: dict[tuple[str, str], Any] = {}
        self._applied: dict[str, set[Child]] = {}
        self._sent: dict[Sent, tuple[str, float]] = {}
        self._held: dict[tuple[str, str], Held] = {}
        self._definitions: dict[str, Held] = {}

    def hold(self, api_version: str, kind: str, held: Held) -> None:
        """Read the kind's objects from ``held`` (once synced; their ``held_state``
        only) and keep it current with what this process applies."""
        self._held[(api_version, kind)] = held

    def hold_definition(self, definition: str, held: Held) -> None:
        """Answer ``served(definition)`` from ``held`` (once synced): a watch of that one
        CustomResourceDefinition."""
        self._definitions[definition] = held

    def _resource(self, api_version: str, kind: str) -> Any:
        """The kind's API resource, looked up in discovery once (a search of every group
        the server serves: measured at 3 % of the operator's time when asked per apply).
        A kind not served (yet) is looked up again at its next use."""
        found = self._resources.get((api_version, kind))
        if found is None:
            if self._client is None:  # discovery: at first use, not at start-up
                self._client = dynamic.DynamicClient(self._api)
            found = self._client.resources.get(api_version=api_version, kind=kind)
            self._resources[(api_version, kind)] = found
        return found

    async def apply(
        self, objects: Iterable[Mapping[str, Any]], field_manager: str = OPERATOR
    ) -> list[dict[str, Any]]:
        """Apply each object in order (e.g. a ConfigMap before the Deployment that mounts
        it); returns the server's copies of those sent (not of those applied just before)."""
        applied = []
        for rendered in objects:
            obj = sited(rendered, self._site)
            meta = obj["metadata"]
            key = (obj["kind"], meta.get("namespace") or "", meta["name"])
            digest = hashlib.sha256(
                json.dumps([field_manager, obj], sort_keys=True).encode()
            ).hexdigest()
            sent = self._sent.get(key)
            if sent is not None and sent[0] == digest and self._recent(sent[1]):
                continue
            response = await asyncio.to_thread(self._apply, obj, field_manager)
            applied.append(response)
            self._sent[key] = (digest, time.monotonic())
            held = self._held.get((obj["apiVersion"], obj["kind"]))
            if held is not None:  # newer than the watch may have it yet
                held.observe(None, response)
        return applied

    def _recent(self, when: float) -> bool:
        return time.monotonic() - when < self._reapply_seconds

    def _apply(self, obj: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
        applied = self._resource(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=dict(obj),
            name=obj["metadata"]["name"],
            namespace=obj["metadata"].get("namespace"),
            field_manager=field_manager,
            force_conflicts=True,
        )
        return dict(applied.to_dict())

    async def prune(
        self,
        owner: Mapping[str, Any],
        kinds: Iterable[tuple[str, str]],
        desired: Iterable[Mapping[str, Any]],
    ) -> list[str]:
        """Delete the children of ``kinds`` ((apiVersion, kind) pairs) of ``owner`` (as
        stored) that are not in ``desired``; return what was deleted as ``Kind/name``."""
        meta = owner["metadata"]
        keep = {(o["kind"], o["metadata"]["name"]) for o in desired}
        before = self._applied.get(meta["uid"])
        if (before is not None and before <= keep) or (
            before is None and not applied_elsewhere(owner)
        ):
            self._applied[meta["uid"]] = keep
            return []
        deleted = await asyncio.to_thread(
            self._prune, meta["namespace"], meta["uid"], list(kinds), keep
        )
        self._applied[meta["uid"]] = keep
        return deleted

    def forget(self, owner_uid: str) -> None:
        """The owner is gone (its children go with it: they carry its owner reference)."""
        self._applied.pop(owner_uid, None)

    def _prune(
        self, namespace: str, owner_uid: str, kinds: list[tuple[str, str]], keep: set[Child]
    ) -> list[str]:
        deleted = []
        for api_version, kind in kinds:
            resource = self._resource(api_version, kind)
            listed = resource.get(namespace=namespace, label_selector=f"{OWNER_UID}={owner_uid}")
            for item in listed.items:
                name = item.metadata.name
                if (kind, name) in keep:
                    continue
                self._sent.pop((kind, namespace, name), None)
                try:
                    resource.delete(
                        name=name, namespace=namespace, body={"propagationPolicy": "Background"}
                    )
                    deleted.append(f"{kind}/{name}")
                except NotFoundError:
                    pass
        return deleted

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist. A held kind's (``hold``): its
        ``held_state``, from the watch."""
        held = self._held.get((api_version, kind))
        if held is not None and held.synced:
            return held.store.named(namespace, name)

        def read() -> dict[str, Any] | None:
            try:
                found = self._resource(api_version, kind).get(name=name, namespace=namespace)
            except NotFoundError:
                return None
            return held_state(found.to_dict()) if held is not None else dict(found.to_dict())

        return await asyncio.to_thread(read)

    async def served(self, definition: str) -> bool:
        """Whether the cluster serves the CustomResourceDefinition ``definition`` (an
        add-on's kind: KServe's, KEDA's): from its watch (``hold_definition``), or else
        asked (one GET). Either way, installing or removing the add-on counts at the next
        reconcile."""
        held = self._definitions.get(definition)
        if held is not None and held.synced:
            return held.store.named("", definition) is not None
        api_version, kind, _ = DEFINITIONS
        return await self.get(api_version, kind, definition, "") is not None
