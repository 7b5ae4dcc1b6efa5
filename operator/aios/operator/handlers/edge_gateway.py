"""EdgeGateway: publish the compiled config record for the agents, keep the status in step
with their heartbeats (each one, and each one missed, refreshes it), and run a simulated
agent when the gateway asks for one.

Topics (``aios.edge.protocol``): ``aios.edge.config`` (compacted, key ``<ns>/<name>``),
``aios.edge.status`` (heartbeats, same key). Readings go to ``spec.sink.kafkaTopic``,
created here when missing (the intents that read it may create it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from confluent_kafka.admin import AdminClient
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aios.api import GROUP, VERSION, EdgeGateway
from aios.connectors import kafka
from aios.edge.protocol import (
    CONFIG_PARTITIONS,
    CONFIG_TOPIC,
    CONFIG_TOPIC_CONFIG,
    STATUS_PARTITIONS,
    STATUS_TOPIC,
    STATUS_TOPIC_CONFIG,
    AgentConfig,
    Heartbeat,
    config_partition,
    split_gateway_key,
)
from aios.operator import metrics
from aios.operator.audit import record
from aios.operator.handlers.common import register, runtime
from aios.operator.reconcile.acceptance import needs_reconcile
from aios.operator.reconcile.conditions import (
    ConditionUpdate,
    condition,
    is_true,
    merge_conditions,
    now_rfc3339,
)
from aios.operator.reconcile.edge_gateway import (
    compile_config,
    connected_until,
    gateway_principal,
    heartbeat_status,
    key_of,
    privacy_budget_per_window,
    render_agent_credentials,
    render_simulator,
    simulated_sensors,
    simulation_changed,
    status_changes,
)
from aios.operator.runtime.controller import (
    RECONCILE_ERROR,
    Context,
    Controller,
    KindSpec,
    status_change,
)
from aios.operator.runtime.writer import Change
from aios.operator.streams import Heartbeats

SINK_PARTITIONS = 6
SINK_CHECK_SECONDS = 300.0
"""How long a sink topic found to exist is trusted before it is looked up again: a lookup
costs a metadata and a config request, and a city has thousands of gateways."""
SIMULATOR_KINDS = [("apps/v1", "Deployment")]
SWEEP_RETRY_SECONDS = 10.0
LIST_PAGE = 500
LOG = logging.getLogger(__name__)


def parse_heartbeat(value: dict[str, Any]) -> Heartbeat | None:
    """An agent's heartbeat; None for one this operator cannot read."""
    try:
        return Heartbeat.model_validate(value)
    except ValueError:
        return None


class EdgeState:
    """Shared by every gateway's handlers (kopf gives each object a shallow memo copy)."""

    def __init__(
        self,
        bootstrap: str,
        admin: AdminClient,
        config_partitions: int,
        controllers: Mapping[str, Controller],
    ) -> None:
        self.producer = kafka.AcknowledgedProducer(kafka.producer(bootstrap, **{"linger.ms": 0}))
        self.admin = admin
        self.config_partitions = config_partitions
        self.published: dict[str, tuple[int, str]] = {}
        self.counters_written: dict[str, float] = {}
        self.sinks_seen: dict[str, float] = {}
        self._controllers = controllers
        self.heartbeats = Heartbeats(bootstrap, STATUS_TOPIC, self._report, self._expires)

    def _report(self, key: str) -> None:
        """The gateway's status follows its heartbeats: refresh it now."""
        controller = self._controllers.get(EdgeGateway.crd.plural)
        if controller is not None:
            controller.report(*split_gateway_key(key))

    @staticmethod
    def _expires(value: dict[str, Any]) -> datetime | None:
        heartbeat = parse_heartbeat(value)
        return connected_until(heartbeat) if heartbeat is not None else None

    def stop(self) -> None:
        self.heartbeats.stop()

    def heartbeat(self, key: str) -> Heartbeat | None:
        value = self.heartbeats.records.latest(key)
        return parse_heartbeat(value) if value else None

    def publish(self, key: str, value: bytes | None) -> None:
        """Produce to the key's partition and wait until Kafka has it (acks=all)."""
        partition = config_partition(key, self.config_partitions)
        try:
            self.producer.send(CONFIG_TOPIC, value, key.encode(), 30, partition)
        except kafka.NotDelivered as error:
            raise RuntimeError(f"config record for {key} not delivered: {error}") from error


def state(memo: kopf.Memo) -> EdgeState:
    edge: EdgeState = memo.edge
    return edge


@kopf.on.startup()
async def start_edge(memo: kopf.Memo, **_: Any) -> None:
    """Create the config and status topics if missing, follow the heartbeats."""
    bootstrap = runtime(memo).settings.kafka_bootstrap
    topics = [
        kafka.TopicSpec(CONFIG_TOPIC, CONFIG_PARTITIONS, CONFIG_TOPIC_CONFIG),
        kafka.TopicSpec(STATUS_TOPIC, STATUS_PARTITIONS, STATUS_TOPIC_CONFIG),
    ]
    admin = runtime(memo).kafka_admin
    await asyncio.to_thread(kafka.ensure_topics, admin, topics)
    partitions = await asyncio.to_thread(wait_for_leaders, admin, topics)
    memo.edge = EdgeState(bootstrap, admin, partitions[CONFIG_TOPIC], runtime(memo).controllers)
    memo.edge_sweep = asyncio.create_task(sweep_when_acting(memo))


def wait_for_leaders(
    admin: Any, topics: list[kafka.TopicSpec], timeout: float = 30
) -> dict[str, int]:
    """Until every partition of a new topic has a leader: metadata fetched while the broker
    still creates them lists only some, and both a heartbeat follower and the choice of a
    config partition would be wrong for good. Returns each topic's partition count (the
    config topic's is read once: its records are keyed to partitions, so it never grows)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=10)
        if all(
            t.name in metadata.topics
            and len(metadata.topics[t.name].partitions) >= t.partitions
            and all(p.leader >= 0 for p in metadata.topics[t.name].partitions.values())
            for t in topics
        ):
            return {t.name: len(metadata.topics[t.name].partitions) for t in topics}
        time.sleep(0.2)
    raise RuntimeError(f"topics {[t.name for t in topics]} have no leaders after {timeout}s")


@kopf.on.cleanup()
async def stop_edge(memo: kopf.Memo, **_: Any) -> None:
    sweeping: asyncio.Task[None] | None = getattr(memo, "edge_sweep", None)
    if sweeping is not None:
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping
    edge: EdgeState | None = getattr(memo, "edge", None)
    if edge is not None:
        await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(edge.producer.close, 30)


def ensure_sink(edge: EdgeState, topic: str) -> None:
    """Create the sink topic when missing; one found is trusted for SINK_CHECK_SECONDS."""
    seen = edge.sinks_seen.get(topic)
    if seen is not None and time.monotonic() - seen < SINK_CHECK_SECONDS:
        return
    if topic not in kafka.describe_topics(edge.admin, [topic]):
        kafka.ensure_topics(edge.admin, [kafka.TopicSpec(topic, SINK_PARTITIONS)])
    edge.sinks_seen[topic] = time.monotonic()


async def reconcile(gateway: EdgeGateway, ctx: Context) -> list[ConditionUpdate]:
    edge = state(ctx.memo)
    config: AgentConfig = compile_config(gateway)
    key = config.gateway
    if edge.published.get(key) != (config.generation, config.digest):
        await asyncio.to_thread(edge.publish, key, config.to_bytes())
        edge.published[key] = (config.generation, config.digest)
        await record(
            "edge-config",
            f"edgegateway/{key}",
            {"gateway": key, "configGeneration": config.generation, "filterChain": config.digest},
            actor="aios-operator",
            event_id=f"edge-config:{key}:{config.generation}:{config.digest}",
        )
        ctx.logger.info(f"published generation {config.generation} ({config.digest})")
    await asyncio.to_thread(ensure_sink, edge, config.sink.kafka_topic)
    settings = runtime(ctx.memo).settings
    children = render_simulator(ctx.body, settings)
    await runtime(ctx.memo).kafka_user(gateway_principal(ctx.body))
    secrets = render_agent_credentials(ctx.body, settings)
    children_api = runtime(ctx.memo).children
    await children_api.apply([*secrets, *children])
    await children_api.prune(ctx.body, SIMULATOR_KINDS, children)
    heartbeat = edge.heartbeat(key)
    observe(ctx.body, heartbeat)
    fields, conditions = heartbeat_status(
        config.generation, config.generation, heartbeat, datetime.now(UTC)
    )
    ctx.status.update(fields, simulatedSensors=simulated_sensors(ctx.body))
    edge.counters_written[key] = time.monotonic()
    return conditions


def observe(gateway: Mapping[str, Any], heartbeat: Heartbeat | None) -> None:
    """The gateway's metrics follow its agent's heartbeats."""
    if heartbeat is not None:
        budget = privacy_budget_per_window(gateway)
        metrics.observe_gateway(key_of(gateway), heartbeat, budget)


async def deleted(ctx: Context) -> None:
    """The gateway is gone: its config record gets a tombstone, its Kafka user goes, and
    so do its metrics."""
    metrics.forget_gateway(key_of(ctx.body))
    await asyncio.to_thread(withdraw, ctx.memo, key_of(ctx.body))
    await runtime(ctx.memo).remove_kafka_user(gateway_principal(ctx.body))


def withdraw(memo: kopf.Memo, key: str) -> None:
    """A tombstone for ``key``'s config record: compaction removes the record, agents keep
    their last config. A gateway created again under the same name may have had its record
    published just before: it is published again, after the tombstone."""
    edge = state(memo)
    edge.published.pop(key, None)
    edge.counters_written.pop(key, None)
    edge.publish(key, None)
    namespace, name = split_gateway_key(key)
    successor = runtime(memo).store(EdgeGateway.crd.plural).named(namespace, name)
    if successor is not None:
        config = compile_config(EdgeGateway.model_validate(successor))
        edge.publish(key, config.to_bytes())
        edge.published[key] = (config.generation, config.digest)


async def sweep_when_acting(memo: kopf.Memo) -> None:
    """Once this replica acts: tombstones for gateways deleted while no replica acted (the
    config topic's live keys with no gateway). Retried until it has run once."""
    process = runtime(memo)
    if process.leadership is not None:
        await process.leadership.acquired.wait()
    while True:
        try:
            swept = await asyncio.to_thread(sweep, memo)
        except Exception as error:  # Kafka or the API server away: again later
            LOG.warning("sweeping the config records of deleted gateways failed: %s", error)
            await asyncio.sleep(SWEEP_RETRY_SECONDS)
            continue
        LOG.info("swept the config records of %d deleted gateways", swept)
        return


def sweep(memo: kopf.Memo) -> int:
    """Withdraw each live config record whose gateway the API server no longer has; how
    many. The topic is read before the gateways are listed: a gateway created meanwhile is
    listed, or its record was not read."""
    process = runtime(memo)
    objects = client.CustomObjectsApi(process.api)
    live = kafka.live_keys(process.settings.kafka_bootstrap, CONFIG_TOPIC)
    listed = listed_gateways(objects)
    swept = 0
    for key in sorted(live - listed if listed is not None else live):
        if listed is None and not gone(objects, key):
            continue
        withdraw(memo, key)
        swept += 1
    return swept


def listed_gateways(objects: client.CustomObjectsApi) -> set[str] | None:
    """Every gateway's key, listed in pages; None when this operator may not list the
    whole cluster (it watches some namespaces only)."""
    keys: set[str] = set()
    token: str | None = None
    while True:
        try:
            page: Any = objects.list_cluster_custom_object(
                GROUP, VERSION, EdgeGateway.crd.plural, limit=LIST_PAGE, _continue=token
            )
        except ApiException as error:
            if error.status == 403:
                return None
            raise
        keys |= {key_of(item) for item in page["items"]}
        token = page["metadata"].get("continue")
        if not token:
            return keys


def gone(objects: client.CustomObjectsApi, key: str) -> bool:
    """Whether the API server says the gateway does not exist (not: may not be read)."""
    namespace, name = split_gateway_key(key)
    try:
        objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, EdgeGateway.crd.plural, name
        )
    except ApiException as error:
        if error.status == 404:
            return True
        if error.status == 403:  # a namespace this operator does not watch
            return False
        raise
    return False


async def refresh(ctx: Context) -> Change | None:
    """Between reconciles, the agents' heartbeats move the status: conditions as soon as
    they change, counters (which move with every heartbeat) at most every
    ``status_refresh_interval``, also the refresh's tick: heartbeats, and their being missed,
    refresh at once, so the tick only catches counters not yet written. Nothing when
    unchanged."""
    body = ctx.body
    if (body.get("status") or {}).get("configGeneration") is None:
        return None  # not reconciled yet
    edge = state(ctx.memo)
    key = key_of(body)
    heartbeat = edge.heartbeat(key)
    observe(body, heartbeat)
    every = runtime(ctx.memo).settings.status_refresh_interval
    due = time.monotonic() - edge.counters_written.get(key, 0.0) >= every
    if due:
        edge.counters_written[key] = time.monotonic()

    def status(stored: Mapping[str, Any]) -> dict[str, Any]:
        current = stored.get("status") or {}
        generation = int(stored["metadata"].get("generation") or 0)
        published = edge.published.get(key, (current.get("configGeneration"), ""))[0]
        fields, conditions = heartbeat_status(generation, published, heartbeat, datetime.now(UTC))
        changes = status_changes(current, fields, due)
        before = current.get("conditions") or []
        merged = merge_conditions(before, conditions, generation, now_rfc3339())
        if merged != before:
            changes["conditions"] = merged
        return changes

    return status_change(status)


def reconcile_unfinished(body: Mapping[str, Any]) -> bool:
    """Reconciling again helps while the config is not published or the last run failed;
    an agent that is missing or behind is followed by the heartbeat refresh."""
    if needs_reconcile(body):
        return True
    conditions = (body.get("status") or {}).get("conditions") or []
    ready = condition(conditions, "Ready") or {}
    failed = ready.get("reason") == RECONCILE_ERROR
    return failed or not is_true(conditions, "ConfigPublished")


register(
    KindSpec(
        EdgeGateway,
        reconcile,
        refresh=refresh,
        deleted=deleted,
        pending=simulation_changed,
        retry_when=reconcile_unfinished,
        refresh_interval=lambda settings: settings.status_refresh_interval,
    )
)
