"""One kind's controller: the store its watch feeds, the queue its objects wait in, the
writer of their status and finalizers, and the periodic tick that retries and refreshes.

What to do with an object is decided from its stored state when a worker takes it (level
triggered), and only by the replica that holds the lead:

* deleting, with the kind's finalizer: ``finalize``, then the finalizer goes;
* deleted, for a kind that cleans up afterwards instead (no finalizer): ``deleted``;
* a generation not yet observed, or work the kind says is pending (``pending``, e.g. a
  rollout step to serve): ``reconcile``, its status written by the one writer;
* on the tick, an object whose reconcile has not converged (``retry_when``: by default,
  not Ready) is reconciled again at most every ``retry_interval``, and any other gets its
  runtime status ``refresh``-ed at most every ``refresh_interval`` (heartbeats, lag,
  audit findings): a write only when something changed;
* when what its status follows ``report``-s (a heartbeat arrived), the object is
  refreshed at once: a kind fed by reports can keep a long ``refresh_interval``;
* when a workload it reports on changes its status (``child_changed``), an object that
  has not converged is reconciled at once, not at its next retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from aios.api import Resource
from aios.operator import metrics
from aios.operator.reconcile.acceptance import acceptance, needs_reconcile, needs_retry, next_status
from aios.operator.reconcile.conditions import ConditionUpdate, now_rfc3339
from aios.operator.reconcile.finalizers import (
    finalizer_name,
    is_deleting,
    with_finalizer,
    without_finalizer,
)
from aios.operator.runtime.children import refused_as_namespace_goes
from aios.operator.runtime.leadership import Leadership
from aios.operator.runtime.queue import Reason, WorkQueue
from aios.operator.runtime.store import Store
from aios.operator.runtime.writer import Change, Writer
from aios.operator.settings import OperatorSettings

RECONCILE_ERROR = "ReconcileError"
TRACER = trace.get_tracer("aios.operator")
LOG = logging.getLogger("aios.operator")


@dataclass(frozen=True)
class Context:
    """What a reconcile, finalize or refresh gets besides the parsed object."""

    body: kopf.Body
    logger: kopf.Logger
    memo: kopf.Memo
    writer: Writer
    """The kind's one writer: a reconcile that must record something before it goes on
    (a rollout before its workflow starts) writes through it."""
    status: dict[str, Any] = field(default_factory=dict)
    """Status fields besides the conditions (e.g. topic names) the reconcile reports."""


Reconcile = Callable[[Any, Context], Awaitable[list[ConditionUpdate]]]
Finalize = Callable[[Any, Context], Awaitable[None]]
Deleted = Callable[[Context], Awaitable[None]]
Refresh = Callable[[Context], Awaitable[Change | None]]
"""The status change between reconciles (runtime facts with no new generation)."""
Pending = Callable[[Mapping[str, Any]], bool]


class ObjectLogger(logging.LoggerAdapter[logging.Logger]):
    """Log lines prefixed with the object they are about, as kopf's are."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['object']}] {msg}" if self.extra else msg, kwargs


def elapsed(since: float | None, now: float) -> float:
    """Seconds since ``since``; infinite for never (the monotonic clock may start near 0)."""
    return float("inf") if since is None else now - since


def nothing_pending(_: Mapping[str, Any]) -> bool:
    return False


def after_an_error(raw: Mapping[str, Any]) -> bool:
    """``retry_when`` of a kind whose reconcile gives a final answer (done, or refused for
    good: an Approval's target ended, a reversal already started): retry only an error."""
    conditions = (raw.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    return ready is None or ready.get("reason") == RECONCILE_ERROR


@dataclass(frozen=True)
class KindSpec:
    """How one kind is reconciled."""

    model: type[Resource[Any, Any]]
    reconcile: Reconcile | None = None
    finalize: Finalize | None = None
    """Before the object goes, under its finalizer: for what must not outlive it."""
    refresh: Refresh | None = None
    pending: Pending = nothing_pending
    retry_when: Pending = needs_retry
    """Whether reconciling again may help: by default while not Ready. A kind whose Ready
    waits on something its refresh follows (a gateway's agent) says when instead."""
    retry_interval: float = 10.0
    refresh_interval: Callable[[OperatorSettings], float] = lambda _: 10.0
    """From the site's settings: a Policy's audit interval is the operator's to choose."""
    deleted: Deleted | None = None
    """After the object has gone, with no finalizer holding its deletion (two writes less
    per object): for what may outlive it a moment (a gateway's config record). Run from the
    queue, after any work in flight on the object, and retried by the tick; what goes while
    no replica acts is left to the kind's own start-up sweep."""

    @property
    def plural(self) -> str:
        return self.model.crd.plural

    @property
    def finalizer(self) -> str:
        return finalizer_name(self.model.crd.singular)

    def due(self, raw: Mapping[str, Any]) -> bool:
        """Whether the object's state asks for a reconcile (or a finalize) now."""
        metadata = raw.get("metadata") or {}
        if is_deleting(metadata):
            return self.finalizer in (metadata.get("finalizers") or [])
        return needs_reconcile(raw) or self.pending(raw)


def reconciled_status(
    generation: int | None, fields: Mapping[str, Any], updates: list[ConditionUpdate]
) -> Change:
    """The status a reconcile of ``generation`` writes over the object as stored; nothing
    once a newer spec is stored (its own reconcile reports)."""

    def change(current: Mapping[str, Any]) -> dict[str, Any] | None:
        if current["metadata"].get("generation") != generation:
            return None
        return {"status": {**fields, **next_status(current, updates, now_rfc3339())}}

    return change


def status_change(status: Callable[[Mapping[str, Any]], dict[str, Any] | None]) -> Change:
    """A change of status fields only, as a patch of the status subresource."""

    def change(current: Mapping[str, Any]) -> dict[str, Any] | None:
        fields = status(current)
        return {"status": fields} if fields else None

    return change


def finalizer_change(finalizer: str, add: bool) -> Change:
    """Add or remove one finalizer, keeping any other controller's."""

    def change(current: Mapping[str, Any]) -> dict[str, Any] | None:
        existing = current["metadata"].get("finalizers") or []
        changed = (
            with_finalizer(existing, finalizer) if add else without_finalizer(existing, finalizer)
        )
        return None if changed is None else {"metadata": {"finalizers": changed}}

    return change


class Controller:
    """Runs one kind (see the module docstring)."""

    def __init__(
        self,
        spec: KindSpec,
        api: client.ApiClient,
        memo: kopf.Memo,
        settings: OperatorSettings,
        leadership: Leadership | None = None,
        workers: int = 8,
        on_gone: Callable[[str], None] | None = None,
    ) -> None:
        """``on_gone(uid)``: an object was deleted (what others remember of it can go)."""
        self.spec = spec
        self.on_gone = on_gone
        self.refresh_interval = spec.refresh_interval(settings)
        self.memo = memo
        self.leadership = leadership
        self.store = Store()
        self.writer = Writer(api, spec.plural, self.store)
        self.queue = WorkQueue(self._work, workers)
        self._retried: dict[str, float] = {}
        self._refreshed: dict[str, float] = {}
        self._gone: dict[str, dict[str, Any]] = {}
        """Deleted objects whose ``deleted`` has not run yet, by uid."""
        self._ticker: asyncio.Task[None] | None = None
        kind = spec.model.crd.kind
        metrics.QUEUE_DEPTH.labels(kind).set_function(lambda: len(self.queue))
        metrics.OBJECTS.labels(kind).set_function(lambda: len(self.store))

    def acting(self) -> bool:
        return self.leadership is None or self.leadership.held()

    # -- input: the watch and the tick -----------------------------------------------------

    def observe(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        """A watch event (``None``: listed at start). Queued only when its state asks."""
        uid = raw["metadata"]["uid"]
        if event_type == "DELETED":
            self.store.forget(uid)
            self._retried.pop(uid, None)
            self._refreshed.pop(uid, None)
            if self.on_gone is not None:
                self.on_gone(uid)
            if self.spec.deleted is not None and self.acting():
                self._gone[uid] = dict(raw)
                self.queue.add(uid, Reason.EVENT)
            return
        self.store.observe(raw)
        if self.acting() and self.spec.due(raw):
            self.queue.add(uid, Reason.EVENT)

    def relisted(self, namespace: str | None, uids: set[str]) -> None:
        """The watch listed the namespace again: what it no longer has was deleted."""
        for raw in self.store.missing(namespace, uids):
            self.observe("DELETED", raw)

    def report(self, namespace: str, name: str) -> None:
        """Something the object's runtime status follows reported (an agent's heartbeat):
        refresh its status now rather than at its next interval."""
        uid = self.store.uid_of(namespace, name)
        if uid is not None and self.acting():
            self.queue.add(uid, Reason.REPORTED)

    def child_changed(self, uid: str) -> None:
        """A workload the object reports on (its own, its namespace's worker) changed its
        status."""
        if self.acting() and self.store.get(uid) is not None:
            self.queue.add(uid, Reason.CHILD)

    def tick(self) -> None:
        """Queue each object with work due: a reconcile, a retry or a refresh (the worker
        decides again from the object as stored when it takes it)."""
        if self.acting():
            now = time.monotonic()
            for uid in self.store.uids():
                raw = self.store.get(uid)
                if raw is not None and self._tick_due(uid, raw, now):
                    self.queue.add(uid, Reason.TICK)
            for uid in list(self._gone):
                self.queue.add(uid, Reason.TICK)
            metrics.TICKS.labels(self.spec.model.crd.kind).inc()

    def start(self) -> None:
        self.queue.start()
        self._ticker = asyncio.create_task(self._tick_forever())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.queue.stop()

    async def _tick_forever(self) -> None:
        period = min(self.spec.retry_interval, self.refresh_interval)
        while True:
            await asyncio.sleep(period)
            self.tick()

    # -- the work on one object --------------------------------------------------------------

    async def _work(self, uid: str, reasons: Reason) -> None:
        if not self.acting():
            return
        raw = self.store.get(uid)
        if raw is None:
            if uid in self._gone:
                await self._deleted(uid, self._gone[uid])
            return
        now = time.monotonic()
        if (
            self.spec.due(raw)
            or (Reason.TICK in reasons and self._retry_due(uid, raw, now))
            or (Reason.CHILD in reasons and self.spec.retry_when(raw))
        ):
            await self._reconcile(uid, raw)
        elif (Reason.REPORTED in reasons and self._refreshable(raw)) or (
            Reason.TICK in reasons and self._refresh_due(uid, raw, now)
        ):
            self._refreshed[uid] = now
            await self._refresh(uid, raw)

    def _tick_due(self, uid: str, raw: Mapping[str, Any], now: float) -> bool:
        return (
            self.spec.due(raw) or self._retry_due(uid, raw, now) or self._refresh_due(uid, raw, now)
        )

    def _retry_due(self, uid: str, raw: Mapping[str, Any], now: float) -> bool:
        if not self.spec.retry_when(raw):
            return False
        return elapsed(self._retried.get(uid), now) >= self.spec.retry_interval

    def _refreshable(self, raw: Mapping[str, Any]) -> bool:
        # while a retry is due, it reports everything a refresh would
        return self.spec.refresh is not None and not self.spec.retry_when(raw)

    def _refresh_due(self, uid: str, raw: Mapping[str, Any], now: float) -> bool:
        return (
            self._refreshable(raw)
            and elapsed(self._refreshed.get(uid), now) >= self.refresh_interval
        )

    def _context(self, raw: Mapping[str, Any]) -> Context:
        meta = raw["metadata"]
        logger = ObjectLogger(LOG, {"object": f"{meta['namespace']}/{meta['name']}"})
        return Context(kopf.Body(dict(raw)), logger, self.memo, self.writer)  # type: ignore[arg-type]

    async def _reconcile(self, uid: str, raw: Mapping[str, Any]) -> None:
        self._retried[uid] = time.monotonic()
        context = self._context(raw)
        spec = self.spec
        finalizers = list(raw["metadata"].get("finalizers") or [])
        if is_deleting(raw["metadata"]):
            if spec.finalizer not in finalizers:
                return
            if spec.finalize is not None:
                obj = spec.model.model_validate({"metadata": {}, "spec": raw.get("spec") or {}})
                try:
                    await spec.finalize(obj, context)
                except Exception:  # retried by the tick
                    context.logger.exception("finalize failed")
                    return
            # (a kind without ``finalize`` drops the finalizer an earlier version added)
            await self.writer.patch(uid, finalizer_change(spec.finalizer, add=False))
            return
        accepted = acceptance(spec.model, raw)
        updates = [accepted]
        if accepted.status == "True" and spec.reconcile is not None:
            updates += await self._run_reconcile(uid, raw, finalizers, context)
        status = reconciled_status(raw["metadata"].get("generation"), context.status, updates)
        await self.writer.patch(uid, status, subresource="status")

    async def _run_reconcile(
        self, uid: str, raw: Mapping[str, Any], finalizers: list[str], context: Context
    ) -> list[ConditionUpdate]:
        spec = self.spec
        assert spec.reconcile is not None
        started = time.monotonic()
        updates: list[ConditionUpdate] = []
        kind, meta = spec.model.crd.kind, raw["metadata"]
        with TRACER.start_as_current_span(
            f"reconcile {kind}",
            attributes={
                "k8s.namespace.name": meta["namespace"],
                "aios.resource.kind": kind,
                "aios.resource.name": meta["name"],
                "aios.resource.generation": meta.get("generation") or 0,
            },
        ) as span:
            try:
                if spec.finalize is not None and with_finalizer(finalizers, spec.finalizer):
                    # before anything external exists: a delete from now on waits for finalize
                    await self.writer.patch(uid, finalizer_change(spec.finalizer, add=True))
                updates = await spec.reconcile(spec.model.model_validate(dict(raw)), context)
            except kopf.PermanentError as error:
                updates.append(ConditionUpdate("Ready", "False", "InvalidSpec", str(error)))
            except Exception as error:  # retried by the tick; the reason says so
                if refused_as_namespace_goes(error):
                    context.logger.info("not reconciled: the namespace is being deleted")
                else:
                    context.logger.exception("reconcile failed")
                message = f"{type(error).__name__}: {error}"
                updates.append(ConditionUpdate("Ready", "False", RECONCILE_ERROR, message))
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, message))
            outcome = metrics.outcome(updates, RECONCILE_ERROR)
            span.set_attribute("aios.outcome", outcome)
        metrics.RECONCILE.labels(kind, outcome).observe(time.monotonic() - started)
        return updates

    async def _deleted(self, uid: str, raw: Mapping[str, Any]) -> None:
        assert self.spec.deleted is not None
        context = self._context(raw)
        try:
            await self.spec.deleted(context)
        except Exception:  # tried again at the next tick
            context.logger.exception("cleaning up after the deletion failed")
            return
        del self._gone[uid]

    async def _refresh(self, uid: str, raw: Mapping[str, Any]) -> None:
        assert self.spec.refresh is not None
        context = self._context(raw)
        try:
            change = await self.spec.refresh(context)
        except Exception:  # tried again at the next tick
            context.logger.exception("refreshing the status failed")
            return
        if change is not None:
            await self.writer.patch(uid, change, subresource="status")
