"""What crosses the action workflow's boundary: its activities' inputs and OPA's verdict,
the name of the activity tests look for, and the search attributes the workflow sets and
the activities query. (The workflow's own input, ``ActionRequest``, its ``state`` query
and its result are in ``aios.api.events``: clients read them.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field
from temporalio.common import SearchAttributeKey

from aios.api.base import ApiModel
from aios.api.events import ActionRequest

INTENT = SearchAttributeKey.for_keyword("AiosIntent")
ACTION = SearchAttributeKey.for_keyword("AiosAction")
TARGET = SearchAttributeKey.for_keyword("AiosTarget")
OUTCOME = SearchAttributeKey.for_keyword("AiosOutcome")
EXECUTED_AT = SearchAttributeKey.for_datetime("AiosExecutedAt")
APPROVER = SearchAttributeKey.for_keyword("AiosApprover")
"""Who approved or rejected the action: kept with its visibility record, so a reader needs
no live worker to answer a query for it."""
SEARCH_ATTRIBUTES = (INTENT, ACTION, TARGET, OUTCOME, EXECUTED_AT, APPROVER)

AUTHORIZE = "aios.action.authorize"
"""The activity asking OPA."""
REQUESTED = "requested"
"""The step every action records first, before policy's answer (the next step)."""
MQTT_CONNECT_SECONDS = 120.0
"""How long an MQTT command waits for its broker (inside its one attempt) before the action
fails unsent."""


@dataclass
class ActionStep:
    """One recorded step of an action (audit + lifecycle)."""

    request: ActionRequest
    step: str
    result: dict[str, Any]
    approver: str | None = None
    policy_decision_id: str | None = None
    policy_input: dict[str, Any] | None = None
    """The document OPA decided on (``policy_decision_id``): what a dry-run Policy is asked
    about afterwards, to tell which past actions it would have denied."""


@dataclass
class Authorize:
    request: ActionRequest
    approver: str | None = None


class Verdict(ApiModel):
    """OPA's answer on an action (``aios.connectors.opa.PolicyDecision``, as the workflow
    keeps it)."""

    allowed: bool
    decision_id: str
    reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    input: dict[str, Any] = Field(default_factory=dict)
    """The document OPA was asked about (recorded with the step it decided)."""
