"""An intent's runners scaled on their consumer group's Kafka lag, purely: KEDA's
ScaledObject (and a TriggerAuthentication with the runners' own Kafka credentials) when the
cluster serves KEDA, and the ``ScalingActive`` condition that says who sets how many
runners there are, and why they cannot scale when nothing can."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aios.api import AutomationIntent
from aios.api.runner import RunnerConfig, runner_name
from aios.operator.reconcile.conditions import ConditionUpdate

SCALED_OBJECTS_CRD = "scaledobjects.keda.sh"
KEDA_API = "keda.sh/v1alpha1"
SCALER_KINDS = ((KEDA_API, "ScaledObject"), (KEDA_API, "TriggerAuthentication"))
KAFKA_PROTOCOL_VERSION = "3.9.0"
"""The Kafka protocol KEDA's Kafka scaler speaks: Kafka 4 refuses the requests of its
default (1.0)."""
SCALED, SCALER_NOT_READY = "ScaledByKeda", "ScalerNotReady"


def wants_autoscaler(intent: AutomationIntent) -> bool:
    """Runners may number between two bounds, and run at all."""
    scaling = intent.spec.scaling
    return intent.spec.mode != "paused" and scaling.max_replicas > scaling.min_replicas


def may_have_scaler(intent: AutomationIntent, status: Mapping[str, Any]) -> bool:
    """Whether KEDA's kinds are to be looked at: the intent wants an autoscaler, or its last
    reconcile rendered one (which must go, or it would go on scaling the runners)."""
    return wants_autoscaler(intent) or any(
        c.get("type") == "ScalingActive" and c.get("reason") in (SCALED, SCALER_NOT_READY)
        for c in status.get("conditions") or []
    )


def render_scaler(
    config: RunnerConfig,
    labels: Mapping[str, str],
    bootstrap: str,
    credentials: tuple[str, list[str]] | None,
) -> list[dict[str, Any]]:
    """KEDA's ScaledObject for the runners' StatefulSet: one runner per ``lagThreshold``
    readings waiting on the sources (summed over them), between the intent's bounds and
    never more than the sources have partitions. ``credentials``: the Secret holding the
    runners' Kafka credentials and the keys in it that KEDA's Kafka scaler reads (a
    TriggerAuthentication refers to them), or None for a Kafka without authentication."""
    name = runner_name(config.intent.name)
    scaling = config.spec.scaling
    sources = config.topics.sources
    metadata = {
        "bootstrapServers": bootstrap,
        "consumerGroup": config.consumer_group,
        "lagThreshold": str(scaling.lag_threshold),
        "offsetResetPolicy": "earliest",  # as the runners start: a new group owes it all
        "allowIdleConsumers": "false",
        "version": KAFKA_PROTOCOL_VERSION,
    }
    if len(sources) == 1:  # else every topic the group has offsets on: all its sources
        metadata["topic"] = sources[0]
    trigger: dict[str, Any] = {"type": "kafka", "metadata": metadata}
    children: list[dict[str, Any]] = []
    if credentials is not None:
        secret, keys = credentials
        children.append(
            {
                "apiVersion": KEDA_API,
                "kind": "TriggerAuthentication",
                "metadata": {"name": name, "labels": dict(labels)},
                "spec": {
                    "secretTargetRef": [
                        {"parameter": key, "name": secret, "key": key} for key in keys
                    ]
                },
            }
        )
        trigger["authenticationRef"] = {"name": name}
    window = scaling.scale_down_stabilization_seconds
    children.append(
        {
            "apiVersion": KEDA_API,
            "kind": "ScaledObject",
            "metadata": {"name": name, "labels": dict(labels)},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name},
                "minReplicaCount": scaling.min_replicas,
                "maxReplicaCount": scaling.max_replicas,
                "advanced": {
                    "horizontalPodAutoscalerConfig": {
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": window}}
                    }
                },
                "triggers": [trigger],
            },
        }
    )
    return children


def replicas(workload: Mapping[str, Any] | None) -> int | None:
    """The replicas a StatefulSet asks for (what its autoscaler set, if any)."""
    if workload is None:
        return None
    return int((workload.get("spec") or {}).get("replicas") or 0)


def scaling_condition(
    intent: AutomationIntent,
    keda: bool,
    scaled_object: Mapping[str, Any] | None,
    runners: int | None,
) -> ConditionUpdate:
    """``ScalingActive``, as an autoscaler reports it: whether KEDA sets the number of
    runners, and if not, why it stays where it is. ``keda``: the cluster serves KEDA's
    kinds; ``runners``: the replicas the StatefulSet asks for now."""
    scaling = intent.spec.scaling
    low, high = scaling.min_replicas, scaling.max_replicas
    if intent.spec.mode == "paused":
        return ConditionUpdate(
            "ScalingActive", "False", "Paused", "No runner while spec.mode is paused."
        )
    if low == high:
        return ConditionUpdate(
            "ScalingActive",
            "False",
            "FixedReplicas",
            f"{low} runner(s): spec.scaling.minReplicas equals maxReplicas.",
        )
    if not keda:
        return ConditionUpdate(
            "ScalingActive",
            "False",
            "NoAutoscaler",
            f"{low} runner(s), spec.scaling.minReplicas: the cluster has no KEDA "
            f"({SCALED_OBJECTS_CRD}), so runners are not scaled on Kafka lag and "
            "maxReplicas is never reached.",
        )
    ready = next(
        (
            c
            for c in ((scaled_object or {}).get("status") or {}).get("conditions") or []
            if c.get("type") == "Ready"
        ),
        None,
    )
    if ready is None or ready.get("status") != "True":
        why = (ready or {}).get("message") or "it has not reported on it yet"
        return ConditionUpdate(
            "ScalingActive",
            "False",
            SCALER_NOT_READY,
            f"KEDA does not scale the runners' ScaledObject: {why}",
        )
    now = "" if runners is None else f"; {runners} now"
    return ConditionUpdate(
        "ScalingActive",
        "True",
        SCALED,
        f"KEDA scales {low} to {high} runner(s), one per {scaling.lag_threshold} readings "
        f"waiting on the sources{now}.",
    )
