"""What the console reads, with its own identity: the action workflows from Temporal (a
workflow's input never changes and an ended one's state neither, so both are kept once
read; an ended one whose worker did not answer is asked again a while later) and aios's
objects from the API server. An ended action's approver is a search attribute; only one
started before it was (``APPROVER_RECORDED``) is queried for it."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubernetes import client
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError

from aios.api import GROUP, VERSION
from aios.api.events import ActionRequest, ActionState
from aios.connectors.temporal import started_input
from aios.workflows.action_io import APPROVER, OUTCOME

ACTIONS = "WorkflowType = 'ActionWorkflow'"
KEPT = 5_000
QUERY_TIMEOUT = timedelta(seconds=5)
ASK_AGAIN = 30.0
"""Seconds before an ended action whose worker did not answer is asked again: a worker
busy replaying may answer next time, and one gone for good costs a page at most one
query timeout that often."""


@dataclass(frozen=True)
class ActionRun:
    """One action workflow as the console shows it."""

    request: ActionRequest
    state: ActionState | None  # None: not asked (ended, approver recorded) or no answer
    outcome: str | None  # None while it runs
    started: datetime
    approver: str  # "" for none (yet)


class Bounded(OrderedDict[str, Any]):
    """The newest ``KEPT`` entries."""

    def keep(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > KEPT:
            self.popitem(last=False)


@dataclass(frozen=True)
class Answer:
    """An ended workflow's state as its worker answered (None: it did not), and when."""

    state: ActionState | None
    at: float  # time.monotonic()


def asked_for_approver(request: ActionRequest, recorded: str | None) -> bool:
    """Whether an ended action's approver is a question for its worker: it needed approval
    and none is recorded (it started before ``APPROVER_RECORDED``, or no one answered)."""
    return recorded is None and request.action.approval.required


def approver_of(recorded: str | None, state: ActionState | None) -> str:
    """The approver the search attribute records, else the one the worker answered."""
    review = state.review if state else None
    return recorded or (review.approver if review else "")


def ask_again(kept: Answer | None, now: float) -> bool:
    """Whether to query an ended workflow: never asked, or unanswered ``ASK_AGAIN`` ago."""
    return kept is None or (kept.state is None and now - kept.at >= ASK_AGAIN)


class Actions:
    def __init__(self, temporal: Client) -> None:
        self.temporal = temporal
        self._inputs = Bounded()
        self._ended = Bounded()  # ended workflows' Answers

    async def pending(self) -> list[ActionRun]:
        """Running actions that wait for a human, oldest first."""
        running = [
            e
            async for e in self.temporal.list_workflows(
                f"{ACTIONS} AND ExecutionStatus = 'Running'", limit=500
            )
        ]
        runs = await asyncio.gather(*(self._run(e) for e in running))
        waiting = [r for r in runs if r and r.state and r.state.phase == "awaiting-approval"]
        return sorted(waiting, key=lambda r: r.started)

    async def recent(self, narrowed: str = "", limit: int = 100) -> list[ActionRun]:
        """The latest actions (``narrowed``: a visibility query they also match), newest
        first."""
        query = f"{ACTIONS} AND {narrowed}" if narrowed else ACTIONS
        listed = [e async for e in self.temporal.list_workflows(query, limit=limit)]
        runs = await asyncio.gather(*(self._run(e) for e in listed))
        return sorted((r for r in runs if r), key=lambda r: r.started, reverse=True)

    async def _run(self, execution: WorkflowExecution) -> ActionRun | None:
        request = self._inputs.get(execution.id)
        if request is None:
            request = await started_input(self.temporal, execution.id, ActionRequest)
            if request is None:
                return None
            self._inputs.keep(execution.id, request)
        ended = execution.status != WorkflowExecutionStatus.RUNNING
        recorded = execution.typed_search_attributes.get(APPROVER)
        state = None
        if not ended:
            state = await self._state(execution.id)
        elif asked_for_approver(request, recorded):
            kept: Answer | None = self._ended.get(execution.id)
            if ask_again(kept, time.monotonic()):
                kept = Answer(await self._state(execution.id), time.monotonic())
                self._ended.keep(execution.id, kept)
            assert kept is not None  # ask_again is true whenever nothing is kept
            state = kept.state
        outcome = execution.typed_search_attributes.get(OUTCOME)
        if ended and outcome is None and execution.status is not None:
            outcome = execution.status.name.lower()  # terminated, timed out…
        approver = approver_of(recorded, state)
        return ActionRun(request, state, outcome, execution.start_time, approver)

    async def _state(self, workflow_id: str) -> ActionState | None:
        try:
            state: ActionState = await self.temporal.get_workflow_handle(workflow_id).query(
                "state", result_type=ActionState, rpc_timeout=QUERY_TIMEOUT
            )
        except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
            return None  # no worker answers (its namespace is gone), or it could not
        return state


def listed(api_client: client.ApiClient, plural: str, namespaces: tuple[str, ...]) -> list[Any]:
    """Every object of one aios kind, in ``namespaces`` (empty: every namespace)."""
    objects = client.CustomObjectsApi(api_client)
    if not namespaces:
        found: Any = objects.list_cluster_custom_object(GROUP, VERSION, plural)
        return list(found.get("items", []))
    items: list[Any] = []
    for namespace in namespaces:
        page: Any = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        items += page.get("items", [])
    return items
