"""When the console asks an ended action's worker for its state again (the approver on
the timeline comes from that answer)."""

from __future__ import annotations

from aios.api.events import ActionState
from aios.console.sources import ASK_AGAIN, Answer, ask_again

DONE = ActionState(phase="executed", allowed_approvers=[], refused=[])


def test_an_ended_action_is_asked_once_when_its_worker_answers() -> None:
    assert ask_again(None, now=100.0)
    assert not ask_again(Answer(DONE, at=100.0), now=100.0 + 10 * ASK_AGAIN)


def test_an_unanswered_ended_action_is_asked_again_only_after_a_while() -> None:
    """A worker busy replaying under load may answer the next time: a first timeout must
    not blank the approver for good, nor may every page wait on a worker that is gone."""
    silent = Answer(None, at=100.0)
    assert not ask_again(silent, now=100.0 + ASK_AGAIN / 2)
    assert ask_again(silent, now=100.0 + ASK_AGAIN)
