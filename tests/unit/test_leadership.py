"""A replica that cannot reach the API server keeps trying for the Lease: whatever way the
client fails (here a real connection refused, which urllib3 turns into MaxRetryError after
its retries), the attempt counts as failed and the loop goes on."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from kubernetes import client

from aios.operator.runtime.leadership import Leadership, LeaseTerms
from aios.stack.process import free_port


async def test_an_unreachable_api_server_is_a_failed_attempt_not_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    api = client.CoordinationV1Api(client.ApiClient(configuration))
    terms = LeaseTerms(duration=1.0, renew_deadline=0.5, retry_period=0.01)
    leadership = Leadership(api, "aios-system", "aios", "replica-a", terms)

    def warned() -> int:
        return sum("lease aios-system/aios" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="aios.operator.runtime.leadership"):
        task = asyncio.create_task(leadership.run())
        deadline = time.monotonic() + 60
        while warned() < 2 and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        try:
            assert not task.done(), task.exception() if task.done() else None
            assert warned() >= 2, "two failed attempts, each logged"
            assert not leadership.held() and not leadership.lost.is_set()
        finally:
            task.cancel()
