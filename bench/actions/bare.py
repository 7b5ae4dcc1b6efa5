"""The peer of ``bench/actions``: a workflow of one activity that posts the webhook. In a
module of its own, since Temporal's sandbox imports a workflow's module afresh."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

POST = "bench.post"


@workflow.defn(name="BareAction")
class BareAction:
    @workflow.run
    async def run(self, url_and_key: list[str]) -> None:
        await workflow.execute_activity(
            POST, url_and_key, start_to_close_timeout=timedelta(seconds=10)
        )
