"""Approval: admitted by the API server for the user it authenticated, then told to its
target's workflow.

* admission (``validate-approval``): the requesting user is the approver named, the target
  waits for this decision and the user is among its approvers; every attempt, admitted or
  denied, is an ``approval`` audit record. Never ignored on failure: an Approval the
  webhook did not check is never stored.
* admission (``validate-modeldeployment-status``, ``validate-modelrollout-status``):
  ``status.rollout.approval`` changes only to what an Approval object vouches for (the
  rollout workflow's record, and the operator's mirror of it), so patching status cannot
  forge an approval; a refused attempt is audited.
* reconcile: signal the target's workflow where to read the Approval (Ready: Delivered).
  The workflow reads it through the API itself: the signal carries no decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from temporalio.service import RPCError

from aios.api import API_VERSION, GROUP, VERSION, Approval, ModelDeployment, ModelRollout, Resource
from aios.api.approval import ApprovalSpec
from aios.api.events import ActionState
from aios.operator.handlers.common import audited, register, runtime
from aios.operator.reconcile import approval as plan
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.runtime.controller import Context, KindSpec, after_an_error
from aios.operator.settings import WebhookSettings
from aios.workflows.action import ActionWorkflow
from aios.workflows.approval import ApprovalNotice


async def target_workflow(spec: ApprovalSpec, namespace: str, memo: kopf.Memo) -> str | None:
    """The workflow that waits for this decision (None: the rollout moved on)."""
    if spec.target.kind == "Action":
        return spec.target.name
    md = await runtime(memo).children.get(
        API_VERSION, ModelDeployment.crd.kind, spec.target.name, namespace
    )
    rollout = ((md or {}).get("status") or {}).get("rollout") or {}
    return rollout.get("workflowId") if rollout.get("version") == spec.target.version else None


async def deliver(approval: Approval, ctx: Context) -> list[ConditionUpdate]:
    """Fails closed without the admission webhook: nobody checked who made the Approval."""
    if not runtime(ctx.memo).webhook.enabled:
        message = "the admission webhook is off, so nobody vouched for this Approval"
        return [ConditionUpdate("Ready", "False", "Unverified", message)]
    meta = approval.metadata
    workflow_id = await target_workflow(approval.spec, meta["namespace"], ctx.memo)
    if workflow_id is None:
        return [ConditionUpdate("Ready", "False", "TargetMoved", "no rollout of this version")]
    handle = (await runtime(ctx.memo).temporal()).get_workflow_handle(workflow_id)
    try:
        await handle.signal("approval", ApprovalNotice(meta["name"]))
    except RPCError as error:
        return [ConditionUpdate("Ready", "False", "TargetEnded", f"{workflow_id}: {error}")]
    return [ConditionUpdate("Ready", "True", "Delivered", f"{workflow_id} was told to read it")]


register(KindSpec(Approval, deliver, retry_when=after_an_error))


async def action_state(action_id: str, memo: kopf.Memo) -> ActionState | None:
    handle = (await runtime(memo).temporal()).get_workflow_handle(action_id)
    try:
        return await handle.query(ActionWorkflow.state)
    except RPCError:
        return None


async def admit_approval(
    body: Mapping[str, Any], userinfo: Mapping[str, Any], memo: kopf.Memo
) -> str | None:
    """Why the Approval is refused, or None."""
    spec = Approval.model_validate(dict(body)).spec
    namespace = body["metadata"]["namespace"]
    refused = plan.identity_refusal(spec.approver, userinfo, "spec.approver")
    if refused is not None:
        return refused
    if spec.target.kind == "Action":
        return plan.action_refusal(spec, await action_state(spec.target.name, memo), namespace)
    md = await runtime(memo).children.get(
        API_VERSION, ModelDeployment.crd.kind, spec.target.name, namespace
    )
    return plan.model_deployment_refusal(spec, md, namespace)


async def admit_status(
    body: Mapping[str, Any], old: Mapping[str, Any] | None, memo: kopf.Memo
) -> str | None:
    """Why a status write is refused (a forged approval record), or None."""
    wanted = plan.recorded_approval(body.get("status"))
    if wanted is None or wanted == plan.recorded_approval((old or {}).get("status")):
        return None
    meta, name = body["metadata"], wanted.get("name")
    approval = None
    if name:
        approval = await runtime(memo).children.get(
            API_VERSION, Approval.crd.kind, name, meta["namespace"]
        )
    return plan.record_refusal(wanted, model_deployment_of(body), approval)


def model_deployment_of(body: Mapping[str, Any]) -> str:
    """The ModelDeployment a status is about: the object's own, or its ModelRollout's."""
    if body.get("kind") == ModelRollout.crd.kind:
        return str((body.get("spec") or {}).get("modelDeployment", ""))
    return str(body["metadata"]["name"])


def register_webhooks(settings: WebhookSettings) -> None:
    """The approval webhooks, when the admission webhook is configured. Always failing
    closed, whatever ``AIOS_WEBHOOK_FAILURE_POLICY`` says for the policy webhooks."""
    if not settings.enabled:
        return
    persistent = settings.service is not None

    @kopf.on.validate(
        GROUP,
        VERSION,
        Approval.crd.plural,
        id="validate-approval",
        operations=["CREATE"],
        side_effects=True,
        persistent=persistent,
    )
    async def validate_approval(
        *, body: kopf.Body, userinfo: kopf.UserInfo, dryrun: bool, memo: kopf.Memo, **_: Any
    ) -> None:
        target = (body.get("spec") or {}).get("target") or {}
        kind, name = str(target.get("kind", "")).lower(), target.get("name", "")
        subject = f"{kind}/{body['metadata']['namespace']}/{name}"
        try:
            refused = await admit_approval(body, userinfo, memo)
        except (ApiException, RPCError) as error:
            refused = f"the target could not be checked: {error}"
        await audited("approval", subject, refused, userinfo, dryrun)

    for model in (ModelDeployment, ModelRollout):
        _register_status_webhook(model, persistent)


def _register_status_webhook(model: type[Resource[Any, Any]], persistent: bool) -> None:
    """A status write of ``model`` (a ModelDeployment, or the ModelRollout its workflow
    publishes into) may record only an approval an Approval object vouches for."""

    @kopf.on.validate(
        GROUP,
        VERSION,
        model.crd.plural,
        id=f"validate-{model.crd.singular}-status",
        subresource="status",
        operations=["UPDATE"],
        side_effects=True,
        persistent=persistent,
    )
    async def validate_status(
        *, body: kopf.Body, userinfo: kopf.UserInfo, dryrun: bool, memo: kopf.Memo, **kwargs: Any
    ) -> None:
        refused = await admit_status(body, kwargs.get("old"), memo)
        if refused is not None:
            namespace = body["metadata"]["namespace"]
            subject = f"modeldeployment/{namespace}/{model_deployment_of(body)}"
            await audited("approval", subject, refused, userinfo, dryrun)
