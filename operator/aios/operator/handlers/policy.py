"""Policy: load into OPA, unload on delete, audit existing objects, run the audit appender.

* reconcile: the parameters, the library module or the Policy's own module, and its
  registry entry are written to OPA; ``Compiled`` / ``Loaded`` / ``Ready`` say how it went, with
  OPA's message and line when the Rego is wrong;
* a timer per Policy re-loads it if OPA lost it (OPA keeps modules in memory) and audits
  the existing objects in its scope, writing a bounded sample of violations and their count;
* at startup the operator loads the ``aios.system`` entry point and keeps it loaded, and
  starts the audit ``Appender`` (the single writer of the hash chain), which signs the
  chain's head into a ConfigMap of the operator's namespace when a signing key is mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterable, Mapping
from functools import cache
from itertools import chain
from pathlib import Path
from typing import Any, get_args

import kopf

from aios.api import PLURALS, Policy
from aios.api.policy import ScopeKind
from aios.connectors import opa
from aios.connectors.audit import LOG_TOPIC, Appender, AuditTail
from aios.connectors.audit_checkpoint import (
    SIGNING_KEY_ENV,
    Checkpointer,
    ConfigMapStore,
    FileSigner,
)
from aios.connectors.kafka import BOOTSTRAP_ENV
from aios.operator.audit import record
from aios.operator.handlers.common import register, runtime
from aios.operator.reconcile import policy as plan
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.runtime.controller import Context, KindSpec
from aios.operator.runtime.runtime import Runtime
from aios.operator.runtime.store import Store
from aios.operator.runtime.writer import Change
from aios.operator.settings import OperatorSettings

SYSTEM_CHECK_SECONDS = 30.0
LOOK_BACK_FRESH_SECONDS = 5.0
"""The audit log's tail, once read, answers every Policy looking back for this long."""


def opa_url(memo: kopf.Memo) -> str:
    url = runtime(memo).settings.opa_url
    if not url:
        raise kopf.PermanentError(f"set {opa.OPA_URL_ENV}: the operator loads Policies into OPA")
    return url


@cache
def library() -> dict[str, str]:
    return opa.library_modules(opa.library_dir())


@cache
def system_rego() -> str:
    return (opa.library_dir() / "system" / "system.rego").read_text()


async def ensure_system(url: str) -> None:
    """Load ``aios.system`` unless OPA already has exactly this text."""
    await opa.ensure_module(url, plan.SYSTEM_MODULE_ID, system_rego())


async def load(url: str, load_plan: plan.LoadPlan, modules: opa.LoadedModules) -> None:
    """Write in dependency order (modules, then data, then the registry entry that makes
    the Policy count), so nothing half-loaded is ever enforced; a module OPA holds already
    (a load retried after a timeout, a library module another Policy loaded) is not
    compiled again."""
    library = [] if load_plan.library is None else [load_plan.library]
    await modules.ensure(url, [(plan.SYSTEM_MODULE_ID, system_rego()), *library])
    await opa.put_data(url, load_plan.parameters_path, load_plan.parameters)
    for path in load_plan.scope_paths:  # before the registry entry that makes them count
        await opa.put_data(url, path, {})
    previous = await opa.get_data(url, load_plan.registry_path) or {}
    for kind in set(previous.get("kinds") or ()) - set(load_plan.registry["kinds"]):
        await opa.delete_data(url, plan.scope_path(kind, load_plan.namespace, load_plan.name))
    if load_plan.rego is None:
        await opa.put_data(url, load_plan.registry_path, load_plan.registry)
        # a module of its own from when it was inline Rego (or from an earlier aios); asked
        # first, as OPA compiles every module to delete one, even one it does not have
        if await opa.get_module(url, load_plan.module_id) is not None:
            await opa.delete_module(url, load_plan.module_id)
    else:
        await opa.ensure_module(url, load_plan.module_id, load_plan.rego)
        await opa.put_data(url, load_plan.registry_path, load_plan.registry)


async def is_loaded(url: str, load_plan: plan.LoadPlan) -> bool:
    """Whether OPA holds this plan: its registry entry is written last, and OPA keeps
    everything in memory (a restart loses it all)."""
    return bool(await opa.get_data(url, load_plan.registry_path) == load_plan.registry)


def _identity(body: Mapping[str, Any]) -> tuple[str, str, int]:
    metadata = body["metadata"]
    return metadata["namespace"], metadata["name"], int(metadata.get("generation") or 0)


async def reconcile(policy: Policy, ctx: Context) -> list[ConditionUpdate]:
    namespace, name, generation = _identity(ctx.body)
    url = opa_url(ctx.memo)
    details: dict[str, Any] = {"generation": generation, "enforcement": policy.spec.enforcement}
    try:
        load_plan = plan.load_plan(namespace, name, policy, library())
    except plan.UnknownModule as error:
        updates = plan.rejected_conditions(
            "UnknownModule", str(error), await _loaded(url, namespace, name)
        )
    else:
        details["module"] = hashlib.sha256(load_plan.source.encode()).hexdigest()
        try:
            await load(url, load_plan, runtime(ctx.memo).opa_modules)
            updates = plan.loaded_conditions(load_plan)
            ctx.status["loadedPath"] = load_plan.decisions_path
        except opa.RegoError as error:
            message = plan.user_lines(str(error), load_plan.line_offset)
            updates = plan.rejected_conditions(
                "RegoError", message, await _loaded(url, namespace, name)
            )
        except opa.PolicyUnavailable as error:
            updates = plan.unavailable_conditions(str(error))
    if not plan.already_reported(ctx.body.get("status") or {}, generation, updates):
        ready = next(u for u in updates if u.type == "Ready")
        details.update(outcome=ready.reason, message=ready.message)
        await record("reconcile", f"Policy {namespace}/{name}", details, actor="aios-operator")
    return updates


async def _loaded(url: str, namespace: str, name: str) -> bool:
    """Whether an earlier version of the Policy is enforced (its registry entry)."""
    return await opa.get_data(url, plan.registry_path(namespace, name)) is not None


async def finalize(policy: Policy, ctx: Context) -> None:
    namespace, name, generation = _identity(ctx.body)
    url = opa_url(ctx.memo)
    await opa.delete_data(url, plan.registry_path(namespace, name))
    for kind in get_args(ScopeKind):
        await opa.delete_data(url, plan.scope_path(kind, namespace, name))
    await opa.delete_module(url, plan.module_id(namespace, name))
    await opa.delete_data(url, plan.parameters_path(namespace, name))
    await record(
        "reconcile",
        f"Policy {namespace}/{name}",
        {"generation": generation, "outcome": "Unloaded"},
        actor="aios-operator",
    )


# -- periodic audit of existing objects ----------------------------------------------------


def _reviews(
    memo: kopf.Memo, kinds: list[str], namespaces: list[str] | None
) -> list[dict[str, Any]]:
    """What the Policy audits, from the watch's stores (no LIST per audit): the objects of
    ``namespaces`` (``None``: of every namespace)."""
    process = runtime(memo)

    def held(store: Store) -> Iterable[dict[str, Any]]:
        if namespaces is None:
            return store
        return chain.from_iterable(store.in_namespace(ns) for ns in namespaces)

    return [
        plan.review({**item, "kind": kind}, "AUDIT")
        for kind in kinds
        if kind in plan.AUDITED_KINDS  # runtime Actions are checked when they run
        for item in held(process.store(PLURALS[kind]))
    ]


async def audit_existing(ctx: Context) -> Change | None:
    """Load the Policy if OPA lacks it (OPA restarted), then evaluate the objects in its
    scope: the violations' sample and count change only when the findings do."""
    body = ctx.body
    namespace, name, _generation = _identity(body)
    url = opa_url(ctx.memo)
    policy = Policy.model_validate(dict(body))
    try:
        load_plan = plan.load_plan(namespace, name, policy, library())
        if not await is_loaded(url, load_plan):
            await load(url, load_plan, runtime(ctx.memo).opa_modules)
    except (plan.UnknownModule, opa.RegoError):
        return None  # the reconcile reports it in the conditions
    registry = load_plan.registry
    reviews = _reviews(ctx.memo, registry["kinds"], plan.literal_namespaces(registry["namespaces"]))
    findings = await opa.audit_objects(url, namespace, name, reviews)
    desired = {
        **plan.violations_status(reviews, findings),
        "loadedPath": load_plan.decisions_path,
        "lookBack": await _look_back(ctx.memo, url, namespace, name)
        if plan.looks_back(policy)
        else None,
    }
    return lambda _: {"status": desired}


async def _look_back(memo: kopf.Memo, url: str, namespace: str, name: str) -> dict[str, Any] | None:
    """What the dry-run Policy would have denied of the latest actions, asked about the
    documents OPA decided on when they ran (their audit records keep them)."""
    tail: AuditTail | None = memo.get("audit_tail")
    if tail is None:
        return None  # no audit log to look back at
    records = await asyncio.to_thread(tail.latest)
    actions = plan.past_actions((r.time, r.details) for r in records if r.kind == "action-step")
    covered, findings = await opa.look_back(url, namespace, name, [a.asked for a in actions])
    return plan.look_back_status(actions, covered, findings)


def audit_interval(settings: OperatorSettings) -> float:
    return settings.policy_audit_interval


register(
    KindSpec(
        Policy,
        reconcile=reconcile,
        finalize=finalize,
        refresh=audit_existing,
        refresh_interval=audit_interval,
    )
)


# -- operator-wide: the system entry point and the audit appender ---------------------------


async def _keep_system_loaded(url: str, logger: kopf.Logger) -> None:
    """OPA keeps modules in memory; after an OPA restart, put the entry point back."""
    while True:
        try:
            await ensure_system(url)
        except (opa.PolicyUnavailable, opa.RegoError) as error:
            logger.warning(f"the aios system policy is not loaded: {error}")
        await asyncio.sleep(SYSTEM_CHECK_SECONDS)


def checkpointer(process: Runtime, logger: kopf.Logger) -> Checkpointer | None:
    """Signs the chain's head into a ConfigMap of the operator's namespace, when a signing
    key is mounted."""
    settings = process.settings
    if not settings.audit_signing_key:
        logger.warning(
            f"{SIGNING_KEY_ENV} is not set: the audit chain is not checkpointed, so a "
            "truncated or re-chained log goes unnoticed"
        )
        return None
    return Checkpointer(
        LOG_TOPIC,
        FileSigner(Path(settings.audit_signing_key)),
        ConfigMapStore(process.api, settings.namespace),
        settings.audit_checkpoint_interval,
    )


@kopf.on.startup()
async def start_governance(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    process = runtime(memo)
    settings = process.settings
    memo.policy_system = asyncio.create_task(_keep_system_loaded(opa_url(memo), logger))
    if settings.kafka_bootstrap:
        audit_file = settings.audit_file
        memo.audit_appender = Appender(
            file=Path(audit_file) if audit_file else None,
            checkpoints=checkpointer(process, logger),
        ).start()
        memo.audit_tail = AuditTail(
            settings.kafka_bootstrap, plan.LOOK_BACK_RECORDS, fresh_for=LOOK_BACK_FRESH_SECONDS
        )
    else:
        logger.warning(f"{BOOTSTRAP_ENV} is not set: audit events are not chained")


@kopf.on.cleanup()
async def stop_governance(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("policy_system")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await opa.close_clients()
    appender = memo.get("audit_appender")
    if appender is not None:
        await asyncio.to_thread(appender.stop)
    tail: AuditTail | None = memo.get("audit_tail")
    if tail is not None:
        await asyncio.to_thread(tail.close)
