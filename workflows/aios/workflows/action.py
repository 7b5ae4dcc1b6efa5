"""The action workflow: authorise → (approval, with escalation) → rate limit → act → record.

One workflow per action, its id the action's idempotency key (the runner starts it with
REJECT_DUPLICATE), so a redelivered reading never acts twice. Deterministic: every side
effect — OPA, Temporal visibility, the webhook, MQTT, Kafka, the audit log — is an
activity. Policy is asked just before acting, and again once a human approved; when OPA
cannot answer the action waits (retries) and finally fails without acting (fail closed).
Every step is an ``action-step`` audit record and a lifecycle record on the intent's
actions topic.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from aios.api.approval import permits
    from aios.api.events import ActionOutcome, ActionRequest, ActionState, Outcome, Review
    from aios.workflows.action_activities import ActionActivities
    from aios.workflows.action_io import (
        ACTION,
        APPROVER,
        EXECUTED_AT,
        INTENT,
        MQTT_CONNECT_SECONDS,
        OUTCOME,
        REQUESTED,
        TARGET,
        ActionStep,
        Authorize,
        Verdict,
    )
    from aios.workflows.approval import (
        APPROVALS_FROM_API,
        SIGNALLED_NAME,
        ApprovalNotice,
        read_approval,
        refusal,
    )

POLICY_WAIT = timedelta(minutes=10)
"""How long an action waits for OPA to answer before it fails without acting."""
APPROVER_RECORDED = "approver-search-attribute"
"""Actions started before this change name their approver in the ``state`` query only."""


def execute_options(action_type: str) -> dict[str, Any]:
    """How the sink's activity is retried. A webhook carries ``Idempotency-Key`` and a Kafka
    record its key, so a retry is safe for them. An MQTT command has no such key a device
    honours: its activity runs once, waiting for the broker itself while nothing has left
    (heartbeating), and a lost worker fails the action rather than send it twice."""
    if action_type == "mqtt":
        return {
            "start_to_close_timeout": timedelta(seconds=MQTT_CONNECT_SECONDS + 60),
            "heartbeat_timeout": timedelta(seconds=30),
            "retry_policy": RetryPolicy(maximum_attempts=1),
        }
    return {
        "start_to_close_timeout": timedelta(seconds=30),
        "retry_policy": RetryPolicy(
            maximum_attempts=6,
            maximum_interval=timedelta(seconds=30),
            non_retryable_error_types=["ActionRejected"],
        ),
    }


@workflow.defn(name="ActionWorkflow")
class ActionWorkflow:
    @workflow.init
    def __init__(self, request: ActionRequest) -> None:
        # Reviews may arrive before ``run`` starts: the first approvers are known from here.
        approval = request.action.approval
        self.review: Review | None = None
        self.refused: list[str] = []
        self.allowed: set[str] = set(approval.approvers) if approval.required else set()
        self.phase = "started"
        self.notices: list[ApprovalNotice | Review] = []
        self.from_api: bool | None = None
        self.policy: Verdict | None = None

    def _approvals_from_api(self) -> bool:
        if self.from_api is None:
            self.from_api = workflow.patched(APPROVALS_FROM_API)
        return self.from_api

    @workflow.signal(name="approval")
    def on_approval(self, notice: ApprovalNotice) -> None:
        """An Approval was admitted: ``_await_review`` reads and judges it."""
        self.notices.append(notice)

    @workflow.signal(name="review")
    def on_review(self, review: Review) -> None:
        if self._approvals_from_api():
            self.notices.append(review)  # refused and audited: a signal is no approval
            return
        if self.review is not None:
            return  # the first valid answer stands
        if permits(self.allowed, review.approver, review.groups):
            self.review = review
        else:
            self.refused.append(review.approver)

    @workflow.query(name="state")
    def state(self) -> ActionState:
        return ActionState(
            phase=self.phase,
            allowed_approvers=sorted(self.allowed),
            refused=self.refused,
            review=self.review,
            policy_decision_id=self.policy.decision_id if self.policy else None,
            policy_warnings=self.policy.warnings if self.policy else [],
        )

    @workflow.run
    async def run(self, request: ActionRequest) -> ActionOutcome:
        action = request.action
        workflow.upsert_search_attributes(
            [
                INTENT.value_set(f"{request.intent.namespace}/{request.intent.name}"),
                ACTION.value_set(action.name),
                TARGET.value_set(action.target[:200]),
            ]
        )
        await self._record(request, REQUESTED, {"status": "pending"})

        decision = await self._authorize(request, None)
        if decision is None:
            return await self._finish(
                request,
                "policy-unavailable",
                {"reason": f"OPA did not answer within {POLICY_WAIT}; the action did not run"},
            )
        if not decision.allowed:
            return await self._finish(
                request, "denied", {"reasons": decision.reasons}, policy=decision
            )
        await self._record(
            request,
            "authorized",
            {"status": "allowed", "warnings": decision.warnings},
            policy=decision,
        )

        approver = None
        if action.approval.required:
            self.phase = "awaiting-approval"
            review = await self._await_review(request)
            if review is None:
                return await self._finish(
                    request,
                    "expired",
                    {"reason": f"no approval within {action.approval.timeout_seconds}s"},
                )
            approver = review.approver
            if workflow.patched(APPROVER_RECORDED):
                workflow.upsert_search_attributes([APPROVER.value_set(approver)])
            if not review.approved:
                return await self._finish(
                    request, "rejected", {"reason": review.reason}, approver=approver
                )
            await self._record(
                request,
                "approved",
                {"status": "approved", "reason": review.reason},
                approver=approver,
            )
            decision = await self._authorize(request, approver)
            if decision is None:
                return await self._finish(
                    request,
                    "policy-unavailable",
                    {"reason": "OPA did not answer after approval; the action did not run"},
                    approver=approver,
                )
            if not decision.allowed:
                return await self._finish(
                    request,
                    "denied",
                    {"reasons": decision.reasons},
                    approver=approver,
                    policy=decision,
                )

        if action.rate_limit is not None:
            recent = await workflow.execute_activity_method(
                ActionActivities.recent_executions,
                request,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
            )
            if recent >= action.rate_limit.per_hour:
                return await self._finish(
                    request,
                    "rate-limited",
                    {"executedLastHour": recent, "perHour": action.rate_limit.per_hour},
                    approver=approver,
                    policy=decision,
                )

        self.phase = "executing"
        try:
            result = await workflow.execute_activity_method(
                ActionActivities.execute,
                ActionStep(request, "execute", {}, approver, decision.decision_id),
                **execute_options(action.type),
            )
        except ActivityError as error:
            return await self._finish(
                request,
                "failed",
                {"error": str(error.cause or error)},
                approver=approver,
                policy=decision,
            )
        workflow.upsert_search_attributes([EXECUTED_AT.value_set(workflow.now())])
        return await self._finish(request, "executed", result, approver=approver, policy=decision)

    async def _authorize(self, request: ActionRequest, approver: str | None) -> Verdict | None:
        """OPA's decision, retried while OPA cannot answer; None after ``POLICY_WAIT``."""
        self.phase = "authorizing"
        try:
            self.policy = await workflow.execute_activity_method(
                ActionActivities.authorize,
                Authorize(request, approver),
                start_to_close_timeout=timedelta(seconds=15),
                schedule_to_close_timeout=POLICY_WAIT,
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=15)),
            )
        except ActivityError:
            return None
        return self.policy

    async def _judge(
        self, request: ActionRequest, notice: ApprovalNotice | Review
    ) -> Review | None:
        """The decision an admitted Approval records, or None (audited as refused)."""
        if isinstance(notice, Review):
            reason, claimed = SIGNALLED_NAME, notice.approver
        else:
            decided = await read_approval(request.intent.namespace, notice.approval)
            claimed = decided.username
            found = refusal(decided, "Action", request.action_id)
            if found is None and not permits(self.allowed, decided.username, decided.groups):
                found = f"{decided.username} is not an approver at this stage"
            if found is None:
                return Review(
                    approver=decided.username,
                    approved=decided.approved,
                    groups=decided.groups,
                    reason=decided.reason,
                )
            reason = found
        self.refused.append(claimed)
        await self._record(
            request,
            "approval-refused",
            {"status": "pending", "reason": reason, "claimedBy": claimed},
        )
        return None

    async def _await_review(self, request: ActionRequest) -> Review | None:
        """Wait for an allowed approver's decision, judging each Approval signalled; widen
        the circle at each escalation. (A workflow started before ``APPROVALS_FROM_API``
        may also get its decision from a ``review`` signal, which sets ``self.review``.)"""
        approval = request.action.approval
        started = workflow.now()
        stages = sorted(approval.escalation, key=lambda e: e.after_seconds)
        for stage in [*stages, None]:
            until = stage.after_seconds if stage else approval.timeout_seconds
            while True:
                remaining = until - (workflow.now() - started).total_seconds()
                try:
                    await workflow.wait_condition(
                        lambda: self.review is not None or bool(self.notices),
                        timeout=timedelta(seconds=max(remaining, 0.001)),
                    )
                except TimeoutError:
                    break
                if self.review is None:
                    self.review = await self._judge(request, self.notices.pop(0))
                if self.review is not None:
                    return self.review
            if stage is None:
                return None
            self.allowed |= set(stage.approvers)
            await self._record(
                request, "escalated", {"status": "pending", "approvers": sorted(self.allowed)}
            )
        return None

    async def _record(
        self,
        request: ActionRequest,
        step: str,
        result: dict[str, Any],
        approver: str | None = None,
        policy: Verdict | None = None,
    ) -> None:
        """Audit one step; one OPA decided carries its id and the document it decided on."""
        await workflow.execute_activity_method(
            ActionActivities.record,
            ActionStep(
                request,
                step,
                result,
                approver,
                policy.decision_id if policy else None,
                policy.input if policy else None,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
        )

    async def _finish(
        self,
        request: ActionRequest,
        outcome: Outcome,
        result: dict[str, Any],
        approver: str | None = None,
        policy: Verdict | None = None,
    ) -> ActionOutcome:
        self.phase = outcome
        workflow.upsert_search_attributes([OUTCOME.value_set(outcome)])
        final = {"status": outcome, **result}
        await self._record(request, outcome, final, approver, policy)
        return ActionOutcome.model_validate(final)
