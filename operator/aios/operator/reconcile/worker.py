"""The namespace's Temporal worker: one ``aios-worker`` Deployment per namespace. Pure.

Every kind whose workflows run in a namespace (ModelDeployment rollouts, AutomationIntent
actions) applies the same objects, so the namespace gets exactly one worker, polling the
namespace's task queue (``settings.task_queue``) with a ServiceAccount whose Role reaches
that namespace only. The worker has no owner reference: it outlives any single object and
goes with the namespace. A feature whose activities need more access adds rules to
``WORKER_RULES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aios.api import GROUP
from aios.operator.reconcile.children import MANAGED_BY, NAME, OPERATOR, app_labels
from aios.operator.reconcile.kafka_access import KafkaPrincipal
from aios.operator.settings import OperatorSettings, task_queue

WORKER = "aios-worker"
METRICS_PORT = 9103
"""Where the worker serves the Temporal SDK's metrics (workflows and activities by outcome,
their latency) for Prometheus (the chart's PodMonitor)."""

WORKER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [GROUP],
        "resources": ["modeldeployments", "automationintents"],
        "verbs": ["get", "list", "watch"],
    },
    # A rollout publishes into its own ModelRollout; the operator alone writes the
    # ModelDeployment's status (it mirrors the rollout there).
    # (it also removes the oldest of a ModelDeployment's beyond the history it keeps)
    {
        "apiGroups": [GROUP],
        "resources": ["modelrollouts"],
        "verbs": ["get", "list", "create", "delete"],
    },
    {"apiGroups": [GROUP], "resources": ["modelrollouts/status"], "verbs": ["get", "patch"]},
    # A workflow takes a human decision only from the Approval object, read by itself.
    {"apiGroups": [GROUP], "resources": ["approvals"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # A candidate is asked at its Service's cluster IP; if it does not answer, the pods
    # behind the Service are asked why.
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
    # The replay gate: a Job per intent calling the model, made from its runners' pod (their
    # StatefulSet), whose pod's termination message carries the counts.
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
]
"""What the worker's activities may do in their namespace."""


def is_worker(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` is a namespace's worker Deployment: it has no owner to tell of its
    availability, which every AutomationIntent of the namespace reports."""
    return obj.get("kind") == "Deployment" and obj["metadata"].get("name") == WORKER


def worker_labels() -> dict[str, str]:
    return {**app_labels(WORKER, "worker"), MANAGED_BY: OPERATOR}


def render_worker(principal: KafkaPrincipal, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The worker of ``principal``'s namespace, run as that Kafka user: the Secret its
    environment refers to, then its ServiceAccount, Role, RoleBinding and Deployment, in
    the order to apply them."""
    namespace = principal.namespace
    labels = worker_labels()

    def meta() -> dict[str, Any]:
        return {"name": WORKER, "namespace": namespace, "labels": dict(labels)}

    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta()}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta(),
        "rules": WORKER_RULES,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta(),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WORKER},
        "subjects": [{"kind": "ServiceAccount", "name": WORKER, "namespace": namespace}],
    }
    container = {
        "name": "worker",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["aios-worker"],
        "args": [f"--task-queue={task_queue(namespace)}", f"--metrics-port={METRICS_PORT}"],
        "env": settings.component_env(principal),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "resources": settings.data_plane.resources.worker,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {NAME: WORKER}},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "serviceAccountName": WORKER,
                    "containers": [container],
                    **settings.data_plane.pod_fields(),
                },
            },
        },
    }
    return [*settings.component_secrets(namespace, principal), account, role, binding, deployment]
