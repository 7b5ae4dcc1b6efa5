"""A rollout's replay gate: the Job it runs beside an intent's runners, how it reads a
replay's result and judges the sum, and what the rollout workflow does with the verdict
(on Temporal's time-skipping test server, activities recorded as in test_workflow_timers)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from temporalio import activity
from test_chart import runner_inputs
from test_workflow_timers import QUEUE, Recorders, canary, env, until, worker

from aios.api.model_deployment import Analysis, IntentReplay, ReplayGate, ReplayGateReport
from aios.operator.reconcile.automation_intent import render_runner
from aios.workflows import replay_gate as gate
from aios.workflows.approval import ApprovalNotice
from aios.workflows.approval_io import Decided
from aios.workflows.rollout import ModelRollout
from aios.workflows.rollout_io import ReplayRequest, RolloutInput

__all__ = ["env"]  # the time-skipping server, shared with test_workflow_timers

TARGET = {"version": "2", "model": "pm25-anomaly", "http": "http://pm25-anomaly-2.city.svc:8000"}
OWNER = {"apiVersion": "aios.dev/v1alpha1", "kind": "ModelRollout", "name": "r", "uid": "u"}


def request(limit: float = 0.05, on_exceeded: str = "rollback") -> ReplayRequest:
    rule = ReplayGate(window_seconds=7200, max_decision_change=limit, on_exceeded=on_exceeded)
    return ReplayRequest("city", "pm25-anomaly", "2", "rollout/city/pm25-anomaly/2", rule)


def runners() -> dict[str, Any]:
    return next(c for c in render_runner(*runner_inputs()) if c["kind"] == "StatefulSet")


def test_the_replay_job_is_the_runners_pod_with_the_replay_command() -> None:
    found = runners()
    window = ("--since-seconds=7200",)
    replayed = gate.Replayed("city", "pm25-anomaly", "2", TARGET, window)
    job = gate.replay_job("pm25-alerting", found, "j", replayed, OWNER)
    pod = job["spec"]["template"]["spec"]
    runner_pod = found["spec"]["template"]["spec"]
    (container,), (runner,) = pod["containers"], runner_pod["containers"]
    assert container["command"] == [gate.REPLAY]
    assert container["args"] == [
        "--config=/etc/aios/runner/config.json",
        "--since-seconds=7200",
        "--deployment=pm25-anomaly",
        "--version=2",
        f"--url={TARGET['http']}",
        "--model=pm25-anomaly",
        "--protocol=http",
    ]
    assert (container["image"], container["env"]) == (runner["image"], runner["env"])
    assert container["volumeMounts"] == runner["volumeMounts"]
    assert pod["serviceAccountName"] == runner_pod["serviceAccountName"], "the runner's access"
    assert pod["volumes"] == runner_pod["volumes"] and pod["restartPolicy"] == "Never"
    assert "livenessProbe" not in container and "ports" not in container
    selector = found["spec"]["selector"]["matchLabels"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items(), "no runner selector picks the replay"
    assert job["metadata"]["ownerReferences"] == [OWNER]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] > 0
    assert runner.get("livenessProbe"), "the runner's own pod is untouched"


def test_a_replay_job_is_named_by_its_rollout_and_intent() -> None:
    name = gate.job_name("x" * 63, "rollout/city/m/1")
    assert name == gate.job_name("x" * 63, "rollout/city/m/1") and len(name) <= 63
    assert name != gate.job_name("x" * 63, "rollout/city/m/2")


def test_a_version_is_asked_where_it_is_served() -> None:
    stable = {**TARGET, "version": "1"}
    status = {"stable": stable, "canary": TARGET}
    assert gate.served_target(status, "2") == TARGET
    assert gate.served_target({"shadow": TARGET}, "2") == TARGET
    assert gate.served_target(status, "1") == stable
    assert gate.served_target(status, "3") is None


def test_a_replays_termination_message_becomes_its_result() -> None:
    counted = gate.intent_result("a", "j", True, json.dumps({"compared": 9, "changed": 2}))
    assert (counted.compared, counted.changed, counted.failed) == (9, 2, False)
    empty = gate.intent_result("a", "j", True, json.dumps({"compared": 0, "message": "none"}))
    assert (empty.compared, empty.message, empty.failed) == (0, "none", False)
    failed = gate.intent_result("a", "j", False, json.dumps({"error": "TimeoutError: x"}))
    assert failed.failed and failed.message == "TimeoutError: x"
    crashed = gate.intent_result("a", "j", False, "Traceback …\nMemoryError\n")
    assert crashed.failed and crashed.message == "Traceback …\nMemoryError"


def test_the_gate_sums_the_intents_and_holds_the_share_against_its_limit() -> None:
    rule = request(limit=0.1).gate
    one, two = (
        IntentReplay(intent="a", job="j", compared=60, changed=3),
        IntentReplay(intent="b", job="k", compared=40, changed=7),
    )
    within = gate.judge([one], rule, "md")
    assert within.passed and within.message.startswith("3 of 60 decisions (5.0%)")
    beyond = gate.judge([one, two], rule, "md")
    assert (beyond.compared, beyond.changed, beyond.passed) == (100, 10, True)
    beyond = gate.judge([one, two.model_copy(update={"changed": 8})], rule, "md")
    assert not beyond.passed and "beyond the limit of 10.0%" in beyond.message
    broken = IntentReplay(intent="c", job="l", failed=True, message="boom")
    assert not gate.judge([one, broken], rule, "md").passed
    assert gate.judge([], rule, "md").passed, "no intent calls the model"
    quiet = IntentReplay(intent="a", job="j", message="no readings")
    assert (
        gate.judge([quiet], rule, "md").message
        == "nothing to compare in the window (a: no readings)"
    )


def test_only_a_finished_job_has_a_result() -> None:
    assert gate.finished({"status": {"active": 1}}) is None
    assert gate.finished({"status": {"succeeded": 1}}) is True
    assert (
        gate.finished({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) is False
    )


# -- the workflow ---------------------------------------------------------------------------


@dataclass
class Gated(Recorders):
    """The recorders, with a replay gate finding ``found``."""

    found: ReplayGateReport | None = None

    @activity.defn(name="replay_gate")
    async def replay_gate(self, request: ReplayRequest) -> ReplayGateReport:
        self._note("replay_gate", request)
        assert self.found is not None
        return self.found

    def all(self) -> Sequence[Callable[..., Any]]:
        return [*super().all(), self.replay_gate]


def gated(on_exceeded: str = "rollback") -> RolloutInput:
    rollout = canary([0, 0])
    rule = ReplayGate(max_decision_change=0.05, on_exceeded=on_exceeded)
    return replace(rollout, gates=Analysis(replay=rule))


def report(passed: bool) -> ReplayGateReport:
    intent = IntentReplay(intent="pm25", job="j", compared=100, changed=1 if passed else 20)
    return ReplayGateReport(
        intents=[intent], compared=100, changed=intent.changed, passed=passed, message="found"
    )


async def rolled_out(env, recorders: Gated, rollout: RolloutInput) -> str:
    """The rollout run to its end; how it ended."""
    async with worker(env, recorders):
        phase: str = await env.client.execute_workflow(
            ModelRollout.run, rollout, id=rollout.workflow_id, task_queue=QUEUE
        )
    return phase


async def test_a_version_within_the_gate_goes_on_to_its_canary_steps(env) -> None:
    recorders = Gated(found=report(passed=True))
    rollout = gated()
    phase = await rolled_out(env, recorders, rollout)
    assert phase == "Promoted"
    reasons = [reason for reason, _ in recorders.events()]
    assert reasons[:3] == ["RolloutStarted", "ReplayPassed", "CanaryStep"]
    (asked,) = [c.argument for c in recorders.calls if c.name == "replay_gate"]
    assert (asked.version, asked.gate) == (rollout.version, rollout.gates.replay)
    published = [c.argument for c in recorders.calls if c.name == "publish_rollout"]
    assert published[-1].rollout.replay == recorders.found


async def test_a_version_beyond_the_gate_is_rolled_back_before_any_traffic(env) -> None:
    recorders = Gated(found=report(passed=False))
    rollout = gated()
    phase = await rolled_out(env, recorders, rollout)
    assert phase == "RolledBack"
    assert [reason for reason, _ in recorders.events()] == ["RolloutStarted", "RolledBack"]
    last = recorders.calls[-1].argument.rollout
    assert [s.weight for s in last.steps] == [0] and last.message == "replay gate failed: found"
    assert recorders.at("analyse_rollout") == []


async def test_beyond_the_gate_a_human_may_approve_the_version_once(env) -> None:
    rollout = gated(on_exceeded="approval")
    decided = Decided(
        "ok",
        found=True,
        kind="ModelDeployment",
        target=rollout.name,
        version=rollout.version,
        approved=True,
        username="duty-officer",
        at="2026-12-02T10:00:00+00:00",
    )
    recorders = Gated(found=report(passed=False), approvals={"ok": decided})
    async with worker(env, recorders):
        handle = await env.client.start_workflow(
            ModelRollout.run, rollout, id=rollout.workflow_id, task_queue=QUEUE
        )
        await until(
            lambda: "ReplayExceeded" in [r for r, _ in recorders.events()],
            "the rollout waits for a human",
        )
        assert recorders.at("analyse_rollout") == [], "no traffic before the approval"
        await handle.signal(ModelRollout.approval, ApprovalNotice("ok"))
        phase = await handle.result()
    assert phase == "Promoted"
    reasons = [reason for reason, _ in recorders.events()]
    assert reasons[:4] == ["RolloutStarted", "ReplayExceeded", "Approved", "CanaryStep"]
    assert reasons.count("Approved") == 1 and "AwaitingApproval" not in reasons
