"""AutomationIntent, purely: its Kafka topics, its runner's config and StatefulSet (scaled by
``autoscaling``), and its status from what the cluster and the runners report."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aios.api import AutomationIntent
from aios.api.base import DEFAULT_SITE
from aios.api.events import IntentRef
from aios.api.runner import (
    PartitionCounts,
    PartitionReport,
    RunnerConfig,
    RunnerTopics,
    runner_name,
)
from aios.connectors.topics import TopicSpec
from aios.operator.reconcile.autoscaling import render_scaler, wants_autoscaler
from aios.operator.reconcile.children import INSTANCE, NAME, app_labels, as_owner, owned
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.reconcile.kafka_access import runner_principal
from aios.operator.settings import OperatorSettings, task_queue

RUNNER = "aios-intent-runner"
CONFIG_PATH = "/etc/aios/runner"
METRICS_PORT = 9102
HOUR_MS = 3_600_000
STATE_SEGMENT_MS = 600_000
"""The state topic rolls a segment every 10 minutes, so compaction keeps what a replica
taking partitions over reads to a few minutes of batches."""


def topic_names(namespace: str, name: str, sources: list[str]) -> RunnerTopics:
    """The intent's own topics are ``aios.<namespace>.<intent>.<purpose>``."""
    base = f"aios.{namespace}.{name}"
    return RunnerTopics(
        sources=sources,
        decisions=f"{base}.decisions",
        actions=f"{base}.actions",
        dead_letters=f"{base}.dead-letters",
        state=f"{base}.state",
    )


def action_topics(intent: Mapping[str, Any]) -> list[str]:
    """The topics an intent's actions write (through the namespace's worker): its actions
    topic, and those its Kafka actions name. Read from the stored object as it is, since
    every intent of a namespace is asked on each reconcile of one."""
    meta = intent["metadata"]
    actions = (intent.get("spec") or {}).get("actions") or []
    named = [a["target"] for a in actions if a.get("type") == "kafka" and a.get("target")]
    return [topic_names(meta["namespace"], meta["name"], []).actions, *named]


def source_topics(intent: AutomationIntent, gateways: Iterable[Mapping[str, Any]]) -> list[str]:
    """Topics the runner consumes: named ones, and the sinks of the selected gateways."""
    topics: list[str] = []
    for source in intent.spec.sources:
        if source.kafka_topic:
            topics.append(source.kafka_topic)
        elif source.edge_gateway_selector is not None:
            wanted = source.edge_gateway_selector.match_labels
            for gateway in gateways:
                labels = gateway["metadata"].get("labels") or {}
                if all(labels.get(k) == v for k, v in wanted.items()):
                    topics.append(gateway["spec"]["sink"]["kafkaTopic"])
    return sorted(set(topics))


def retention_ms(intent: AutomationIntent, policy_cap_days: int | None = None) -> int:
    """The spec's retention, capped by the data policy for personal data (and by a
    Policy's cap, if one applies)."""
    hours = intent.spec.topics.retention_hours
    policy = intent.spec.data_policy
    caps = [hours]
    if policy.personal_data and policy.retention_days:
        caps.append(policy.retention_days * 24)
    if policy.personal_data and policy_cap_days:
        caps.append(policy_cap_days * 24)
    return min(caps) * HOUR_MS


def owned_topics(intent: AutomationIntent, names: RunnerTopics, retention: int) -> list[TopicSpec]:
    """Decisions, actions, dead letters and the runners' state: created, grown and
    reconfigured by the operator. The state topic keeps the latest record per source
    partition for as long as the intent lives, unless it holds personal data (its latches
    name sensors): then it is also bound by the retention."""
    partitions = intent.spec.topics.partitions
    config = {"retention.ms": str(retention), "cleanup.policy": "delete"}
    state = {
        "retention.ms": str(retention),
        "cleanup.policy": "compact,delete" if intent.spec.data_policy.personal_data else "compact",
        "segment.ms": str(STATE_SEGMENT_MS),
    }
    return [
        *(
            TopicSpec(t, partitions, config)
            for t in (names.decisions, names.actions, names.dead_letters)
        ),
        TopicSpec(names.state, 1, state),
    ]


def source_topic_specs(
    intent: AutomationIntent, sources: list[str], retention: int
) -> list[TopicSpec]:
    """Sources are created when missing, never reconfigured (they may be someone else's)."""
    return [
        TopicSpec(t, intent.spec.topics.partitions, {"retention.ms": str(retention)})
        for t in sources
    ]


def runner_config(
    intent: AutomationIntent, sources: list[str], site: str = DEFAULT_SITE
) -> RunnerConfig:
    meta = intent.metadata
    return RunnerConfig(
        intent=IntentRef(
            namespace=meta["namespace"],
            name=meta["name"],
            generation=int(meta.get("generation") or 0),
        ),
        labels=dict(meta.get("labels") or {}),
        spec=intent.spec,
        topics=topic_names(meta["namespace"], meta["name"], sources),
        consumer_group=f"aios.{meta['namespace']}.{meta['name']}.runner",
        task_queue=task_queue(meta["namespace"]),
        site=site,
    )


def render_runner(
    intent: AutomationIntent, settings: OperatorSettings, sources: list[str], keda: bool = False
) -> list[dict[str, Any]]:
    """The runner of ``intent``, consuming ``sources``: its Kafka credentials (its own
    user's, when workloads have users), ServiceAccount, Role and binding (read
    ModelDeployments), ConfigMap, StatefulSet — in the order they must be applied — and,
    when the cluster serves ``keda`` and the intent wants an autoscaler, KEDA's
    ScaledObject, which then sets the StatefulSet's replicas (so they are not applied)."""
    config = runner_config(intent, sources, settings.site)
    name = runner_name(config.intent.name)
    labels = app_labels(RUNNER, "intent-runner", config.intent.name)
    principal = runner_principal(config)
    # Without spec.scaling, which the runner does not read: scaling restarts no runner.
    text = config.model_dump_json(
        by_alias=True, exclude_none=True, exclude={"spec": {"scaling"}}, indent=2
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    scaler = (
        render_scaler(
            config, labels, settings.kafka_bootstrap, settings.autoscaler_credentials(principal)
        )
        if keda and wants_autoscaler(intent)
        else []
    )
    replicas = 0 if config.spec.mode == "paused" else config.spec.scaling.min_replicas
    container = {
        "name": "runner",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [RUNNER],
        "args": [f"--config={CONFIG_PATH}/config.json", f"--metrics-port={METRICS_PORT}"],
        "env": settings.component_env(principal),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_PATH, "readOnly": True}],
        "resources": settings.data_plane.resources.intent_runner,
        "livenessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 20},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    children: list[dict[str, Any]] = [
        *settings.component_secrets(config.intent.namespace, principal),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "labels": labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "labels": labels},
            # The runner follows its models' rollouts (traffic split) and nothing else.
            "rules": [
                {
                    "apiGroups": ["aios.dev"],
                    "resources": ["modeldeployments"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels},
            "data": {"config.json": text},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                **({} if scaler else {"replicas": replicas}),
                # A replica's name is its transactional id: one that comes back (restarted,
                # rescheduled) fences its own unfinished transaction at once, instead of
                # leaving it to hold its partitions' readers until it times out.
                "serviceName": name,
                "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "RollingUpdate"},
                "selector": {"matchLabels": {NAME: RUNNER, INSTANCE: config.intent.name}},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {"aios.dev/config-digest": digest},
                    },
                    "spec": {
                        "serviceAccountName": name,
                        "containers": [container],
                        "volumes": [{"name": "config", "configMap": {"name": name}}],
                        "terminationGracePeriodSeconds": 30,
                        **settings.data_plane.pod_fields(),
                    },
                },
            },
        },
        *scaler,
    ]
    return [owned(child, as_owner(intent)) for child in children]


RUNNER_KINDS = [
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("v1", "ConfigMap"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "Deployment"),
]
"""What ``render_runner`` produces and pruning looks at: not its Kafka credentials, whose
name never changes and which go with the intent (the operator may not list Secrets). The
Deployment is what runners were before they were a StatefulSet: pruned on upgrade."""


def retention_violation(intent: AutomationIntent, namespace: str, cap: int | None) -> str | None:
    """Why the intent may not keep its personal data as long as it asks, if it may not
    (``cap``: the days the namespace's Policies allow)."""
    policy = intent.spec.data_policy
    if not policy.personal_data or cap is None or (policy.retention_days or 0) <= cap:
        return None
    return (
        f"dataPolicy.retentionDays {policy.retention_days} exceeds the "
        f"{cap} days a Policy allows for personal data in {namespace}"
    )


def workload_condition(kind: str, workload: Mapping[str, Any] | None) -> ConditionUpdate:
    """``RunnerReady`` or ``WorkflowsReady``: whether the workload serves."""
    ok, message = workload_ready(workload)
    return ConditionUpdate(
        kind, "True" if ok else "False", "Available" if ok else "Progressing", message
    )


def workload_ready(workload: Mapping[str, Any] | None) -> tuple[bool, str]:
    """Whether a Deployment or StatefulSet (their status has the same fields) serves its
    desired replicas of the current template."""
    if workload is None:
        return False, "not created yet"
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    desired = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration") or 0) < int(
        workload["metadata"].get("generation") or 0
    ):
        return (
            False,
            f"the {workload.get('kind', 'workload')} controller has not seen the latest template",
        )
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if desired == 0:
        return True, "scaled to zero"
    if updated >= desired and available >= desired:
        return True, f"{available}/{desired} replicas available"
    return False, f"{available}/{desired} replicas available, {updated} updated"


@dataclass(frozen=True)
class Heartbeat:
    pod: str
    generation: int
    time: datetime
    models: Mapping[str, Mapping[str, Any]]
    partitions: Mapping[str, PartitionReport]
    paused: bool


def live(heartbeats: Iterable[Heartbeat], now: datetime, window_seconds: float) -> list[Heartbeat]:
    return [h for h in heartbeats if (now - h.time).total_seconds() <= window_seconds]


def runtime_conditions(intent: AutomationIntent, beats: list[Heartbeat]) -> list[ConditionUpdate]:
    """``Degraded`` from what the live runners report about their models and hand-offs."""
    down = sorted(
        {
            f"{call}: {state.get('error') or 'unavailable'}"
            for beat in beats
            for call, state in beat.models.items()
            if not state.get("available", True)
        }
    )
    if down:
        return [
            ConditionUpdate(
                "Degraded",
                "True",
                "ModelUnavailable",
                "Deciding with the fallback rules; " + "; ".join(down),
            )
        ]
    if any(beat.paused for beat in beats):
        return [
            ConditionUpdate(
                "Degraded",
                "True",
                "HandOffBlocked",
                "Temporal does not take actions; consumption is paused",
            )
        ]
    if intent.spec.mode == "paused":
        return [ConditionUpdate("Degraded", "False", "Paused", "The intent is paused.")]
    return [
        ConditionUpdate(
            "Degraded",
            "False",
            "Healthy",
            "Models answer and actions are handed off." if beats else "No runner has reported yet.",
        )
    ]


def newest_reports(beats: list[Heartbeat]) -> dict[str, PartitionReport]:
    """Each source partition's newest report among live runners (a partition that moved is
    reported by its old holder until that one's heartbeat expires)."""
    newest: dict[str, PartitionReport] = {}
    for beat in beats:
        for key, report in beat.partitions.items():
            if key not in newest or report.offset > newest[key].offset:
                newest[key] = report
    return newest


def counts(beats: list[Heartbeat]) -> dict[str, int]:
    """Readings, decisions, fallbacks and dead letters since the intent began: the sum over
    its source partitions of the newest count. Nothing while no runner reports, so the
    status keeps what it had. Actions and overrides are counted from Temporal by the
    handler."""
    newest = newest_reports(beats)
    if not newest:
        return {}
    totals = PartitionCounts()
    for progress in newest.values():
        for field in PartitionCounts.model_fields:
            setattr(totals, field, getattr(totals, field) + getattr(progress.counts, field))
    return totals.model_dump(by_alias=True)


def reported_lag(beats: list[Heartbeat]) -> int | None:
    """The consumer lag the live runners report: the sum over the partitions they hold of
    the newest report's lag. None when none reports one (no runner, or none has committed
    and fetched yet): the handler then asks Kafka."""
    lags = [r.lag for r in newest_reports(beats).values() if r.lag is not None]
    return sum(lags) if lags else None


def may_have_acted(beats: list[Heartbeat], stored_counts: Mapping[str, Any]) -> bool:
    """Whether the intent can have action workflows to count: actions come from decisions,
    so not while neither a runner nor the status has ever counted one (a paused intent
    that never ran, the common case of a large site, costs Temporal nothing)."""
    decided = counts(beats).get("decisions") or stored_counts.get("decisions") or 0
    return int(decided) > 0


def ready(conditions: list[ConditionUpdate]) -> ConditionUpdate:
    """``Ready`` when topics, runner and workflows are; its message names what is not."""
    waiting = [
        f"{c.type}: {c.message}"
        for c in conditions
        if c.type.endswith("Ready") and c.status != "True"
    ]
    if waiting:
        return ConditionUpdate("Ready", "False", "Waiting", "; ".join(waiting))
    return ConditionUpdate("Ready", "True", "Reconciled", "Topics, runner and workflows are ready.")
