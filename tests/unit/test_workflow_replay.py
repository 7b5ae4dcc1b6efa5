"""The workflows' code replayed against histories recorded from real runs: a change that
alters the commands a workflow issues for a recorded history (a new activity, a timer
moved, a step skipped) fails here, before it would break every running rollout and
approval on deploy. Such a change goes behind ``workflow.patched`` (README, "Changing a
workflow"); a new history is recorded with ``AIOS_RECORD_HISTORIES=1``."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from aios.connectors.temporal import DATA_CONVERTER
from aios.workflows.worker import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"
RECORDED = sorted(HISTORIES.glob("*.json"))


def test_histories_of_both_workflows_are_recorded() -> None:
    names = {path.stem for path in RECORDED}
    assert any(n.startswith("action-") for n in names), names
    assert any(n.startswith("rollout-") for n in names), names


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
async def test_the_workflow_code_replays_its_recorded_history(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    assert len(history.events) > 3, "a history of a workflow that did something"
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
