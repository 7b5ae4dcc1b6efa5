"""Prometheus metrics of the operator (``aios_operator_*``), served on ``--metrics-port``.

The policy decisions the admission webhook asks of OPA (``aios_policy_*``) are counted by
``aios.connectors.opa`` in the same registry, so one scrape shows both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from aios.edge.protocol import Heartbeat
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.reconcile.edge_gateway import CONNECTED_PERIODS

RECONCILE = Histogram(
    "aios_operator_reconcile_duration_seconds",
    "Time of one reconcile, by kind and outcome (ready, not_ready, error).",
    ["kind", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

QUEUE_DEPTH = Gauge(
    "aios_operator_queue_depth",
    "Objects waiting for or in a reconcile, by kind.",
    ["kind"],
)
OBJECTS = Gauge(
    "aios_operator_objects",
    "Objects in the operator's watch-fed store, by kind.",
    ["kind"],
)
ACTION_OUTCOMES = ("executed", "overridden")
INTENT_ACTIONS = Gauge(
    "aios_intent_actions",
    "An intent's finished actions by outcome: executed, or overridden (rejected by a human),"
    " as Temporal's visibility counts them (durable across runner restarts); intent:"
    " namespace/name, as the runners name it.",
    ["intent", "outcome"],
)
TICKS = Counter(
    "aios_operator_ticks_total",
    "Periodic passes over every object of a kind (retries and status refreshes), by kind.",
    ["kind"],
)


# The operator hears every gateway's heartbeats, wherever its agent runs (a lamp post that
# no Prometheus scrapes), so the fleet's liveness and privacy budgets are served here; the
# gateway is named namespace/name (a scrape sets "namespace" to the operator's own).
GATEWAY = ["gateway"]
GATEWAY_HEARTBEAT = Gauge(
    "aios_edge_gateway_heartbeat_timestamp_seconds",
    "When the gateway's agent last reported (Unix time).",
    GATEWAY,
)
GATEWAY_SILENT_AFTER = Gauge(
    "aios_edge_gateway_silent_after_seconds",
    "How long after its last heartbeat the gateway counts as disconnected (three of its"
    " heartbeat periods).",
    GATEWAY,
)
GATEWAY_PRIVACY_REMAINING = Gauge(
    "aios_edge_gateway_privacy_budget_remaining_ratio",
    "Share of the gateway's differential-privacy budget per window still unspent.",
    GATEWAY,
)
GATEWAY_PRIVACY_EXHAUSTED = Gauge(
    "aios_edge_gateway_privacy_sensors_exhausted",
    "Sensors whose lifetime privacy budget is spent for the period: their values are withheld.",
    GATEWAY,
)


def observe_gateway(gateway: str, heartbeat: Heartbeat, budget_per_window: float | None) -> None:
    """The series of ``gateway`` (namespace/name), from its agent's latest heartbeat."""
    labels = (gateway,)
    GATEWAY_HEARTBEAT.labels(*labels).set(heartbeat.time.timestamp())
    GATEWAY_SILENT_AFTER.labels(*labels).set(CONNECTED_PERIODS * heartbeat.heartbeat_seconds)
    GATEWAY_PRIVACY_EXHAUSTED.labels(*labels).set(heartbeat.privacy_sensors_exhausted)
    remaining = heartbeat.privacy_budget_remaining
    if remaining is not None and budget_per_window:
        GATEWAY_PRIVACY_REMAINING.labels(*labels).set(remaining / budget_per_window)


def forget_gateway(gateway: str) -> None:
    for gauge in (
        GATEWAY_HEARTBEAT,
        GATEWAY_SILENT_AFTER,
        GATEWAY_PRIVACY_REMAINING,
        GATEWAY_PRIVACY_EXHAUSTED,
    ):
        with contextlib.suppress(KeyError):
            gauge.remove(gateway)


def outcome(updates: Sequence[ConditionUpdate], error_reason: str) -> str:
    """What the reconcile's last Ready update says."""
    ready = next((u for u in reversed(updates) if u.type == "Ready"), None)
    if ready is None or ready.reason == error_reason:
        return "error"
    return "ready" if ready.status == "True" else "not_ready"


def serve(host: str, port: int) -> None:
    start_http_server(port, addr=host)
