"""A rollout's replay gate, before any live traffic moves to the new version: each
AutomationIntent calling the ModelDeployment has its recent readings decided again with the
new version's answers, and the share of decisions that would change is held against
``maxDecisionChange``.

Each intent is replayed by a Job beside its runners: their pod (image, Kafka user,
configuration, read from their StatefulSet) with another command, ``aios-intent-replay``,
which asks the new version where the rollout serves it without traffic. The Job's pod
reports its counts in its termination message; its log keeps the whole report. The Jobs
are owned by the rollout's ModelRollout (they go with it) and kept a day after they end.
Their names derive from the rollout and the intent, so a retried activity waits for the
Jobs its earlier attempt made instead of making more.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio import activity

from aios.api import GROUP, VERSION, AutomationIntent, ModelDeployment, ModelRollout
from aios.api.base import owner_reference
from aios.api.model_deployment import IntentReplay, ReplayGate, ReplayGateReport
from aios.api.model_rollout import rollout_name
from aios.api.runner import runner_name
from aios.connectors.kube import api_client
from aios.workflows.rollout_io import ReplayRequest

REPLAY = "aios-intent-replay"
KEPT_SECONDS = 86400
"""How long a finished replay Job (and its log, the whole report) is kept."""
DEADLINE_SECONDS = 1800
"""How long one replay may run before Kubernetes stops it."""
POLL_SECONDS = 2.0


def job_name(intent: str, workflow_id: str) -> str:
    """One Job per rollout and intent (a DNS label)."""
    digest = hashlib.sha256(f"{workflow_id}/{intent}".encode()).hexdigest()[:8]
    return f"{intent[:44]}-replay-{digest}"


def calls_model(intent: Mapping[str, Any], model_deployment: str) -> bool:
    models = (intent.get("spec") or {}).get("models") or []
    return any(m.get("modelDeployment") == model_deployment for m in models)


def served_target(status: Mapping[str, Any], version: str) -> dict[str, Any] | None:
    """Where a ModelDeployment serves ``version``: a new version beside the stable one (its
    canary, at weight 0 until the first step, or its shadow), or the stable one."""
    for track in ("canary", "shadow", "stable"):
        target = status.get(track) or {}
        if target.get("version") == version and target.get("http"):
            return dict(target)
    return None


@dataclass(frozen=True)
class Replayed:
    """What a replay Job decides with: a version of a ModelDeployment, where it is served
    (``target``, a ServingTarget as status holds it), over a window (the Job's
    ``--since-seconds``, or ``--since`` and ``--until``)."""

    namespace: str
    deployment: str
    version: str
    target: Mapping[str, Any]
    window: tuple[str, ...]


def replay_job(
    intent: str,
    runners: Mapping[str, Any],
    name: str,
    replayed: Replayed,
    owner: Mapping[str, Any],
) -> dict[str, Any]:
    """The Job replaying ``intent``: its runners' pod (from their StatefulSet ``runners``),
    running ``aios-intent-replay`` with the runner's configuration file."""
    pod = copy.deepcopy(runners["spec"]["template"]["spec"])
    container = pod["containers"][0]
    config = next(a for a in container.get("args") or [] if a.startswith("--config="))
    container.update(
        command=[REPLAY],
        args=[
            config,
            *replayed.window,
            f"--deployment={replayed.deployment}",
            f"--version={replayed.version}",
            f"--url={replayed.target['http']}",
            f"--model={replayed.target['model']}",
            "--protocol=http",
        ],
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    for field in ("ports", "livenessProbe", "readinessProbe", "startupProbe"):
        container.pop(field, None)
    labels = {
        "app.kubernetes.io/name": REPLAY,
        "app.kubernetes.io/instance": intent,
        "app.kubernetes.io/component": "replay",
        "app.kubernetes.io/part-of": "aios",
        "aios.dev/model-deployment": replayed.deployment,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": replayed.namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": KEPT_SECONDS,
            "template": {
                "metadata": {"labels": labels},
                "spec": {**pod, "restartPolicy": "Never"},
            },
        },
    }


def finished(job: Mapping[str, Any]) -> bool | None:
    """True: succeeded; False: failed (or stopped at its deadline); None: still running."""
    status = job.get("status") or {}
    if status.get("succeeded"):
        return True
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if status.get("failed") or conditions.get("Failed") == "True":
        return False
    return None


def intent_result(intent: str, job: str, succeeded: bool, message: str) -> IntentReplay:
    """What one replay reported in its termination message (JSON, or a log tail)."""
    try:
        found = json.loads(message)
    except ValueError:
        found = None
    if not isinstance(found, dict) or "error" in found or not succeeded:
        reason = found.get("error") if isinstance(found, dict) else message.strip()[-500:]
        return IntentReplay(intent=intent, job=job, failed=True, message=reason or "no report")
    return IntentReplay(
        intent=intent,
        job=job,
        compared=int(found.get("compared") or 0),
        changed=int(found.get("changed") or 0),
        message=found.get("message"),
    )


def judge(results: Sequence[IntentReplay], gate: ReplayGate, model: str) -> ReplayGateReport:
    """Sum the intents' replays and hold the share changed against the gate's limit; a
    replay that failed fails the gate (nothing vouches for the version)."""
    compared = sum(r.compared for r in results)
    changed = sum(r.changed for r in results)
    failed = [r for r in results if r.failed]
    limit = gate.max_decision_change
    if failed:
        message = "; ".join(f"the replay of {r.intent} failed: {r.message}" for r in failed)
        passed = False
    elif not results:
        message, passed = f"no AutomationIntent calls {model}: nothing to replay", True
    elif compared == 0:
        reasons = "; ".join(f"{r.intent}: {r.message}" for r in results if r.message)
        message = "nothing to compare in the window" + (f" ({reasons})" if reasons else "")
        passed = True
    else:
        share = changed / compared
        passed = share <= limit
        message = (
            f"{changed} of {compared} decisions ({share:.1%}) would change "
            f"{'within' if passed else 'beyond'} the limit of {limit:.1%}"
        )
    return ReplayGateReport(
        intents=list(results), compared=compared, changed=changed, passed=passed, message=message
    )


def start_job(
    api: client.ApiClient, replayed: Replayed, intent: str, name: str, owner: Mapping[str, Any]
) -> bool:
    """Make the Job replaying ``intent`` (one an earlier attempt made stays); False when the
    intent has no runners (yet), so nothing it decided to replay."""
    try:
        runners: Any = client.AppsV1Api(api).read_namespaced_stateful_set(
            runner_name(intent), replayed.namespace, _preload_content=False
        )
    except ApiException as error:
        if error.status != 404:
            raise
        return False
    body: Any = replay_job(intent, json.loads(runners.data), name, replayed, owner)
    try:
        client.BatchV1Api(api).create_namespaced_job(replayed.namespace, body)
    except ApiException as error:
        if error.status != 409:  # 409: made by an earlier attempt
            raise
    return True


def _pods(api: client.ApiClient, namespace: str, job: str) -> list[dict[str, Any]]:
    found: Any = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"job-name={job}", _preload_content=False
    )
    return list(json.loads(found.data)["items"])


def job_result(api: client.ApiClient, namespace: str, intent: str, job: str) -> IntentReplay | None:
    """The replay's counts once its Job ended (its pod's termination message), else None."""
    found: Any = client.BatchV1Api(api).read_namespaced_job(job, namespace, _preload_content=False)
    succeeded = finished(json.loads(found.data))
    if succeeded is None:
        return None
    message = ""
    for pod in _pods(api, namespace, job):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = terminated.get("message") or message
    if not message and not succeeded:
        message = "the Job failed before its pod reported (see kubectl describe job)"
    return intent_result(intent, job, succeeded, message)


def job_log(api: client.ApiClient, namespace: str, job: str) -> str:
    """What the Job's pod printed: the whole report, as its last line."""
    logs = [
        client.CoreV1Api(api).read_namespaced_pod_log(pod["metadata"]["name"], namespace)
        for pod in _pods(api, namespace, job)
    ]
    return "".join(str(log) for log in logs)


class NotServed(Exception):
    """The new version cannot be asked on its own: nothing to replay it through."""


class ReplayGateActivities:
    """The replay gate's activity, sharing one Kubernetes client per worker."""

    def __init__(self) -> None:
        self._api: client.ApiClient | None = None

    @property
    def api(self) -> client.ApiClient:
        if self._api is None:
            self._api = api_client()
        return self._api

    @activity.defn(name="replay_gate")
    async def replay_gate(self, request: ReplayRequest) -> ReplayGateReport:
        """Replay each intent calling the model with its new version, and judge."""
        try:
            jobs = await asyncio.to_thread(self._start, request)
        except NotServed as error:
            return ReplayGateReport(passed=False, message=str(error))
        results: dict[str, IntentReplay] = {}
        while len(results) < len(jobs):
            activity.heartbeat(sorted(results))
            for intent, job in jobs.items():
                if intent not in results:
                    found = await asyncio.to_thread(
                        job_result, self.api, request.namespace, intent, job
                    )
                    if found is not None:
                        results[intent] = found
            if len(results) < len(jobs):
                await asyncio.sleep(POLL_SECONDS)
        ordered = [results[intent] for intent in sorted(results)]
        return judge(ordered, request.gate, f"modeldeployment/{request.name}")

    def _start(self, request: ReplayRequest) -> dict[str, str]:
        """Make (or find) the Job of each intent calling the model: intent → Job name."""
        objects = client.CustomObjectsApi(self.api)
        md: Any = objects.get_namespaced_custom_object(
            GROUP, VERSION, request.namespace, ModelDeployment.crd.plural, request.name
        )
        target = served_target(md.get("status") or {}, request.version)
        if target is None:
            raise NotServed(
                f"{request.version} has no endpoint of its own to replay through (it is "
                "not served beside the stable version)"
            )
        record: Any = objects.get_namespaced_custom_object(
            GROUP,
            VERSION,
            request.namespace,
            ModelRollout.crd.plural,
            rollout_name(request.name, request.version),
        )
        owner = owner_reference({**record, "kind": ModelRollout.crd.kind})
        replayed = Replayed(
            request.namespace,
            request.name,
            request.version,
            target,
            (f"--since-seconds={request.gate.window_seconds}",),
        )
        listed: Any = objects.list_namespaced_custom_object(
            GROUP, VERSION, request.namespace, AutomationIntent.crd.plural
        )
        jobs: dict[str, str] = {}
        for intent in listed["items"]:
            name = intent["metadata"]["name"]
            job = job_name(name, request.workflow_id)
            if calls_model(intent, request.name) and start_job(
                self.api, replayed, name, job, owner
            ):
                jobs[name] = job
        return jobs
