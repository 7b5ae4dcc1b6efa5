"""How a workflow takes a human decision: from an Approval object, read through the API.

A signal (``approval``, sent by the operator when an Approval is admitted) only says which
object to read; what it claims is never trusted. The ``read_approval`` activity fetches the
object from the workflow's namespace, and ``refusal`` (pure, so it runs in the workflow)
checks that it is about this workflow's target. Who may decide was checked at admission,
against the user the API server authenticated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from aios.workflows.approval_activities import ApprovalActivities
    from aios.workflows.approval_io import ApprovalRef, Decided

APPROVALS_FROM_API = "approvals-read-from-the-api"
"""Workflows started before this change took the decision the signal carried."""
SIGNALLED_NAME = "a Temporal signal approves nothing; create an Approval (aiosctl approve)"


@dataclass(frozen=True)
class ApprovalNotice:
    """An Approval exists in the target's namespace under this name (the operator's signal)."""

    approval: str


def refusal(decided: Decided, kind: str, target: str, version: str | None = None) -> str | None:
    """Why ``decided`` does not decide on this workflow's target, or None when it does."""
    if not decided.found:
        return f"no Approval {decided.name} in the target's namespace"
    if (decided.kind, decided.target) != (kind, target):
        return f"Approval {decided.name} is about {decided.kind} {decided.target}, not this one"
    if version is not None and decided.version != version:
        return f"Approval {decided.name} decides on version {decided.version}, not {version}"
    return None


async def read_approval(namespace: str, name: str) -> Decided:
    """From a workflow: the Approval as stored, read by an activity."""
    decided: Decided = await workflow.execute_activity_method(
        ApprovalActivities.read_approval,
        ApprovalRef(namespace, name),
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
    )
    return decided
