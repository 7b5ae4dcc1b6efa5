"""EdgeGateway, purely: the spec compiled into the agents' config record, the agents'
heartbeats turned into status and conditions, and the optional simulated agent.

The Kafka contract (topics, keys, records) is ``aios.edge.protocol``; the agent imports
nothing of the operator, the operator imports that contract.

Conditions: ``ConfigPublished`` (the record for this generation is on the config topic),
``Connected`` (a heartbeat younger than ``CONNECTED_PERIODS`` heartbeat periods),
``ConfigApplied`` (the agent runs this generation), ``BufferPressure`` (the disk buffer
is at least ``PRESSURE_RATIO`` full), and ``Ready`` (published, connected and applied).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from aios.api import EdgeGateway
from aios.api.base import kube_time
from aios.edge.protocol import (
    DEFAULT_HEARTBEAT_SECONDS,
    AgentConfig,
    Heartbeat,
    gateway_key,
    spec_digest,
)
from aios.operator.reconcile.children import NAME, app_labels, owned
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.reconcile.kafka_access import KafkaPrincipal, edge_principal
from aios.operator.settings import OperatorSettings

CONNECTED_PERIODS = 3
PRESSURE_RATIO = 0.8
SIMULATE_ANNOTATION = "aios.dev/simulate-sensors"
"""On an EdgeGateway: run an in-cluster agent fed by this many simulated sensors (the
gateway's declared sensors when it has any). For demos and ``make run``; real gateways
run ``aios-edge`` on the lamp post."""
EPISODES_ANNOTATION = "aios.dev/simulate-episodes"
"""With ``simulate-sensors``: mean seconds between pollution episodes per simulated sensor."""
AGENT_PORT_METRICS = 9108
AGENT_PORT_HTTP = 8080
DATA_DIR = "/var/lib/aios-edge"


def key_of(gateway: Mapping[str, Any]) -> str:
    meta = gateway["metadata"]
    return gateway_key(meta["namespace"], meta["name"])


def compile_config(
    gateway: EdgeGateway, heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
) -> AgentConfig:
    """The record an agent runs: this generation's spec, flattened, with its digest."""
    spec = gateway.spec
    return AgentConfig(
        gateway=key_of(gateway.model_dump()),
        generation=int(gateway.metadata.get("generation") or 0),
        digest=spec_digest(spec),
        site=spec.site,
        sensors=spec.sensors,
        filters=spec.filters,
        sink=spec.sink,
        buffer=spec.buffer,
        heartbeat_seconds=heartbeat_seconds,
    )


def privacy_budget_per_window(gateway: Mapping[str, Any]) -> float | None:
    """The epsilon the chain's differential-privacy step may spend per window, if it has one."""
    for step in gateway["spec"].get("filters") or []:
        if privacy := step.get("differentialPrivacy"):
            return float(privacy["budgetPerWindow"])
    return None


def connected_until(heartbeat: Heartbeat) -> datetime:
    """When the agent counts as gone unless a newer heartbeat arrives first."""
    return heartbeat.time + timedelta(seconds=CONNECTED_PERIODS * heartbeat.heartbeat_seconds)


def heartbeat_status(
    generation: int,
    published: int | None,
    heartbeat: Heartbeat | None,
    now: datetime,
) -> tuple[dict[str, Any], list[ConditionUpdate]]:
    """Status fields and conditions from the latest heartbeat of the gateway's agent."""
    fields: dict[str, Any] = {"configGeneration": published}
    conditions = [
        ConditionUpdate("ConfigPublished", "True", "Published", f"Generation {published}.")
        if published == generation
        else ConditionUpdate(
            "ConfigPublished", "False", "Pending", "The config record is not published yet."
        )
    ]
    if heartbeat is None:
        conditions += [
            ConditionUpdate("Connected", "False", "NoHeartbeat", "No agent has reported."),
            ConditionUpdate("ConfigApplied", "Unknown", "NoHeartbeat", "No agent has reported."),
            ConditionUpdate("BufferPressure", "Unknown", "NoHeartbeat", "No agent has reported."),
        ]
        return fields, [*conditions, gateway_ready(conditions)]
    fields |= {
        "lastSeen": kube_time(heartbeat.time),
        "appliedGeneration": heartbeat.applied_generation,
        "bufferFillRatio": round(heartbeat.buffer_fill_ratio, 4),
        "forwarded": heartbeat.forwarded,
        "dropped": heartbeat.dropped,
        "quarantined": heartbeat.quarantined,
        "privacyBudgetRemaining": heartbeat.privacy_budget_remaining,
        "privacySensorsExhausted": heartbeat.privacy_sensors_exhausted,
    }
    if now <= connected_until(heartbeat):
        conditions.append(
            ConditionUpdate("Connected", "True", "HeartbeatReceived", f"Agent {heartbeat.agent}.")
        )
    else:
        conditions.append(
            ConditionUpdate(
                "Connected",
                "False",
                "HeartbeatMissed",
                f"No heartbeat from {heartbeat.agent} since {fields['lastSeen']}.",
            )
        )
    if heartbeat.config_error:
        conditions.append(
            ConditionUpdate("ConfigApplied", "False", "ConfigRejected", heartbeat.config_error)
        )
    elif heartbeat.applied_generation == generation:
        conditions.append(
            ConditionUpdate(
                "ConfigApplied", "True", "Applied", f"The agent runs generation {generation}."
            )
        )
    else:
        conditions.append(
            ConditionUpdate(
                "ConfigApplied",
                "False",
                "Pending",
                f"The agent runs generation {heartbeat.applied_generation}, not {generation}.",
            )
        )
    ratio = heartbeat.buffer_fill_ratio
    conditions.append(
        ConditionUpdate(
            "BufferPressure",
            "True" if ratio >= PRESSURE_RATIO else "False",
            "BufferAlmostFull" if ratio >= PRESSURE_RATIO else "BufferOk",
            f"{ratio:.0%} of {heartbeat.buffer_capacity_bytes} bytes used.",
        )
    )
    return fields, [*conditions, gateway_ready(conditions)]


def gateway_ready(conditions: list[ConditionUpdate]) -> ConditionUpdate:
    """Ready: the config is published, an agent is connected and runs it."""
    by_type = {c.type: c for c in conditions}
    for wanted in ("ConfigPublished", "Connected", "ConfigApplied"):
        condition = by_type.get(wanted)
        if condition is None or condition.status != "True":
            reason = condition.reason if condition else "Unknown"
            message = condition.message if condition else ""
            return ConditionUpdate("Ready", "False", f"{wanted}{reason}", message)
    return ConditionUpdate("Ready", "True", "AgentRunning", "The agent runs this generation.")


def status_changes(
    current: Mapping[str, Any], fields: Mapping[str, Any], counters_due: bool
) -> dict[str, Any]:
    """The status fields worth a write: any that changed, except the ever-moving counters,
    which are written only when ``counters_due`` (so heartbeats do not hammer the API)."""
    counters = {"forwarded", "dropped", "quarantined", "lastSeen", "bufferFillRatio"}
    return {
        k: v
        for k, v in fields.items()
        if current.get(k) != v and (counters_due or k not in counters)
    }


def gateway_principal(gateway: Mapping[str, Any]) -> KafkaPrincipal:
    """The gateway's Kafka user: its agent, in the cluster or on the lamp post."""
    meta = gateway["metadata"]
    return edge_principal(meta["namespace"], meta["name"], gateway["spec"]["sink"]["kafkaTopic"])


def simulated_sensors(gateway: Mapping[str, Any]) -> str | None:
    """How many sensors a simulated agent plays for the gateway (its annotation), if any."""
    annotations: Mapping[str, str] = gateway["metadata"].get("annotations") or {}
    return annotations.get(SIMULATE_ANNOTATION)


def simulation_changed(body: Mapping[str, Any]) -> bool:
    """The simulate annotation was set, changed or removed (no new generation): the
    simulated agent follows it at once."""
    reconciled = (body.get("status") or {}).get("observedGeneration") is not None
    followed = (body.get("status") or {}).get("simulatedSensors")
    return reconciled and followed != simulated_sensors(body)


def render_agent_credentials(
    gateway: Mapping[str, Any], settings: OperatorSettings
) -> list[dict[str, Any]]:
    """The Secret the gateway's agent takes its Kafka settings from: its own user's when
    workloads have users (owned by the gateway, whether the agent runs in the cluster or
    is given them for the lamp post), else the namespace's shared copy, for a simulated
    agent."""
    namespace = gateway["metadata"]["namespace"]
    if settings.kafka_principals:
        secrets = settings.component_secrets(namespace, gateway_principal(gateway))
        return [owned(s, gateway) for s in secrets]
    return settings.component_secrets(namespace) if simulated_sensors(gateway) else []


def render_simulator(
    gateway: Mapping[str, Any], settings: OperatorSettings
) -> list[dict[str, Any]]:
    """A Deployment running ``aios-edge --simulate`` for the gateway, when annotated."""
    meta = gateway["metadata"]
    annotations = meta.get("annotations") or {}
    count = simulated_sensors(gateway)
    if not count:
        return []
    name = f"{meta['name']}-edge-sim"
    labels = {**app_labels("aios-edge", "edge-agent"), "aios.dev/edge-gateway": meta["name"]}
    container = {
        "name": "agent",
        "image": settings.edge_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["aios-edge"],
        "args": [
            f"--gateway={key_of(gateway)}",
            f"--data-dir={DATA_DIR}",
            f"--simulate={int(count)}",
            f"--simulate-episodes={float(annotations.get(EPISODES_ANNOTATION) or 0)}",
            "--metrics-host=$(POD_IP)",
            f"--metrics-port={AGENT_PORT_METRICS}",
            "--http-host=$(POD_IP)",
            f"--http-port={AGENT_PORT_HTTP}",
        ],
        "env": settings.component_env(gateway_principal(gateway)),
        "ports": [
            {"name": "metrics", "containerPort": AGENT_PORT_METRICS},
            {"name": "http", "containerPort": AGENT_PORT_HTTP},
        ],
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
        "resources": settings.data_plane.resources.edge_agent,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one writer of the agent's data directory
            "selector": {"matchLabels": {"aios.dev/edge-gateway": meta["name"], NAME: "aios-edge"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    **settings.data_plane.pod_fields(),
                },
            },
        },
    }
    return [owned(deployment, gateway)]
