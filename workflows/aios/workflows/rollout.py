"""The rollout of one ModelDeployment version: a durable Temporal workflow.

The operator starts it (id ``rollout/<namespace>/<name>/<version>``, so a second start is
refused) and signals aborts and admitted Approvals (which the workflow reads through the
API: a signal never decides by itself); everything else happens here:

* deploy the new version beside the stable one and wait until it answers;
* canary: for each step set the traffic weight, wait the step's pause, analyse the new
  version against the stable one, and roll back at the first failed gate;
* shadow: mirror traffic to it for ``shadowSeconds``, report agreement and drift, and
  wait for a human to promote it (a shadow never changes what the stable serves);
* direct: nothing in between;
* with ``approval.required``, wait for ``aiosctl approve`` (or a rejection, which rolls
  back); then promote. The gate comes before all the traffic does: a canary holds at its
  last step below 100 % until a human approves.

Each change is published, by activities, into the rollout's ModelRollout object (the
operator mirrors it into ``status.rollout`` and serves what it says) and as a Kubernetes
Event. The workflow's own state — step, weight, reports — is
rebuilt from its history after a worker restart, so no step is repeated or skipped.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from aios.api.approval import permits
    from aios.api.model_deployment import (
        AnalysisReport,
        ApprovalRecord,
        ReplayGate,
        ReplayGateReport,
        RolloutPhase,
        RolloutStatus,
        RolloutStep,
    )
    from aios.workflows.approval import (
        APPROVALS_FROM_API,
        SIGNALLED_NAME,
        ApprovalNotice,
        read_approval,
        refusal,
    )
    from aios.workflows.replay_gate import DEADLINE_SECONDS, ReplayGateActivities
    from aios.workflows.rollout_activities import RolloutActivities
    from aios.workflows.rollout_io import (
        ABORT_SIGNAL,
        APPROVAL_REFUSED,
        WORKFLOW_NAME,
        AnalysisRequest,
        Event,
        Publication,
        ReplayRequest,
        RolloutInput,
        ServingCheck,
        ServingResult,
    )

GATE_BEFORE_FULL_TRAFFIC = "approval-gate-before-full-traffic"
"""Rollouts started before this change may have moved all traffic before approving."""
DEADLINE_IN_WORKFLOW = "progress-deadline-kept-by-the-workflow"
"""Rollouts started before this change left the progress deadline to one activity attempt
(which a retry restarted)."""
SERVING_WINDOW = 60
"""How long one ``await_serving`` attempt watches before the workflow asks again."""
SERVING_RECHECK = timedelta(seconds=5)
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10)
)


@dataclass(frozen=True)
class ApprovalDecision:
    """A decision on the version, as its Approval object records it. (Rollouts started
    before approvals were read through the API took it from a ``decide`` signal.)"""

    version: str
    decision: Literal["approved", "rejected"]
    by: str
    at: str  # RFC 3339
    name: str = ""  # the Approval object


@workflow.defn(name=WORKFLOW_NAME)
class ModelRollout:
    def __init__(self) -> None:
        self.phase: RolloutPhase = "Deploying"
        self.weight = 0
        self.revision = 0
        self.sequence = 0
        self.message = ""
        self.steps: list[RolloutStep] = []
        self.decision: ApprovalDecision | None = None
        self.abort_reason: str | None = None
        self.input: RolloutInput | None = None
        self.notices: list[ApprovalNotice | ApprovalDecision] = []
        self.from_api: bool | None = None
        self.replay: ReplayGateReport | None = None

    def _approvals_from_api(self) -> bool:
        if self.from_api is None:
            self.from_api = workflow.patched(APPROVALS_FROM_API)
        return self.from_api

    @workflow.run
    async def run(self, rollout: RolloutInput) -> str:
        self.input = rollout
        what = f"{rollout.version} ({rollout.strategy})"
        await self._step(
            0, 0, Event("RolloutStarted", f"deploying {what} beside the stable version")
        )
        served = await self._serving(candidate_ready=True)
        if not served.ok:
            return await self._finish(
                "RolledBack", f"{rollout.version} did not become ready: {served.reason}", "Warning"
            )
        if rollout.gates.replay is not None:
            ended = await self._replay_gate(rollout.gates.replay)
            if ended is not None:
                return ended
        if rollout.strategy == "canary":
            for number, step in enumerate(rollout.steps, start=1):
                if (
                    rollout.approval_required
                    and step.weight >= 100
                    and workflow.patched(GATE_BEFORE_FULL_TRAFFIC)
                ):
                    break  # all of the traffic waits for the approval
                count = len(rollout.steps)
                shift = f"step {number}/{count}: {step.weight}% of traffic to {rollout.version}"
                await self._step(number, step.weight, Event("CanaryStep", shift))
                await self._serving(candidate_ready=False)
                if await self._paused(step.pause_seconds):
                    return await self._aborted()
                if not await self._analyse(number, shadow=False):
                    return await self._finish("RolledBack", self.message, "Warning")
        elif rollout.strategy == "shadow":
            await self._publish(
                Event(
                    "ShadowStarted",
                    f"mirroring traffic to {rollout.version} for {rollout.shadow_seconds}s",
                )
            )
            if await self._paused(rollout.shadow_seconds):
                return await self._aborted()
            if not await self._analyse(0, shadow=True):
                return await self._finish("RolledBack", self.message, "Warning")
        # A shadow never takes traffic by itself: a human promotes it on its report.
        # (A version approved over its replay gate is approved already.)
        if (rollout.approval_required or rollout.strategy == "shadow") and self.decision is None:
            self.message = (
                f"{rollout.version} passed its gates and waits for approval"
                f" ({self.weight}% of traffic until then)"
            )
            waiting = Event(
                "AwaitingApproval",
                f"{self.message}: aiosctl approve modeldeployment/{rollout.name} "
                f"--version {rollout.version}",
            )
            ended = await self._decided(waiting)
            if ended is not None:
                return ended
        self.weight = 100
        return await self._finish("Promoted", f"{rollout.version} promoted to 100% of traffic")

    @workflow.signal
    def approval(self, notice: ApprovalNotice) -> None:
        """An Approval was admitted: ``_await_approval`` reads and judges it."""
        self.notices.append(notice)

    @workflow.signal
    def decide(self, decision: ApprovalDecision) -> None:
        """Legacy: the first decision on this rollout's version counted. Now a signal that
        claims a decision is refused (and audited) by ``_await_approval``."""
        if self._approvals_from_api():
            self.notices.append(decision)
            return
        if (
            self.decision is None
            and self.input is not None
            and decision.version == self.input.version
        ):
            self.decision = decision

    @workflow.signal(name=ABORT_SIGNAL)
    def abort(self, reason: str) -> None:
        if self.abort_reason is None:
            self.abort_reason = reason

    @workflow.query
    def state(self) -> RolloutStatus:
        return self._record()

    # -- approval --------------------------------------------------------------------

    async def _await_approval(self) -> None:
        """Judge each signalled Approval until one decides on this version (or an abort).
        (A rollout started before ``APPROVALS_FROM_API`` may also get its decision from a
        ``decide`` signal, which sets ``self.decision``.)"""
        rollout = self._input()
        while self.decision is None and self.abort_reason is None:
            await workflow.wait_condition(
                lambda: (
                    self.decision is not None or self.abort_reason is not None or bool(self.notices)
                )
            )
            if self.decision is not None or self.abort_reason is not None:
                return
            notice = self.notices.pop(0)
            if isinstance(notice, ApprovalDecision):
                reason = f"{SIGNALLED_NAME} (it claimed {notice.decision} by {notice.by})"
            else:
                decided = await read_approval(rollout.namespace, notice.approval)
                found = refusal(decided, "ModelDeployment", rollout.name, rollout.version)
                if found is None and not permits(
                    rollout.approvers, decided.username, decided.groups
                ):
                    found = f"{decided.username} is not among the approvers"
                if found is None:
                    self.decision = ApprovalDecision(
                        rollout.version,
                        "approved" if decided.approved else "rejected",
                        decided.username,
                        decided.at,
                        decided.name,
                    )
                    return
                reason = found
            await self._publish(Event(APPROVAL_REFUSED, reason, "Warning"))

    # -- replay gate -----------------------------------------------------------------

    async def _replay_gate(self, gate: ReplayGate) -> str | None:
        """Replay the intents' recent readings with the new version before any traffic
        moves. None: go on; else how the rollout ended."""
        rollout = self._input()
        report: ReplayGateReport = await workflow.execute_activity_method(
            ReplayGateActivities.replay_gate,
            ReplayRequest(
                rollout.namespace, rollout.name, rollout.version, rollout.workflow_id, gate
            ),
            start_to_close_timeout=timedelta(seconds=DEADLINE_SECONDS + 300),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=ACTIVITY_RETRY,
        )
        self.replay = report
        if report.passed:
            self.message = f"replay gate passed: {report.message}"
            await self._publish(Event("ReplayPassed", self.message))
            return None
        self.message = f"replay gate failed: {report.message}"
        if gate.on_exceeded == "rollback" or any(i.failed for i in report.intents):
            return await self._finish("RolledBack", self.message, "Warning")
        waiting = Event(
            "ReplayExceeded",
            f"{self.message}; {rollout.version} waits for approval: aiosctl approve "
            f"modeldeployment/{rollout.name} --version {rollout.version}",
            "Warning",
        )
        return await self._decided(waiting, " over its replay")

    async def _decided(self, waiting: Event, over: str = "") -> str | None:
        """Wait for a human decision on the version, having said why (``waiting``): None
        once approved, else how the rollout ended (rejected, or aborted meanwhile)."""
        rollout = self._input()
        self.phase = "AwaitingApproval"
        await self._publish(waiting)
        await self._await_approval()
        if self.decision is None:
            return await self._aborted()
        if self.decision.decision != "approved":
            return await self._finish(
                "RolledBack", f"{rollout.version} rejected by {self.decision.by}", "Warning"
            )
        await self._publish(
            Event("Approved", f"{rollout.version} approved by {self.decision.by}{over}")
        )
        return None

    # -- steps -----------------------------------------------------------------------

    async def _step(self, number: int, weight: int, event: Event) -> None:
        self.phase = "Deploying" if number == 0 else "Progressing"
        self.weight = weight
        self.message = event.message
        started = workflow.now().replace(microsecond=0)
        self.steps.append(RolloutStep(step=number, weight=weight, started_at=started))
        await self._publish(event)

    async def _paused(self, seconds: int) -> bool:
        """Wait ``seconds`` (durably); True when an abort came meanwhile."""
        if self.abort_reason is None and seconds > 0:
            with contextlib.suppress(TimeoutError):  # the pause ran out: the usual case
                await workflow.wait_condition(
                    lambda: self.abort_reason is not None, timeout=timedelta(seconds=seconds)
                )
        return self.abort_reason is not None

    async def _analyse(self, number: int, shadow: bool) -> bool:
        rollout = self._input()
        window = int((workflow.now() - self.steps[-1].started_at).total_seconds())
        report = await workflow.execute_activity_method(
            RolloutActivities.analyse_rollout,
            AnalysisRequest(rollout.namespace, rollout.name, rollout.gates, shadow, window),
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=ACTIVITY_RETRY,
        )
        self.steps[-1].analysis = report
        summary = describe(report)
        what = "shadow" if shadow else f"step {number}"
        if report.passed:
            self.message = f"{what} analysis passed: {summary}"
            await self._publish(Event("AnalysisPassed", self.message))
            return True
        on = "live traffic" if report.traffic == "live" else "synthetic probes"
        self.message = f"{what} analysis failed on {on}: " + "; ".join(report.reasons)
        await self._publish(Event("AnalysisFailed", f"{self.message} ({summary})", "Warning"))
        return False

    async def _aborted(self) -> str:
        return await self._finish(
            "Aborted", f"{self._input().version} aborted: {self.abort_reason}", "Warning"
        )

    async def _finish(self, phase: RolloutPhase, message: str, kind: str = "Normal") -> str:
        self.phase, self.message = phase, message
        if phase != "Promoted":
            self.weight = 0
        await self._publish(Event(phase, message, kind))
        if phase == "Promoted":
            await self._serving(candidate_ready=False)
        return phase

    # -- activities ------------------------------------------------------------------

    async def _serving(self, candidate_ready: bool) -> ServingResult:
        """Wait until the operator serves the latest revision (and, when asked, the new
        version answers), for at most the rollout's progress deadline, kept here (durable,
        and not restarted by an activity's retry)."""
        timeout = self._input().ready_timeout_seconds
        if not workflow.patched(DEADLINE_IN_WORKFLOW):
            result = await self._await_serving(candidate_ready, timeout)
        else:
            deadline = workflow.now() + timedelta(seconds=timeout)
            while True:
                remaining = (deadline - workflow.now()).total_seconds()
                window = max(1, min(SERVING_WINDOW, round(remaining)))
                result = await self._await_serving(candidate_ready, window)
                if not result.waiting or workflow.now() + SERVING_RECHECK >= deadline:
                    break
                await workflow.sleep(SERVING_RECHECK)
        if result.waiting:
            return ServingResult(False, f"not ready within {timeout}s: {result.reason}")
        return result

    async def _await_serving(self, candidate_ready: bool, window: int) -> ServingResult:
        rollout = self._input()
        result: ServingResult = await workflow.execute_activity_method(
            RolloutActivities.await_serving,
            ServingCheck(
                rollout.namespace,
                rollout.name,
                rollout.workflow_id,
                self.revision,
                candidate_ready,
                window,
            ),
            start_to_close_timeout=timedelta(seconds=window + 60),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=ACTIVITY_RETRY,
        )
        return result

    async def _publish(self, event: Event | None) -> None:
        rollout = self._input()
        self.revision += 1
        self.sequence += 1
        await workflow.execute_activity_method(
            RolloutActivities.publish_rollout,
            Publication(rollout.namespace, rollout.name, self._record(), event, self.sequence),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=ACTIVITY_RETRY,
        )

    def _record(self) -> RolloutStatus:
        rollout = self._input()
        decision = self.decision
        return RolloutStatus(
            version=rollout.version,
            strategy=rollout.strategy,
            source=rollout.source,
            workflow_id=rollout.workflow_id,
            phase=self.phase,
            weight=self.weight,
            revision=self.revision,
            message=self.message,
            steps=[step.model_copy(deep=True) for step in self.steps],
            approval=ApprovalRecord(
                name=decision.name,
                version=decision.version,
                decision=decision.decision,
                by=decision.by,
                at=datetime.fromisoformat(decision.at),
            )
            if decision is not None and decision.name
            else None,
            replay=self.replay.model_copy(deep=True) if self.replay is not None else None,
        )

    def _input(self) -> RolloutInput:
        assert self.input is not None, "run() sets the input first"
        return self.input


def describe(report: AnalysisReport) -> str:
    """``live traffic: 150 readings, 0.0% errors, p99 12 ms (stable 10 ms), PSI 0.03,
    agreement 98%``; on probes, ``50 synthetic probes (live traffic: 12 readings), ...``."""
    if report.traffic == "live":
        parts = [f"live traffic: {report.requests} readings"]
    else:
        live = report.live_requests
        seen = "no live traffic measured" if live is None else f"live traffic: {live} readings"
        parts = [f"{report.requests} synthetic probes ({seen})"]
    parts.append(f"{report.error_rate:.1%} errors")
    if report.p99_latency_ms is not None:
        stable = report.stable_p99_latency_ms
        parts.append(
            f"p99 {report.p99_latency_ms:.0f} ms"
            + (f" (stable {stable:.0f} ms)" if stable is not None else "")
        )
    if report.confidence_mean is not None:
        parts.append(f"confidence {report.confidence_mean:.2f}")
    if report.drift_psi is not None:
        parts.append(f"PSI {report.drift_psi:.3f}")
    if report.agreement is not None:
        parts.append(f"agreement {report.agreement:.1%}")
    return ", ".join(parts)
