"""The one way every kind is reconciled: level-triggered, retried, finalized.

A kind registers a pure-ish ``reconcile`` (spec → apply children → condition updates) and,
when it owns something outside the cluster, a ``finalize``. The wiring here:

* an event handler acts at once on a new ``metadata.generation`` (fast path);
* a timer re-runs the reconcile while the object is not Ready or the last attempt failed
  (retry and progress, e.g. waiting for a Deployment to become Available);
* no kopf change-detecting handlers, so no last-handled-configuration annotation
  doubling every object's size in etcd;
* finalizers are our own (``aios.dev/<kind>``), added before anything external is
  created and removed only after ``finalize`` succeeded;
* finalizers and status are written at once, computed from the object as stored and
  conditional on its resourceVersion (``write_fresh``), never through kopf's patch: it
  lands after the handler returns (a run that re-read the object before it landed would
  write back an older status), and its list edits are diffed against the copy the handler
  got, so a conflict defers them to an event that may never come (a finalizer never
  removed, a delete that hangs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast

import kopf
from kubernetes import client

from aios.api import GROUP, VERSION, Resource
from aios.connectors.kube import api_client
from aios.operator import metrics
from aios.operator.reconcile.acceptance import acceptance, needs_reconcile, needs_retry, next_status
from aios.operator.reconcile.conditions import ConditionUpdate, now_rfc3339
from aios.operator.reconcile.finalizers import (
    finalizer_name,
    is_deleting,
    with_finalizer,
    without_finalizer,
)

RECONCILE_ERROR = "ReconcileError"


@dataclass(frozen=True)
class Context:
    """What a reconcile or finalize function gets besides the parsed object."""

    body: kopf.Body
    logger: kopf.Logger
    memo: kopf.Memo
    status: dict[str, Any] = field(default_factory=dict)
    """Status fields besides the conditions (e.g. topic names) the reconcile reports."""


Reconcile = Callable[[Any, Context], Awaitable[list[ConditionUpdate]]]
Finalize = Callable[[Any, Context], Awaitable[None]]


def register(
    model: type[Resource[Any, Any]],
    reconcile: Reconcile | None = None,
    finalize: Finalize | None = None,
    retry_interval: float = 10.0,
) -> None:
    """Wire ``model``'s reconcile (and finalize) into kopf."""
    plural = model.crd.plural
    finalizer = finalizer_name(model.crd.singular)

    locks: dict[str, asyncio.Lock] = {}

    async def run(
        stale: kopf.Body,
        logger: kopf.Logger,
        memo: kopf.Memo,
        due: Callable[[Mapping[str, Any]], bool],
    ) -> None:
        """One reconcile of an object at a time (the event handler and the timer may both
        fire), each from the stored object: a run on an older copy would write old status."""
        async with locks.setdefault(stale.metadata["uid"], asyncio.Lock()):
            raw = await _stored(plural, stale.metadata["namespace"], stale.metadata["name"])
            if raw is None or raw["metadata"]["uid"] != stale.metadata["uid"] or not due(raw):
                return
            body = kopf.Body(cast(kopf.RawBody, raw))
            written = await reconcile_once(body, logger, memo)
            if written is not None:
                fields, updates, stored = written
                status = reconciled_status(raw["metadata"].get("generation"), fields, updates)
                await write_status(plural, stale, status, stored=stored)

    async def reconcile_once(
        body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo
    ) -> tuple[dict[str, Any], list[ConditionUpdate], Mapping[str, Any] | None] | None:
        """Finalize, or reconcile and return the status fields, the condition updates and
        the object as last written (None: unknown, read it again)."""
        context = Context(body, logger, memo)
        finalizers = list(body.metadata.get("finalizers") or [])
        if is_deleting(body.metadata):
            if finalize is not None and finalizer in finalizers:
                obj = model.model_validate({"metadata": {}, "spec": body.get("spec") or {}})
                await finalize(obj, context)
                await write_finalizer(plural, body, finalizer, add=False)
            return None
        stored: Mapping[str, Any] | None = body
        accepted = acceptance(model, body)
        updates = [accepted]
        if accepted.status == "True" and reconcile is not None:
            if finalize is not None and with_finalizer(finalizers, finalizer) is not None:
                stored = await write_finalizer(plural, body, finalizer, add=True)
            obj = model.model_validate(dict(body))
            started = time.monotonic()
            try:
                updates += await reconcile(obj, context)
            except kopf.PermanentError as error:
                updates.append(ConditionUpdate("Ready", "False", "InvalidSpec", str(error)))
            except Exception as error:  # retried by the timer; the reason says so
                logger.exception("reconcile failed")
                updates.append(
                    ConditionUpdate(
                        "Ready", "False", RECONCILE_ERROR, f"{type(error).__name__}: {error}"
                    )
                )
            metrics.RECONCILE.labels(
                model.crd.kind, metrics.outcome(updates, RECONCILE_ERROR)
            ).observe(time.monotonic() - started)
        return context.status, updates, stored

    @kopf.on.event(GROUP, VERSION, plural, id=f"reconcile-{model.crd.singular}")
    async def on_event(
        type: str | None,
        body: kopf.Body,
        logger: kopf.Logger,
        memo: kopf.Memo,
        **_: Any,
    ) -> None:
        if type == "DELETED":
            locks.pop(body.metadata["uid"], None)
            return

        def due(raw: Mapping[str, Any]) -> bool:
            metadata = raw.get("metadata") or {}
            finalizing = is_deleting(metadata) and finalizer in (metadata.get("finalizers") or [])
            return needs_reconcile(raw) or finalizing

        if due(body):
            await run(body, logger, memo, due)

    @kopf.on.timer(
        GROUP,
        VERSION,
        plural,
        id=f"retry-{model.crd.singular}",
        interval=retry_interval,
        when=lambda body, **_: needs_retry(body),
    )
    async def on_timer(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
        await run(body, logger, memo, needs_retry)


def reconciled_status(
    generation: int | None, fields: Mapping[str, Any], updates: list[ConditionUpdate]
) -> Callable[[Mapping[str, Any]], dict[str, Any] | None]:
    """The status a reconcile of ``generation`` writes over the object as stored; nothing
    once a newer spec is stored (its own reconcile reports)."""

    def status(current: Mapping[str, Any]) -> dict[str, Any] | None:
        if current["metadata"].get("generation") != generation:
            return None
        return {**fields, **next_status(current, updates, now_rfc3339())}

    return status


async def write_status(
    plural: str,
    obj: kopf.Body,
    status: Callable[[Mapping[str, Any]], dict[str, Any] | None],
    stored: Mapping[str, Any] | None = None,
) -> None:
    """Merge ``status(stored object)`` into the status now (``write_fresh``); ``status``
    returns None or nothing to write nothing."""

    def body(current: Mapping[str, Any]) -> dict[str, Any] | None:
        fields = status(current)
        return {"status": fields} if fields else None

    await write_fresh(plural, obj, body, subresource="status", stored=stored)


async def write_finalizer(
    plural: str, obj: kopf.Body, finalizer: str, add: bool
) -> dict[str, Any] | None:
    """Add or remove one finalizer now (``write_fresh``), keeping any other controller's;
    returns the object as written."""

    def body(current: Mapping[str, Any]) -> dict[str, Any] | None:
        existing = current["metadata"].get("finalizers") or []
        changed = (
            with_finalizer(existing, finalizer) if add else without_finalizer(existing, finalizer)
        )
        return None if changed is None else {"metadata": {"finalizers": changed}}

    return await write_fresh(plural, obj, body, stored=obj)


async def write_fresh(
    plural: str,
    obj: kopf.Body,
    patch: Callable[[Mapping[str, Any]], dict[str, Any] | None],
    subresource: str | None = None,
    stored: Mapping[str, Any] | None = None,
    attempts: int = 5,
) -> dict[str, Any] | None:
    """Merge-patch ``patch(stored object)`` now, conditional on the object not having
    changed since it was read (its resourceVersion); on a conflict, read and compute
    again. ``stored``: a copy just read, tried first (a GET saved). Returns the object as
    written, or None when nothing was."""
    namespace, name, uid = obj.metadata["namespace"], obj.metadata["name"], obj.metadata["uid"]
    for attempt in range(attempts):
        current = stored if attempt == 0 and stored else await _stored(plural, namespace, name)
        if current is None or current["metadata"]["uid"] != uid:
            return None
        body = patch(current)
        if not body:
            return None
        version = {"resourceVersion": current["metadata"]["resourceVersion"]}
        body = {**body, "metadata": {**body.get("metadata", {}), **version}}
        try:
            return await _patch(plural, namespace, name, body, subresource)
        except client.ApiException as error:
            if error.status != 409:
                raise
    raise kopf.TemporaryError(f"{namespace}/{name} kept changing", delay=1)


async def patch_status(
    plural: str,
    namespace: str,
    name: str,
    status: Mapping[str, Any],
    resource_version: str | None = None,
) -> None:
    """A merge patch of the status, written now (not at the end of the handler); with
    ``resource_version`` it fails (409) if the object changed meanwhile."""
    body: dict[str, Any] = {"status": dict(status)}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    await _patch(plural, namespace, name, body, "status")


async def _patch(
    plural: str, namespace: str, name: str, body: Mapping[str, Any], subresource: str | None
) -> dict[str, Any]:
    objects = client.CustomObjectsApi(_api())
    method = (
        objects.patch_namespaced_custom_object_status
        if subresource == "status"
        else objects.patch_namespaced_custom_object
    )
    written: Any = await asyncio.to_thread(
        method, GROUP, VERSION, namespace, plural, name, dict(body)
    )
    return dict(written)


async def _stored(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as stored now, or None when it is gone."""
    api = client.CustomObjectsApi(_api())

    def read() -> dict[str, Any] | None:
        try:
            found: Any = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(found)

    return await asyncio.to_thread(read)


_api = cache(api_client)
