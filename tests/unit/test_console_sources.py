"""Where the timeline's approver comes from: the action's search attribute, else its
worker's answer to a query, and when an ended action's worker is asked (again)."""

from __future__ import annotations

from test_console_pages import request

from aios.api.events import ActionState, Review
from aios.console.sources import ASK_AGAIN, Answer, approver_of, ask_again, asked_for_approver

DONE = ActionState(phase="executed", allowed_approvers=[], refused=[])
APPROVED_BY_SAM = DONE.model_copy(update={"review": Review(approver="sam", approved=True)})


def test_an_ended_action_with_its_approver_recorded_needs_no_worker() -> None:
    assert not asked_for_approver(request(), recorded="sam")
    assert approver_of("sam", None) == "sam"


def test_an_action_without_approval_has_no_approver_to_ask_for() -> None:
    unapproved = request(approval={"required": False})
    assert not asked_for_approver(unapproved, recorded=None)
    assert approver_of(None, None) == ""


def test_an_action_from_before_the_search_attribute_asks_its_worker() -> None:
    """Started before ``APPROVER_RECORDED``: only its worker's state names the approver."""
    assert asked_for_approver(request(), recorded=None)
    assert approver_of(None, APPROVED_BY_SAM) == "sam"
    assert approver_of(None, DONE) == ""


def test_an_ended_action_is_asked_once_when_its_worker_answers() -> None:
    assert ask_again(None, now=100.0)
    assert not ask_again(Answer(DONE, at=100.0), now=100.0 + 10 * ASK_AGAIN)


def test_an_unanswered_ended_action_is_asked_again_only_after_a_while() -> None:
    """A worker busy replaying under load may answer the next time: a first timeout must
    not blank the approver for good, nor may every page wait on a worker that is gone."""
    silent = Answer(None, at=100.0)
    assert not ask_again(silent, now=100.0 + ASK_AGAIN / 2)
    assert ask_again(silent, now=100.0 + ASK_AGAIN)
