"""Policy: load into OPA, unload on delete, audit existing objects, run the audit appender.

* reconcile: the library module (if any), parameters, the Policy's module and its registry
  entry are written to OPA; ``Compiled`` / ``Loaded`` / ``Ready`` say how it went, with
  OPA's message and line when the Rego is wrong;
* a timer per Policy re-loads it if OPA lost it (OPA keeps modules in memory) and audits
  the existing objects in its scope, writing a bounded sample of violations and their count;
* at startup the operator loads the ``aios.system`` entry point and keeps it loaded, and
  starts the audit ``Appender`` (the single writer of the hash chain).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast

import kopf
from kubernetes import client, config

from aios.api import GROUP, KINDS, VERSION, Policy
from aios.connectors import opa
from aios.connectors.audit import Appender
from aios.connectors.kafka import BOOTSTRAP_ENV
from aios.operator.audit import record
from aios.operator.handlers.common import Context, register, write_status
from aios.operator.reconcile import policy as plan
from aios.operator.reconcile.conditions import ConditionUpdate

LIBRARY_ENV = "AIOS_POLICY_LIBRARY"
AUDIT_INTERVAL_ENV = "AIOS_POLICY_AUDIT_INTERVAL"
AUDIT_FILE_ENV = "AIOS_AUDIT_FILE"
SYSTEM_CHECK_SECONDS = 30.0


def opa_url() -> str:
    url = os.environ.get(opa.OPA_URL_ENV)
    if not url:
        raise kopf.PermanentError(f"set {opa.OPA_URL_ENV}: the operator loads Policies into OPA")
    return url


def library_dir() -> Path:
    """``policies/`` of this checkout, or ``$AIOS_POLICY_LIBRARY`` (e.g. a mounted ConfigMap)."""
    return Path(os.environ.get(LIBRARY_ENV) or Path(__file__).resolve().parents[4] / "policies")


@cache
def library() -> dict[str, str]:
    """Library modules by name (``policies/<name>.rego``, tests excluded)."""
    return {
        path.stem: path.read_text()
        for path in sorted(library_dir().glob("*.rego"))
        if not path.stem.endswith("_test")
    }


@cache
def system_rego() -> str:
    return (library_dir() / "system" / "system.rego").read_text()


async def ensure_system(url: str) -> None:
    """Load ``aios.system`` unless OPA already has exactly this text."""
    if await opa.get_module(url, plan.SYSTEM_MODULE_ID) != system_rego():
        await opa.load_module(url, plan.SYSTEM_MODULE_ID, system_rego())


async def load(url: str, load_plan: plan.LoadPlan) -> None:
    """Write in dependency order, so nothing half-loaded is ever enforced."""
    await ensure_system(url)
    if load_plan.library is not None:
        await opa.load_module(url, *load_plan.library)
    await opa.put_data(url, load_plan.parameters_path, load_plan.parameters)
    await opa.load_module(url, load_plan.module_id, load_plan.rego)
    await opa.put_data(url, load_plan.registry_path, load_plan.registry)


def _identity(body: Mapping[str, Any]) -> tuple[str, str, int]:
    metadata = body["metadata"]
    return metadata["namespace"], metadata["name"], int(metadata.get("generation") or 0)


async def reconcile(policy: Policy, ctx: Context) -> list[ConditionUpdate]:
    namespace, name, generation = _identity(ctx.body)
    url = opa_url()
    details: dict[str, Any] = {"generation": generation, "enforcement": policy.spec.enforcement}
    try:
        load_plan = plan.load_plan(namespace, name, policy, library())
    except plan.UnknownModule as error:
        updates = plan.rejected_conditions(
            "UnknownModule", str(error), await _loaded(url, namespace, name)
        )
    else:
        details["module"] = hashlib.sha256(load_plan.rego.encode()).hexdigest()
        try:
            await load(url, load_plan)
            updates = plan.loaded_conditions(load_plan)
            ctx.status["loadedPath"] = plan.data_path(namespace, name)
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
    return await opa.get_module(url, plan.module_id(namespace, name)) is not None


async def finalize(policy: Policy, ctx: Context) -> None:
    namespace, name, generation = _identity(ctx.body)
    url = opa_url()
    await opa.delete_data(url, plan.registry_path(namespace, name))
    await opa.delete_module(url, plan.module_id(namespace, name))
    await opa.delete_data(url, plan.parameters_path(namespace, name))
    await record(
        "reconcile",
        f"Policy {namespace}/{name}",
        {"generation": generation, "outcome": "Unloaded"},
        actor="aios-operator",
    )


register(Policy, reconcile=reconcile, finalize=finalize)


# -- periodic audit of existing objects ----------------------------------------------------


@cache
def _custom_objects() -> client.CustomObjectsApi:
    config.load_config()  # KUBECONFIG when set, else in-cluster
    return client.CustomObjectsApi()


PLURALS = {model.crd.kind: model.crd.plural for model in KINDS}


def _list_reviews(kinds: list[str]) -> list[dict[str, Any]]:
    reviews = []
    for kind in kinds:
        if kind not in plan.AUDITED_KINDS:
            continue  # runtime Actions are checked when they run
        listed = cast(
            dict[str, Any],
            _custom_objects().list_cluster_custom_object(GROUP, VERSION, PLURALS[kind]),
        )
        for item in listed.get("items", []):
            reviews.append(plan.review({**item, "kind": kind}, "AUDIT"))
    return reviews


@kopf.on.timer(
    GROUP,
    VERSION,
    Policy.crd.plural,
    id="audit-policy",
    interval=float(os.environ.get(AUDIT_INTERVAL_ENV, "60")),
    initial_delay=1.0,
)
async def audit_existing(body: kopf.Body, **_: Any) -> None:
    """Load the Policy if OPA lacks it (OPA restarted, or the reconcile has not run yet),
    then evaluate the objects in its scope."""
    if body.metadata.get("deletionTimestamp"):
        return  # finalize unloads it; loading it again here would leak it
    status = body.get("status") or {}
    namespace, name, _generation = _identity(body)
    url = opa_url()
    try:
        load_plan = plan.load_plan(namespace, name, Policy.model_validate(dict(body)), library())
        if await opa.get_module(url, load_plan.module_id) != load_plan.rego:
            await load(url, load_plan)
    except (plan.UnknownModule, opa.RegoError):
        return  # the reconcile reports it in the conditions
    reviews = await asyncio.to_thread(_list_reviews, load_plan.registry["kinds"])
    findings = await opa.audit_objects(url, namespace, name, reviews)
    desired = {
        **plan.violations_status(reviews, findings),
        "loadedPath": plan.data_path(namespace, name),
    }
    if any(status.get(key) != value for key, value in desired.items()):
        await write_status(Policy.crd.plural, body, lambda _: desired)


# -- operator-wide: the system entry point and the audit appender ---------------------------


async def _keep_system_loaded(logger: kopf.Logger) -> None:
    """OPA keeps modules in memory; after an OPA restart, put the entry point back."""
    while True:
        try:
            await ensure_system(opa_url())
        except (opa.PolicyUnavailable, opa.RegoError) as error:
            logger.warning(f"the aios system policy is not loaded: {error}")
        await asyncio.sleep(SYSTEM_CHECK_SECONDS)


@kopf.on.startup()
async def start_governance(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    memo.policy_system = asyncio.create_task(_keep_system_loaded(logger))
    if os.environ.get(BOOTSTRAP_ENV):
        audit_file = os.environ.get(AUDIT_FILE_ENV)
        memo.audit_appender = Appender(file=Path(audit_file) if audit_file else None).start()
    else:
        logger.warning(f"{BOOTSTRAP_ENV} is not set: audit events are not chained")


@kopf.on.cleanup()
async def stop_governance(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("policy_system")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    appender = memo.get("audit_appender")
    if appender is not None:
        await asyncio.to_thread(appender.stop)
