"""The workflows' long timers, run on Temporal's time-skipping test server: an approval that
expires after an hour, an escalation after ``afterSeconds``, OPA unreachable until the
action gives up, a canary step's pause. The integration tests cannot wait for these; here
the server skips the time while the workflow waits, so an hour passes in a second.

The workflows are the real ones; their activities are replaced by recorders with the same
names (what each activity does against a real server is the integration tests' subject),
and every recorder notes the server's time, so the tests check *when* each step happened.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from aios.api.events import ActionOutcome, ActionRequest
from aios.api.model_deployment import Analysis, AnalysisReport, CanaryStep, ModelSource
from aios.connectors.temporal import DATA_CONVERTER
from aios.stack.components import TEMPORAL_TEST_SERVER
from aios.workflows.action import POLICY_WAIT, ActionWorkflow
from aios.workflows.action_io import AUTHORIZE, SEARCH_ATTRIBUTES, ActionStep, Authorize, Verdict
from aios.workflows.approval import ApprovalNotice
from aios.workflows.approval_io import READ_APPROVAL, ApprovalRef, Decided
from aios.workflows.rollout import SERVING_RECHECK, ModelRollout
from aios.workflows.rollout_io import (
    AnalysisRequest,
    Publication,
    RolloutInput,
    ServingCheck,
    ServingResult,
)
from aios.workflows.worker import WORKFLOWS, add_search_attributes

QUEUE = "timers"
SECOND = timedelta(seconds=1)


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    server = TEMPORAL_TEST_SERVER.binary()
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER, test_server_existing_path=str(server)
    ) as started:
        await add_search_attributes(started.client, "default", SEARCH_ATTRIBUTES)
        yield started


@dataclass
class Call:
    """One activity call: what it was given and the server's time when it was scheduled."""

    name: str
    argument: Any
    at: datetime


@dataclass
class Recorders:
    """Activities under the production names, noting each call; ``opa_answers_after`` is
    how many attempts OPA fails before it answers, ``served_after`` how many serving checks
    find the new version not ready yet (None: never)."""

    approvals: dict[str, Decided] = field(default_factory=dict)
    opa_answers_after: int | None = 0
    served_after: int | None = 0
    calls: list[Call] = field(default_factory=list)

    def _note(self, name: str, argument: Any) -> None:
        self.calls.append(Call(name, argument, activity.info().current_attempt_scheduled_time))

    def steps(self) -> list[str]:
        return [c.argument.step for c in self.calls if c.name == "record"]

    def recorded(self, step: str) -> ActionStep:
        [found] = [c.argument for c in self.calls if c.name == "record" and c.argument.step == step]
        return found

    def at(self, name: str, step: str | None = None) -> list[datetime]:
        return [
            c.at
            for c in self.calls
            if c.name == name and (step is None or getattr(c.argument, "step", None) == step)
        ]

    @activity.defn(name=AUTHORIZE)
    async def authorize(self, ask: Authorize) -> Verdict:
        self._note("authorize", ask)
        attempt = activity.info().attempt
        if self.opa_answers_after is None or attempt <= self.opa_answers_after:
            raise ApplicationError("OPA cannot answer: refused", type="PolicyUnavailable")
        return Verdict(allowed=True, decision_id=f"opa-{attempt}")

    @activity.defn(name="aios.action.execute")
    async def execute(self, step: ActionStep) -> dict[str, Any]:
        self._note("execute", step)
        return {"status": "executed", "httpStatus": 200}

    @activity.defn(name="aios.action.record")
    async def record(self, step: ActionStep) -> None:
        self._note("record", step)

    @activity.defn(name=READ_APPROVAL)
    async def read_approval(self, ref: ApprovalRef) -> Decided:
        self._note("read_approval", ref)
        return self.approvals.get(ref.name, Decided(ref.name, found=False))

    @activity.defn(name="publish_rollout")
    async def publish_rollout(self, publication: Publication) -> bool:
        self._note("publish_rollout", publication)
        return True

    @activity.defn(name="await_serving")
    async def await_serving(self, check: ServingCheck) -> ServingResult:
        self._note("await_serving", check)
        checks = len(self.at("await_serving"))
        if self.served_after is None or checks <= self.served_after:
            return ServingResult(False, f"revision {check.revision} is not served", waiting=True)
        return ServingResult(True)

    @activity.defn(name="analyse_rollout")
    async def analyse_rollout(self, request: AnalysisRequest) -> AnalysisReport:
        self._note("analyse_rollout", request)
        return AnalysisReport(requests=50, error_rate=0.0, passed=True)

    def all(self) -> Sequence[Callable[..., Any]]:
        return [
            self.authorize,
            self.execute,
            self.record,
            self.read_approval,
            self.publish_rollout,
            self.await_serving,
            self.analyse_rollout,
        ]

    def events(self) -> list[tuple[str, datetime]]:
        """The rollout's Events, by reason, with when each was published."""
        return [
            (c.argument.event.reason, c.at)
            for c in self.calls
            if c.name == "publish_rollout" and c.argument.event is not None
        ]


def worker(env: WorkflowEnvironment, recorders: Recorders) -> Worker:
    activities = recorders.all()
    return Worker(env.client, task_queue=QUEUE, workflows=list(WORKFLOWS), activities=activities)


def action_request(approval: dict[str, Any]) -> ActionRequest:
    """A webhook action as the runner hands it to the workflow, with this ``approval``."""
    key = f"city.pm25.vent.{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC).isoformat()
    intent = {"namespace": "city", "name": "pm25", "generation": 1}
    return ActionRequest.model_validate(
        {
            "actionId": key,
            "intent": intent,
            "action": {
                "name": "vent",
                "type": "webhook",
                "target": "http://vents.city.example/close",
                "approval": approval,
            },
            "decision": {
                "decisionId": f"city/pm25/{key}",
                "intent": intent,
                "eventId": key,
                "sensorId": "district-7-pm25",
                "time": now,
                "decidedAt": now,
                "outcome": "act",
                "rule": "pm25-spike",
                "action": "vent",
                "actionId": key,
                "lineage": {"topic": "readings", "partition": 0, "offset": 7},
            },
        }
    )


def approved_by(username: str, request: ActionRequest, name: str) -> Decided:
    """An Approval of the action by ``username``, as the API would return it."""
    target = request.action_id
    return Decided(name, found=True, kind="Action", target=target, approved=True, username=username)


async def start_action(
    env: WorkflowEnvironment, request: ActionRequest
) -> WorkflowHandle[ActionWorkflow, ActionOutcome]:
    return await env.client.start_workflow(
        ActionWorkflow.run, request, id=request.action_id, task_queue=QUEUE
    )


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (activities run in real time; the server's clock stays still
    while no result is awaited, so nothing else happens meanwhile)."""
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.02)
    assert condition(), what


async def test_an_approval_nobody_gives_expires_after_its_timeout_without_acting(env) -> None:
    recorders = Recorders()
    request = action_request({"required": True, "approvers": ["alice"], "timeoutSeconds": 3600})
    async with worker(env, recorders):
        handle = await start_action(env, request)
        result = await handle.result()
    assert result.status == "expired", result
    assert (result.model_extra or {})["reason"] == "no approval within 3600s"
    assert recorders.steps() == ["requested", "authorized", "expired"]
    assert recorders.at("execute") == []
    [authorized] = recorders.at("record", "authorized")
    [expired] = recorders.at("record", "expired")
    assert 3600 * SECOND <= expired - authorized < 3660 * SECOND


async def test_an_approver_added_by_escalation_is_refused_before_it_and_heard_after(env) -> None:
    request = action_request(
        {
            "required": True,
            "approvers": ["alice"],
            "timeoutSeconds": 3600,
            "escalation": [{"approvers": ["bob"], "afterSeconds": 600}],
        }
    )
    recorders = Recorders(
        approvals={
            "bob-early": approved_by("bob", request, "bob-early"),
            "bob-late": approved_by("bob", request, "bob-late"),
        }
    )
    async with worker(env, recorders):
        handle = await start_action(env, request)
        await until(lambda: "authorized" in recorders.steps(), "the action was authorised")
        await handle.signal("approval", ApprovalNotice("bob-early"))
        await until(lambda: "approval-refused" in recorders.steps(), "bob was refused")
        assert "escalated" not in recorders.steps()

        await env.sleep(600)
        await until(lambda: "escalated" in recorders.steps(), "the approval escalated")
        await handle.signal("approval", ApprovalNotice("bob-late"))
        result = await handle.result()

    assert result.status == "executed", result
    assert recorders.steps() == [
        "requested",
        "authorized",
        "approval-refused",
        "escalated",
        "approved",
        "executed",
    ]
    refused = recorders.recorded("approval-refused")
    assert refused.result["reason"] == "bob is not an approver at this stage"
    [escalated] = recorders.at("record", "escalated")
    [authorized] = recorders.at("record", "authorized")
    assert 600 * SECOND <= escalated - authorized < 610 * SECOND
    [executed] = [c.argument for c in recorders.calls if c.name == "execute"]
    assert executed.approver == "bob"


async def test_an_action_asks_opa_until_its_wait_runs_out_then_ends_without_acting(env) -> None:
    recorders = Recorders(opa_answers_after=None)
    request = action_request({"required": False})
    async with worker(env, recorders):
        result = await (await start_action(env, request)).result()
    assert result.status == "policy-unavailable", result
    assert recorders.steps() == ["requested", "policy-unavailable"]
    assert recorders.at("execute") == []
    asked = recorders.at("authorize")
    assert len(asked) > 10, "OPA was asked again and again, not once"
    # The last attempt is the last one whose retry interval (at most 15 s) fits the wait.
    assert POLICY_WAIT - 30 * SECOND <= asked[-1] - asked[0] <= POLICY_WAIT
    [requested] = recorders.at("record", "requested")
    [gave_up] = recorders.at("record", "policy-unavailable")
    assert POLICY_WAIT - 30 * SECOND <= gave_up - requested <= POLICY_WAIT + 60 * SECOND


async def test_an_action_whose_opa_comes_back_before_the_wait_runs_out_acts_once(env) -> None:
    recorders = Recorders(opa_answers_after=20)
    request = action_request({"required": False})
    async with worker(env, recorders):
        result = await (await start_action(env, request)).result()
    assert result.status == "executed", result
    assert len(recorders.at("authorize")) == 21
    assert len(recorders.at("execute")) == 1
    assert recorders.steps() == ["requested", "authorized", "executed"]


def canary(pauses: Sequence[int], progress_deadline: int = 600) -> RolloutInput:
    version = f"v{uuid.uuid4().hex[:6]}"
    return RolloutInput(
        namespace="city",
        name="pm25-anomaly",
        version=version,
        strategy="canary",
        source=ModelSource(name="pm25-anomaly", version=version, storage_uri="s3://models/pm25"),
        workflow_id=f"rollout/city/pm25-anomaly/{version}",
        steps=[
            CanaryStep(weight=weight, pause_seconds=pause)
            for weight, pause in zip((20, 50), pauses, strict=True)
        ],
        gates=Analysis(),
        ready_timeout_seconds=progress_deadline,
    )


async def test_each_canary_step_holds_its_traffic_for_its_pause_before_analysis(env) -> None:
    recorders = Recorders()
    rollout = canary([900, 1800])
    async with worker(env, recorders):
        phase = await env.client.execute_workflow(
            ModelRollout.run, rollout, id=rollout.workflow_id, task_queue=QUEUE
        )
    assert phase == "Promoted"
    events = recorders.events()
    assert [reason for reason, _ in events] == [
        "RolloutStarted",
        "CanaryStep",
        "AnalysisPassed",
        "CanaryStep",
        "AnalysisPassed",
        "Promoted",
    ]
    steps = [at for reason, at in events if reason == "CanaryStep"]
    analyses = recorders.at("analyse_rollout")
    for pause, stepped, analysed in zip((900, 1800), steps, analyses, strict=True):
        assert pause * SECOND <= analysed - stepped < (pause + 60) * SECOND


async def test_an_abort_during_a_canary_pause_ends_the_rollout_without_waiting_it_out(
    env,
) -> None:
    recorders = Recorders()
    rollout = canary([3600, 3600])
    async with worker(env, recorders):
        handle = await env.client.start_workflow(
            ModelRollout.run, rollout, id=rollout.workflow_id, task_queue=QUEUE
        )
        await until(
            lambda: (
                [r for r, _ in recorders.events()] == ["RolloutStarted", "CanaryStep"]
                and len(recorders.at("await_serving")) == 2
            ),
            "the first canary step was served",
        )
        await env.sleep(600)
        await handle.signal(ModelRollout.abort, "drift on district 7")
        phase = await handle.result()
    assert phase == "Aborted"
    assert recorders.at("analyse_rollout") == []
    (_, stepped), (reason, aborted) = recorders.events()[1], recorders.events()[-1]
    assert reason == "Aborted"
    assert 600 * SECOND <= aborted - stepped < 660 * SECOND


async def test_a_version_never_ready_is_rolled_back_at_its_progress_deadline(env) -> None:
    recorders = Recorders(served_after=None)
    rollout = canary([60, 60], progress_deadline=300)
    async with worker(env, recorders):
        phase = await env.client.execute_workflow(
            ModelRollout.run, rollout, id=rollout.workflow_id, task_queue=QUEUE
        )
    assert phase == "RolledBack"
    (started, began), (reason, ended) = recorders.events()[0], recorders.events()[-1]
    assert (started, reason) == ("RolloutStarted", "RolledBack")
    assert 300 * SECOND - SERVING_RECHECK <= ended - began <= 300 * SECOND
    checks = recorders.at("await_serving")
    assert len(checks) > 10, "serving was checked again and again, in windows"
    assert recorders.at("analyse_rollout") == []
    assert recorders.calls[-1].argument.rollout.message == (
        f"{rollout.version} did not become ready: not ready within 300s: revision 1 is not served"
    )


async def test_a_version_ready_before_its_progress_deadline_rolls_on(env) -> None:
    recorders = Recorders(served_after=20)
    rollout = canary([60, 60], progress_deadline=300)
    async with worker(env, recorders):
        phase = await env.client.execute_workflow(
            ModelRollout.run, rollout, id=rollout.workflow_id, task_queue=QUEUE
        )
    assert phase == "Promoted"
    checks = recorders.at("await_serving")
    assert len(checks) == 21 + 3, "21 until ready, then one per step and at promotion"
    assert SERVING_RECHECK * 20 <= checks[20] - checks[0] < 300 * SECOND
