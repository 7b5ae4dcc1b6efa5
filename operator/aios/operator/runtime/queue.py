"""A work queue of object keys: each object is handled by one worker at a time, and what
arrives for it meanwhile is coalesced into one more run (the client-go workqueue contract).

It replaces a lock per object: an event and a periodic tick for the same object can never
run side by side, and a burst of events costs one run, not one per event. Objects queued
for an event go before those queued by the tick only: a city's periodic refreshes never
hold up a new object.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


class Reason(enum.Flag):
    """Why an object is queued; the reasons of coalesced arrivals are merged."""

    EVENT = enum.auto()
    """The object changed (or was listed): act if its state asks for it."""
    TICK = enum.auto()
    """The kind's periodic tick: retry what has not converged, refresh runtime status."""
    REPORTED = enum.auto()
    """What the object's runtime status follows has reported (an agent's heartbeat):
    refresh it now. Waits behind events, as ticks do."""
    CHILD = enum.auto()
    """A workload it reports on changed its status (its runners became available): reconcile it
    now if it has not converged, rather than at its next retry. Waits behind events."""


LOG = logging.getLogger(__name__)

Work = Callable[[str, Reason], Awaitable[None]]


DEFAULT_WORKERS = 32
"""Concurrent reconciles per kind (the chart's ``operator.workers``): most of a reconcile is
waiting on the API server, Kafka or OPA, so many overlap on one core."""


@dataclass
class WorkQueue:
    """``work(key, reasons)`` for queued keys, on ``workers`` concurrent tasks."""

    work: Work
    workers: int = DEFAULT_WORKERS
    _pending: dict[str, Reason] = field(default_factory=dict)
    _running: set[str] = field(default_factory=set)
    _events: deque[str] = field(default_factory=deque)
    _ticks: deque[str] = field(default_factory=deque)
    _entries: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    """One permit per entry in the two lines (an entry whose key was taken already is
    skipped)."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, key: str, reason: Reason) -> None:
        """Queue ``key``; if it is queued or running already, it runs (once more) later."""
        before = self._pending.get(key)
        self._pending[key] = (before or Reason(0)) | reason
        if key not in self._running:
            if before is None:
                self._line(reason).append(key)
                self._entries.release()
            elif Reason.EVENT in reason and Reason.EVENT not in before:
                self._events.append(key)  # overtakes its place among the ticks
                self._entries.release()
        self._idle.clear()

    def _line(self, reasons: Reason) -> deque[str]:
        return self._events if Reason.EVENT in reasons else self._ticks

    def _next(self) -> str | None:
        """The first key waiting for an event, else for the tick; None for a stale entry."""
        key = self._events.popleft() if self._events else self._ticks.popleft()
        return key if key in self._pending and key not in self._running else None

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def __len__(self) -> int:
        """Keys waiting or running (asked after every run: counted over the running few,
        not over a union with the thousands a tick queues)."""
        return len(self._pending) + sum(1 for key in self._running if key not in self._pending)

    async def drained(self) -> None:
        """Until nothing is queued or running."""
        while len(self):
            self._idle.clear()
            await self._idle.wait()

    async def _worker(self) -> None:
        while True:
            await self._entries.acquire()
            key = self._next()
            if key is None:
                continue
            reasons = self._pending.pop(key)
            self._running.add(key)
            try:
                await self.work(key, reasons)
            except Exception:  # the work reports its own failures; a worker never dies
                LOG.exception("work on %s failed", key)
            finally:
                self._running.discard(key)
                if key in self._pending:  # arrived while it ran: once more, after the others
                    self._line(self._pending[key]).append(key)
                    self._entries.release()
                elif not len(self):
                    self._idle.set()
