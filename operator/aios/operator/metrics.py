"""Prometheus metrics of the operator (``aios_operator_*``), served on ``--metrics-port``.

The policy decisions the admission webhook asks of OPA (``aios_policy_*``) are counted by
``aios.connectors.opa`` in the same registry, so one scrape shows both.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from aios.operator.reconcile.conditions import ConditionUpdate

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


def outcome(updates: Sequence[ConditionUpdate], error_reason: str) -> str:
    """What the reconcile's last Ready update says."""
    ready = next((u for u in reversed(updates) if u.type == "Ready"), None)
    if ready is None or ready.reason == error_reason:
        return "error"
    return "ready" if ready.status == "True" else "not_ready"


def serve(host: str, port: int) -> None:
    start_http_server(port, addr=host)
