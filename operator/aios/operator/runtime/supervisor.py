"""The operator's background tasks, watched: one that fails stops the operator.

The watches' start, the lease's renewal and the heap trim run beside kopf for the
process's life. An asyncio task that raises keeps its error until someone asks, so one
that died unseen left an operator alive, answering its liveness probe and holding its
lease, that reconciled nothing and logged nothing. Here its error is logged and the
operator stops with a failure, so Kubernetes restarts its pod and the restart shows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

LOG = logging.getLogger(__name__)


class Supervisor:
    """Starts the background tasks; the first to fail sets ``stop`` (kopf's stop flag)."""

    def __init__(self, stop: asyncio.Future[None]) -> None:
        self.stop = stop
        self.failed = False
        """Whether a task failed (the process then exits 1)."""
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._ended)
        self.tasks.append(task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (error := task.exception()) is None:
            return  # stopped, or done with its work (the watches started)
        LOG.error("%s failed: the operator stops", task.get_name(), exc_info=error)
        self.failed = True
        if not self.stop.done():
            self.stop.set_result(None)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
