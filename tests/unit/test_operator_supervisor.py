"""The operator's background tasks: one that fails stops the operator, with its error
logged; one that ends its work, or is cancelled at the end, does not."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aios.operator.runtime.supervisor import Supervisor


async def test_a_background_task_that_fails_stops_the_operator_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    background = Supervisor(stop)

    async def starts_the_watches() -> None:
        return None

    async def renews_the_lease() -> None:
        raise ValueError("not enough values to unpack (expected 2, got 1)")

    background.start("the watches' start", starts_the_watches())
    await asyncio.wait(background.tasks)
    assert not stop.done() and not background.failed, "a task done with its work is no failure"

    with caplog.at_level(logging.ERROR):
        background.start("the lease's renewal", renews_the_lease())
        await asyncio.wait_for(asyncio.shield(stop), 30)
    assert background.failed
    assert "the lease's renewal failed: the operator stops" in caplog.text
    assert "ValueError: not enough values to unpack" in caplog.text, "with its traceback"


async def test_tasks_cancelled_as_the_operator_stops_are_no_failure() -> None:
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    background = Supervisor(stop)
    background.start("the heap trim", asyncio.Event().wait())
    background.cancel()
    await asyncio.wait(background.tasks)
    assert background.tasks[0].cancelled()
    assert not stop.done() and not background.failed
