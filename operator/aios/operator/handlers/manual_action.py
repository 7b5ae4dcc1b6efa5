"""ManualAction: admitted by the API server for the user it authenticated, then started as
an action workflow.

* admission (``validate-manualaction``): the requesting user is the one named in
  ``spec.requestedBy``; the intent declares the action, or the action to revert ran,
  declares its compensation and was not reverted yet. Every attempt, admitted or denied,
  is a ``manual-action`` audit record. Never ignored on failure.
* reconcile: start the action workflow (Ready: Started, ``status.actionId``). Its id makes
  a retried start, or a second reversal of the same action, start nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from aios.api import GROUP, VERSION, AutomationIntent, ManualAction
from aios.api.events import ActionRequest
from aios.connectors.temporal import started_input
from aios.operator.handlers.common import audited, register, runtime
from aios.operator.reconcile import manual_action as plan
from aios.operator.reconcile.approval import identity_refusal
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.runtime.controller import Context, KindSpec, after_an_error
from aios.operator.settings import WebhookSettings, task_queue
from aios.workflows.action import ActionWorkflow
from aios.workflows.action_io import OUTCOME


async def started_request(temporal: Client, workflow_id: str) -> ActionRequest | None:
    """The input the action workflow ``workflow_id`` was started with (None: no such)."""
    return await started_input(temporal, workflow_id, ActionRequest)


async def original(action_id: str, memo: kopf.Memo) -> plan.Original:
    """The action ``action_id``: its input, its outcome (its ``AiosOutcome`` search
    attribute; while it runs, ``running``) and whether its reversal exists."""
    temporal = await runtime(memo).temporal()
    request = await started_request(temporal, action_id)
    if request is None:
        return plan.Original(None, None, reverted=False)
    described = await temporal.get_workflow_handle(action_id).describe()
    status = described.status.name.lower() if described.status else "unknown"
    phase = described.typed_search_attributes.get(OUTCOME) or status
    reversal = await started_request(temporal, plan.revert_id(action_id))
    return plan.Original(request, phase, reverted=reversal is not None)


def intent_of(intent: str | None, namespace: str, memo: kopf.Memo) -> dict[str, Any] | None:
    """The AutomationIntent as the watch has it (the operator's store: no GET)."""
    if intent is None:
        return None
    return runtime(memo).store(AutomationIntent.crd.plural).named(namespace, intent)


async def refusal(
    body: Mapping[str, Any], userinfo: Mapping[str, Any], memo: kopf.Memo
) -> str | None:
    """Why the ManualAction is refused, or None."""
    spec = ManualAction.model_validate(dict(body)).spec
    namespace = body["metadata"]["namespace"]
    refused = identity_refusal(spec.requested_by, userinfo, "spec.requestedBy")
    if refused is not None:
        return refused
    if spec.reverts is None:
        return plan.act_refusal(spec, intent_of(spec.intent, namespace, memo), namespace)
    found = await original(spec.reverts, memo)
    name = found.request.intent.name if found.request else None
    intent = intent_of(name, namespace, memo)
    return plan.revert_refusal(spec, found, intent, namespace)


async def start(manual: ManualAction, ctx: Context) -> list[ConditionUpdate]:
    """Fails closed without the admission webhook: nobody checked who asked."""
    if not runtime(ctx.memo).webhook.enabled:
        message = "the admission webhook is off, so nobody vouched for this request"
        return [ConditionUpdate("Ready", "False", "Unverified", message)]
    spec, namespace = manual.spec, manual.metadata["namespace"]
    temporal = await runtime(ctx.memo).temporal()
    reverted = await started_request(temporal, spec.reverts) if spec.reverts else None
    intent_name = reverted.intent.name if reverted else spec.intent
    raw = intent_of(intent_name, namespace, ctx.memo)
    if raw is None or (spec.reverts and reverted is None):
        gone = f"automationintent/{intent_name}" if raw is None else f"action/{spec.reverts}"
        return [ConditionUpdate("Ready", "False", "TargetGone", f"{gone} no longer exists")]
    request = plan.manual_request(manual, AutomationIntent.model_validate(raw), reverted)
    ctx.status["actionId"] = request.action_id
    try:
        await temporal.start_workflow(
            ActionWorkflow.run,
            request,
            id=request.action_id,
            task_queue=task_queue(namespace),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        first = await started_request(temporal, request.action_id)
        asker = first.manual.manual_action if first and first.manual else None
        if asker != manual.metadata["name"]:
            message = f"action/{request.action_id} was started by manualaction/{asker}"
            return [ConditionUpdate("Ready", "False", "AlreadyStarted", message)]
    return [ConditionUpdate("Ready", "True", "Started", f"action/{request.action_id} started")]


register(KindSpec(ManualAction, start, retry_when=after_an_error))


def register_webhooks(settings: WebhookSettings) -> None:
    """The ManualAction webhook, when the admission webhook is configured; always failing
    closed."""
    if not settings.enabled:
        return

    @kopf.on.validate(
        GROUP,
        VERSION,
        ManualAction.crd.plural,
        id="validate-manualaction",
        operations=["CREATE"],
        side_effects=True,
        persistent=settings.service is not None,
    )
    async def validate_manual_action(
        *, body: kopf.Body, userinfo: kopf.UserInfo, dryrun: bool, memo: kopf.Memo, **_: Any
    ) -> None:
        spec = body.get("spec") or {}
        what = spec.get("reverts") or f"{spec.get('intent')}/{spec.get('action')}"
        subject = f"manualaction/{body['metadata']['namespace']}/{what}"
        try:
            refused = await refusal(body, userinfo, memo)
        except (ApiException, RPCError) as error:
            refused = f"the request could not be checked: {error}"
        await audited("manual-action", subject, refused, userinfo, dryrun)
