"""ModelDeployment: serve the declared version, and drive each new one through a rollout.

* reconcile: render what serves (raw Deployments and Services, or an InferenceService
  when KServe is installed), apply it server-side, prune what is no longer rendered,
  check that the stable version really answers V2 requests, and report status;
* rollouts: a new version starts the ``ModelRollout`` Temporal workflow on the
  namespace's worker (applied here too); the operator only starts it, signals aborts, and
  serves what the workflow publishes (approvals reach the workflow from their Approval
  objects: ``handlers.approval``);
* the workflow publishes into a ModelRollout object, which it alone writes; the operator
  follows them (a watch) and mirrors the current one into ``status.rollout``, which it
  alone writes: at once when one changes (a refresh), and at each reconcile;
* a change of ``status.rollout`` (no new generation) is work pending for the controller
  (``rollout_pending``), so a step is served as soon as the workflow takes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from aios.api import ModelDeployment, ModelRollout
from aios.api.model_rollout import rollout_name
from aios.connectors import serving as model_serving
from aios.operator.handlers.common import register, runtime
from aios.operator.reconcile import model_deployment as plan
from aios.operator.reconcile.conditions import ConditionUpdate, now_rfc3339
from aios.operator.reconcile.worker import render_worker
from aios.operator.runtime.controller import Context, KindSpec
from aios.operator.runtime.runtime import Runtime
from aios.operator.runtime.writer import Change
from aios.operator.settings import task_queue
from aios.workflows.rollout_io import ABORT_SIGNAL, WORKFLOW_NAME

RETRY_SECONDS = 3.0


async def temporal(memo: kopf.Memo) -> Client:
    """The operator's Temporal client (rollouts run on Temporal)."""
    process = runtime(memo)
    if not process.settings.temporal_address:
        raise kopf.TemporaryError("set AIOS_TEMPORAL_ADDRESS: rollouts run on Temporal", 30)
    return await process.temporal()


async def reconcile(md: ModelDeployment, ctx: Context) -> list[ConditionUpdate]:
    """From the object as stored now (``register`` reads it), with its status written
    before returning."""
    meta = md.metadata
    namespace = meta["namespace"]
    await ctx.writer.patch(meta["uid"], mirror(ctx.memo), subresource="status")
    md = stored(md, ctx)
    action = plan.rollout_action(md)
    if action.record:
        md = await record_rollout(md, ctx)
        action = plan.rollout_action(md)
    kserve = await runtime(ctx.memo).children.served(plan.INFERENCE_SERVICES_CRD)
    serving = plan.serving(md)
    settings = runtime(ctx.memo).settings
    kinds: tuple[tuple[str, str], ...]
    if kserve:
        children = plan.render_kserve(md, settings)
        kinds = (*plan.CHILD_KINDS, *plan.KSERVE_KINDS)  # raw children go when KServe comes
    else:
        children = plan.render_raw(md, settings)
        kinds = plan.CHILD_KINDS
    workers = []
    if action.start:
        worker = runtime(ctx.memo).worker_principal(namespace)
        await runtime(ctx.memo).kafka_user(worker)
        workers = render_worker(worker, settings)
    children_api = runtime(ctx.memo).children
    await children_api.apply([*workers, *children])
    await children_api.prune(ctx.body, kinds, children)
    await drive_rollout(md, action, namespace, ctx)

    ready, why = await stable_ready(md, serving, namespace, kserve, ctx)
    candidate = await candidate_ready(md, serving, namespace, kserve, ctx)
    ctx.status.update(plan.serving_status(md, serving, namespace, kserve, ready, candidate))
    ctx.status.update(plan.observed_rollout(md, now_rfc3339()))
    return [
        *plan.serving_conditions(md, serving, ready, why),
        *plan.rollout_conditions(md),
    ]


async def record_rollout(md: ModelDeployment, ctx: Context) -> ModelDeployment:
    """Write the new rollout's record before its workflow starts, so an operator that
    restarts in between finds it and starts the same workflow, not another. Computed from
    the object as stored (the writer reads it again if it changed meanwhile), so a record
    is written once; returns the object as it now is."""
    namespace, uid = md.metadata["namespace"], md.metadata["uid"]

    def change(current: Mapping[str, Any]) -> dict[str, Any] | None:
        stored = ModelDeployment.model_validate(dict(current))
        if not plan.rollout_action(stored).record:
            return None  # recorded meanwhile
        record = plan.new_rollout(stored, namespace)
        wire = record.model_dump(mode="json", by_alias=True, exclude_none=True)
        # Replace the previous rollout's record whole: no stale approval or steps carry over.
        rollout = {**wire, "approval": None}
        return {"status": {"rollout": rollout, "observedRolloutRevision": 0}}

    await ctx.writer.patch(uid, change, subresource="status")
    return stored(md, ctx)


def stored(md: ModelDeployment, ctx: Context) -> ModelDeployment:
    """The object as the store has it now (after a write of this reconcile's own)."""
    latest = ctx.writer.store.get(md.metadata["uid"])
    return ModelDeployment.model_validate(latest) if latest is not None else md


def mirror(memo: kopf.Memo) -> Change:
    """``status.rollout`` as its workflow last published it in its ModelRollout (nothing
    to write when it says that already)."""
    rollouts = runtime(memo).rollouts

    def change(current: Mapping[str, Any]) -> dict[str, Any] | None:
        # Read raw first: this runs on every refresh tick, and mostly finds nothing new.
        recorded = (current.get("status") or {}).get("rollout") or {}
        if not recorded.get("version"):
            return None
        meta = current["metadata"]
        found = rollouts.named(meta["namespace"], rollout_name(meta["name"], recorded["version"]))
        if found is None or (found.get("status") or {}).get("rollout") == recorded:
            return None
        md = ModelDeployment.model_validate(dict(current))
        published = plan.published_rollout(md, ModelRollout.model_validate(found))
        if published is None:
            return None
        return {"status": {"rollout": published.model_dump(mode="json", by_alias=True)}}

    return change


async def refresh(ctx: Context) -> Change | None:
    return mirror(ctx.memo)


class RolloutMirror:
    """The ModelRollouts as the watch has them (what the rollout workflows published); a
    published one refreshes its ModelDeployment's status now."""

    def __init__(self, process: Runtime) -> None:
        self.process = process

    def observe(self, event_type: str | None, raw: dict[str, Any]) -> None:
        meta = raw["metadata"]
        if event_type == "DELETED":
            self.process.rollouts.forget(meta["uid"])
            return
        self.process.rollouts.observe(raw)
        controller = self.process.controllers.get(ModelDeployment.crd.plural)
        if controller is not None:
            controller.report(meta["namespace"], raw["spec"]["modelDeployment"])

    def relisted(self, namespace: str | None, uids: set[str]) -> None:
        for raw in self.process.rollouts.missing(namespace, uids):
            self.observe("DELETED", raw)


@kopf.on.startup()
async def mirror_rollouts(memo: kopf.Memo, **_: Any) -> None:
    process = runtime(memo)
    if process.watching is not None:
        process.watching.feed(ModelRollout.crd.plural, RolloutMirror(process))


async def drive_rollout(
    md: ModelDeployment, action: plan.RolloutAction, namespace: str, ctx: Context
) -> None:
    """Start the workflow (a no-op when it exists), or signal it to abort."""
    rollout = md.status.rollout if md.status else None
    if rollout is None or not (action.start or action.abort):
        return
    temporal_client = await temporal(ctx.memo)
    if action.abort:
        handle = temporal_client.get_workflow_handle(rollout.workflow_id)
        try:
            await handle.signal(ABORT_SIGNAL, action.abort)
        except RPCError as error:  # it ended meanwhile; its last publication says how
            ctx.logger.info("could not abort %s: %s", rollout.workflow_id, error)
        return
    try:
        await temporal_client.start_workflow(
            WORKFLOW_NAME,
            plan.rollout_input(md, rollout, namespace),
            id=rollout.workflow_id,
            task_queue=task_queue(namespace),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        ctx.logger.info("started rollout workflow %s", rollout.workflow_id)
    except WorkflowAlreadyStartedError:
        pass


async def stable_ready(
    md: ModelDeployment, serving: plan.Serving, namespace: str, kserve: bool, ctx: Context
) -> tuple[bool, str]:
    """Whether the stable version answers; if not, why (the runtime's own words)."""
    if kserve:
        found = await runtime(ctx.memo).children.get(
            plan.KSERVE_VERSION, "InferenceService", md.metadata["name"], namespace
        )
        conditions = ((found or {}).get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        if ready is not None and ready.get("status") == "True":
            return True, ""
        return False, (ready or {}).get("message") or "the InferenceService is not ready yet"
    http, _ = plan.endpoints(md.metadata["name"], namespace, "stable")
    address = await own_service_address(http, ctx)
    if address is None:
        return False, f"the Service {namespace}/{md.metadata['name']} does not exist yet"
    if await model_serving.ready(address, serving.stable.name):
        return True, ""
    api = runtime(ctx.memo).api
    return False, await model_serving.explain(api, http, address, serving.stable.name)


async def candidate_ready(
    md: ModelDeployment, serving: plan.Serving, namespace: str, kserve: bool, ctx: Context
) -> bool:
    """Whether the canary or shadow answers, through its track's Service (KServe's alike),
    at its cluster IP: the runners about to send it traffic ask its name, which must not
    have been asked (and remembered missing) before the cluster's DNS had it."""
    if serving.candidate is None:
        return False
    name = md.metadata["name"]
    if kserve:  # KServe's Service, not the operator's: asked of the API server
        http, _ = plan.kserve_endpoints(plan.service_name(name, serving.track), namespace)
        api = runtime(ctx.memo).api
        address = await asyncio.to_thread(model_serving.cluster_address, api, http)
    else:
        http, _ = plan.endpoints(name, namespace, serving.track)
        address = await own_service_address(http, ctx)
    return address is not None and await model_serving.ready(address, serving.candidate.name)


async def own_service_address(http: str, ctx: Context) -> str | None:
    """``http`` (``http://name.ns.svc:port``, a Service the operator applies) at the
    Service's cluster IP, as the watch holds it; None while it does not exist."""
    namespace, name = model_serving.service_of(http)
    service = await runtime(ctx.memo).children.get("v1", "Service", name, namespace)
    if service is None:
        return None
    return model_serving.at_cluster_ip(http, service["spec"].get("clusterIP"))


async def finalize(md: ModelDeployment, ctx: Context) -> None:
    """A rollout in flight ends with its object: its workflow is terminated."""
    rollout = (ctx.body.get("status") or {}).get("rollout") or {}
    if rollout.get("phase") not in plan.ACTIVE:
        return
    handle = (await temporal(ctx.memo)).get_workflow_handle(rollout["workflowId"])
    try:
        await handle.terminate(reason="the ModelDeployment was deleted")
    except RPCError as error:  # it ended meanwhile
        ctx.logger.info("rollout %s already ended: %s", rollout["workflowId"], error)


register(
    KindSpec(
        ModelDeployment,
        reconcile,
        finalize,
        refresh=refresh,
        pending=plan.rollout_pending,
        retry_when=plan.reconcile_unconverged,
        retry_interval=RETRY_SECONDS,
    )
)
