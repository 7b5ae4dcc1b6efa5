"""AutomationIntent: Kafka topics, the intent runner, the namespace's worker; its runtime
status (Degraded, counts, consumer lag) from the runners' heartbeats and Kafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError
from temporalio.service import RPCError

from aios.api import AutomationIntent, EdgeGateway
from aios.api.runner import HEARTBEAT_TOPIC, PartitionReport, runner_name
from aios.connectors import kafka, opa
from aios.connectors.topics import TopicPlan
from aios.operator import metrics
from aios.operator.handlers.common import register, runtime
from aios.operator.reconcile.automation_intent import (
    RUNNER_KINDS,
    Heartbeat,
    counts,
    live,
    may_have_acted,
    owned_topics,
    ready,
    render_runner,
    reported_lag,
    retention_ms,
    retention_violation,
    runner_config,
    runtime_conditions,
    source_topic_specs,
    source_topics,
    topic_names,
    workload_condition,
)
from aios.operator.reconcile.autoscaling import (
    KEDA_API,
    SCALED_OBJECTS_CRD,
    SCALER_KINDS,
    may_have_scaler,
    replicas,
    scaling_condition,
    wants_autoscaler,
)
from aios.operator.reconcile.conditions import ConditionUpdate, merge_conditions, now_rfc3339
from aios.operator.reconcile.kafka_access import runner_principal
from aios.operator.reconcile.worker import WORKER, render_worker
from aios.operator.runtime.controller import Context, Controller, KindSpec, status_change
from aios.operator.runtime.writer import Change
from aios.operator.streams import Heartbeats
from aios.workflows.action_io import INTENT, OUTCOME

HEARTBEAT_WINDOW_SECONDS = 30.0
GROUPS_FRESH_SECONDS = 5.0
"""How long one listing of Kafka's consumer groups answers for every intent's refresh."""


class IntentState:
    """Shared by every intent's handlers: the runners' heartbeats, when each intent's
    counts were last looked up, and Kafka's consumer groups. Counts, consumer lag and
    action outcomes are refreshed at most every ``count_interval`` seconds per intent; a
    heartbeat arriving, or missed, refreshes the conditions at once."""

    def __init__(
        self, bootstrap: str, controllers: Mapping[str, Controller], count_interval: float
    ) -> None:
        self.counted: dict[str, float] = {}
        self.count_interval = count_interval
        self._controllers = controllers
        self.heartbeats = Heartbeats(bootstrap, HEARTBEAT_TOPIC, self._report, self._expires)
        self._groups: set[str] = set()
        self._groups_listed = -GROUPS_FRESH_SECONDS
        self._groups_lock = asyncio.Lock()

    def _report(self, key: str) -> None:
        """The intent's Degraded follows its runners' heartbeats: refresh it now."""
        controller = self._controllers.get(AutomationIntent.crd.plural)
        parts = key.split("/", 2)  # <namespace>/<intent>/<pod>
        if controller is not None and len(parts) == 3:
            controller.report(parts[0], parts[1])

    @staticmethod
    def _expires(value: dict[str, Any]) -> datetime | None:
        try:
            sent = datetime.fromisoformat(value["time"])
        except (KeyError, TypeError, ValueError):
            return None
        return sent + timedelta(seconds=HEARTBEAT_WINDOW_SECONDS)

    async def group_exists(self, admin: AdminClient, group: str) -> bool:
        """Whether Kafka knows ``group``, from one listing shared by the refreshes of the
        next ``GROUPS_FRESH_SECONDS`` (thousands of intents, one request)."""
        async with self._groups_lock:
            if time.monotonic() - self._groups_listed >= GROUPS_FRESH_SECONDS:
                self._groups = await asyncio.to_thread(kafka.consumer_groups, admin)
                self._groups_listed = time.monotonic()
        return group in self._groups

    def counts_due(self, uid: str) -> bool:
        """Whether the intent's counts are due a lookup (and if so, they count as looked up)."""
        now = time.monotonic()
        if now - self.counted.get(uid, -self.count_interval) < self.count_interval:
            return False
        self.counted[uid] = now
        return True


@kopf.on.startup()
async def follow_runners(memo: kopf.Memo, **_: Any) -> None:
    """Read the runners' heartbeats into memory (the topic is created if missing)."""
    process = runtime(memo)
    spec = kafka.TopicSpec(
        HEARTBEAT_TOPIC, 3, {"cleanup.policy": "compact,delete", "retention.ms": "3600000"}
    )
    await asyncio.to_thread(kafka.ensure_topics, process.kafka_admin, [spec])
    settings = process.settings
    memo.intents = IntentState(
        settings.kafka_bootstrap, process.controllers, settings.status_refresh_interval
    )


@kopf.on.cleanup()
async def stop_following(memo: kopf.Memo, **_: Any) -> None:
    intents: IntentState | None = getattr(memo, "intents", None)
    if intents is not None:
        await asyncio.to_thread(intents.heartbeats.stop)


def heartbeats(memo: kopf.Memo, namespace: str, name: str) -> list[Heartbeat]:
    intents: IntentState | None = getattr(memo, "intents", None)
    found = intents.heartbeats.records.get(f"{namespace}/{name}/") if intents else {}
    beats = [
        Heartbeat(
            pod=v.get("pod", ""),
            generation=int(v.get("generation", 0)),
            time=datetime.fromisoformat(v["time"]),
            models=v.get("models") or {},
            partitions=progress(v.get("partitions")),
            paused=bool(v.get("paused")),
        )
        for v in found.values()
        if "time" in v
    ]
    return live(beats, datetime.now(UTC), HEARTBEAT_WINDOW_SECONDS)


def progress(reported: Any) -> dict[str, PartitionReport]:
    """The partitions a heartbeat reports; what does not parse counts as not reported."""
    if not isinstance(reported, dict):
        return {}
    try:
        return {key: PartitionReport.model_validate(value) for key, value in reported.items()}
    except ValidationError:
        return {}


def gateways(memo: kopf.Memo, namespace: str) -> list[dict[str, Any]]:
    """The namespace's EdgeGateways, as the watch has them."""
    return runtime(memo).store(EdgeGateway.crd.plural).in_namespace(namespace)


def ensure_intent_topics(
    topics_admin: AdminClient, owned: list[kafka.TopicSpec], sources: list[kafka.TopicSpec]
) -> TopicPlan:
    """Owned topics match the spec; sources are only created when missing."""
    plan = kafka.ensure_topics(topics_admin, owned)
    existing = kafka.describe_topics(topics_admin, [t.name for t in sources])
    missing = TopicPlan(create=tuple(t for t in sources if t.name not in existing))
    kafka.apply_topic_plan(topics_admin, missing)
    return TopicPlan(plan.create + missing.create, plan.grow, plan.reconfigure, plan.cannot_shrink)


async def reconcile(intent: AutomationIntent, ctx: Context) -> list[ConditionUpdate]:
    meta = intent.metadata
    namespace, name = meta["namespace"], meta["name"]
    settings = runtime(ctx.memo).settings
    selected = (
        gateways(ctx.memo, namespace)
        if any(s.edge_gateway_selector for s in intent.spec.sources)
        else []
    )
    sources = source_topics(intent, selected)
    names = topic_names(namespace, name, sources)
    ctx.status["topics"] = {
        "source": ", ".join(sources) or None,
        "decisions": names.decisions,
        "actions": names.actions,
        "deadLetters": names.dead_letters,
        "state": names.state,
    }
    conditions: list[ConditionUpdate] = []
    if not sources:
        conditions.append(
            ConditionUpdate(
                "TopicsReady",
                "False",
                "NoSource",
                "No EdgeGateway in the namespace matches the source selectors.",
            )
        )
        return [*conditions, ready(conditions)]

    cap = None
    if intent.spec.data_policy.personal_data:
        cap = await opa.max_retention_days(settings.opa_url, namespace)
    violation = retention_violation(intent, namespace, cap)
    if violation is not None:
        conditions.append(ConditionUpdate("TopicsReady", "False", "PolicyViolation", violation))
        return [*conditions, ConditionUpdate("Ready", "False", "PolicyViolation", violation)]
    retention = retention_ms(intent, cap)
    plan = await asyncio.to_thread(
        ensure_intent_topics,
        runtime(ctx.memo).kafka_admin,
        owned_topics(intent, names, retention),
        source_topic_specs(intent, sources, retention),
    )
    hours = retention // 3_600_000
    topics_message = f"{len(sources)} source(s); decisions, actions, dead letters kept {hours} h."
    if plan.cannot_shrink:
        topics_message += " Partitions cannot shrink: " + ", ".join(
            f"{t} keeps {n}" for t, n, _ in plan.cannot_shrink
        )
    conditions.append(ConditionUpdate("TopicsReady", "True", "TopicsReconciled", topics_message))

    children_api = runtime(ctx.memo).children
    keda = may_have_scaler(intent, ctx.body.get("status") or {}) and await children_api.served(
        SCALED_OBJECTS_CRD
    )
    children = render_runner(intent, settings, sources, keda)
    worker = runtime(ctx.memo).worker_principal(namespace)
    await runtime(ctx.memo).kafka_user(worker)
    await runtime(ctx.memo).kafka_user(
        runner_principal(runner_config(intent, sources, settings.site))
    )
    # Pruned first: a ScaledObject no longer rendered (paused, fixed replicas) must not
    # scale the runners again after they are applied.
    kinds = [*RUNNER_KINDS, *SCALER_KINDS] if keda else RUNNER_KINDS
    await children_api.prune(ctx.body, kinds, children)
    await children_api.apply([*render_worker(worker, settings), *children])
    runner, scaled = await scaling_state(ctx.memo, intent, keda)
    worker_deployment = await children_api.get("apps/v1", "Deployment", WORKER, namespace)
    runners = replicas(runner)
    conditions += [
        workload_condition("RunnerReady", runner),
        workload_condition("WorkflowsReady", worker_deployment),
        scaling_condition(intent, keda, scaled, runners),
    ]
    ctx.status["runners"] = runners
    beats = heartbeats(ctx.memo, namespace, name)
    conditions += runtime_conditions(intent, beats)
    ctx.status["counts"] = counts(beats)  # {} when none reports: the stored counts stay
    return [*conditions, ready(conditions)]


async def scaling_state(
    memo: kopf.Memo, intent: AutomationIntent, keda: bool
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The runners' StatefulSet, and KEDA's ScaledObject of it when one is rendered."""
    namespace, name = intent.metadata["namespace"], intent.metadata["name"]
    children_api = runtime(memo).children
    runner = await children_api.get("apps/v1", "StatefulSet", runner_name(name), namespace)
    scaled = None
    if keda and wants_autoscaler(intent):
        scaled = await children_api.get(KEDA_API, "ScaledObject", runner_name(name), namespace)
    return runner, scaled


async def finalize(intent: AutomationIntent, ctx: Context) -> None:
    """Topics go only with ``deletePolicy: Delete`` (losing them by accident hurts)."""
    intents: IntentState = ctx.memo.intents
    intents.counted.pop(ctx.body.metadata["uid"], None)
    for outcome in metrics.ACTION_OUTCOMES:
        metrics.INTENT_ACTIONS.remove(
            f"{ctx.body.metadata['namespace']}/{ctx.body.metadata['name']}", outcome
        )
    stored = AutomationIntent.model_validate(dict(ctx.body))  # ``intent`` has no metadata
    site = runtime(ctx.memo).settings.site
    await runtime(ctx.memo).remove_kafka_user(runner_principal(runner_config(stored, [], site)))
    if intent.spec.topics.delete_policy != "Delete":
        return
    names = topic_names(ctx.body.metadata["namespace"], ctx.body.metadata["name"], [])
    await asyncio.to_thread(
        kafka.delete_topics,
        runtime(ctx.memo).kafka_admin,
        [names.decisions, names.actions, names.dead_letters, names.state],
    )


async def consumer_lag(ctx: Context, group: str, beats: list[Heartbeat]) -> int | None:
    """As the live runners report it; without them (a paused intent, runners down) from
    Kafka, and only for a group Kafka knows: none that never committed has a lag."""
    reported = reported_lag(beats)
    if reported is not None:
        return reported
    process = runtime(ctx.memo)
    intents: IntentState = ctx.memo.intents
    if not await intents.group_exists(process.kafka_admin, group):
        return None
    sources = (ctx.body.status["topics"].get("source") or "").split(", ")
    return await asyncio.to_thread(
        kafka.consumer_lag, process.settings.kafka_bootstrap, group, [s for s in sources if s]
    )


async def action_outcomes(memo: kopf.Memo, namespace: str, name: str) -> dict[str, int]:
    """Executed and human-rejected (overridden) actions, from Temporal's visibility: durable,
    unlike a runner's counters. Empty while Temporal cannot answer."""
    temporal = await runtime(memo).temporal()
    intent = f"{INTENT.name} = '{namespace}/{name}'"
    try:
        executed = await temporal.count_workflows(f"{intent} AND {OUTCOME.name} = 'executed'")
        rejected = await temporal.count_workflows(f"{intent} AND {OUTCOME.name} = 'rejected'")
    except (RPCError, RuntimeError):
        return {}
    metrics.INTENT_ACTIONS.labels(f"{namespace}/{name}", "executed").set(executed.count)
    metrics.INTENT_ACTIONS.labels(f"{namespace}/{name}", "overridden").set(rejected.count)
    return {"actions": executed.count, "overrides": rejected.count}


async def refresh(ctx: Context) -> Change | None:
    """Between reconciles: Degraded as soon as the runners' heartbeats change it; counts,
    consumer lag and action outcomes at most every ``status_refresh_interval``."""
    body = ctx.body
    if not (body.get("status") or {}).get("topics"):
        return None  # not reconciled yet
    namespace, name = body.metadata["namespace"], body.metadata["name"]
    intent = AutomationIntent.model_validate(
        {"metadata": dict(body.metadata), "spec": dict(body.spec)}
    )
    beats = heartbeats(ctx.memo, namespace, name)
    runtime_updates = runtime_conditions(intent, beats)
    counted: dict[str, Any] = {}
    intents: IntentState = ctx.memo.intents
    if intents.counts_due(body.metadata["uid"]):
        lag = await consumer_lag(ctx, runner_config(intent, ["-"]).consumer_group, beats)
        outcomes = (
            await action_outcomes(ctx.memo, namespace, name)
            if may_have_acted(beats, body.status.get("counts") or {})
            else {}
        )
        counted = {"counts": {**counts(beats), **outcomes}, "consumerLag": lag}
        if wants_autoscaler(intent):  # the autoscaler moves the runners between reconciles
            keda = await runtime(ctx.memo).children.served(SCALED_OBJECTS_CRD)
            runner, scaled = await scaling_state(ctx.memo, intent, keda)
            runners = replicas(runner)
            runtime_updates.append(scaling_condition(intent, keda, scaled, runners))
            counted["runners"] = runners

    def status(current: Mapping[str, Any]) -> dict[str, Any]:
        stored = current.get("status") or {}
        generation = int(stored.get("observedGeneration") or 0)
        conditions = stored.get("conditions") or []
        merged = merge_conditions(conditions, runtime_updates, generation, now_rfc3339())
        return {**counted, "conditions": merged}

    return status_change(status)


register(
    KindSpec(
        AutomationIntent,
        reconcile,
        finalize,
        refresh,
        refresh_interval=lambda settings: settings.status_refresh_interval,
    )
)
