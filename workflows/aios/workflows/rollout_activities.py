"""The rollout workflow's side effects: its ModelRollout, Events, serving checks, analyses.

Every activity is safe to retry: a publication carries the workflow's whole rollout
record (so writing it twice writes the same thing), is refused when another rollout has
taken over the object, and names its Event after the workflow and a sequence number (so
a retry cannot post it twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from aios.api import GROUP, VERSION, ModelDeployment, ModelRollout
from aios.api.base import owner_reference
from aios.api.model_deployment import Analysis, AnalysisReport, RolloutStatus
from aios.api.model_rollout import ModelRolloutSpec, ModelRolloutStatus, rollout_name
from aios.connectors.audit import AuditWriter
from aios.connectors.inference import InferenceClient, InferenceError
from aios.connectors.kube import api_client, event
from aios.connectors.prometheus import PROMETHEUS_URL_ENV, Prometheus, PrometheusError
from aios.connectors.serving import cluster_address, explain, ready
from aios.workflows.analysis import (
    Measured,
    Sample,
    hopeless,
    judge,
    measured,
    probe_inputs,
    summarise,
)
from aios.workflows.live_analysis import Window, measure_gates, measure_live
from aios.workflows.rollout_io import (
    APPROVAL_REFUSED,
    AnalysisRequest,
    Publication,
    ServingCheck,
    ServingResult,
)

PLURAL = ModelDeployment.crd.plural
ROLLOUTS = ModelRollout.crd.plural
COMPONENT = "aios-rollout"
PROBE_TIMEOUT = 5.0
ROLLOUTS_KEPT = 20
"""ModelRollouts kept per ModelDeployment, the newest: as many as its ``status.history``."""

DRIFT_METRIC = "aios_rollout_drift_psi"
DRIFT_HELP = (
    "Score drift (PSI) of a rollout's new version against the stable one at its latest"
    " analysis, by model (namespace/name) and version."
)


def expired(items: Sequence[Mapping[str, Any]], model_deployment: str) -> list[str]:
    """The ModelRollouts of ``model_deployment`` beyond the newest ``ROLLOUTS_KEPT``."""
    mine = [i for i in items if (i.get("spec") or {}).get("modelDeployment") == model_deployment]
    mine.sort(
        key=lambda i: (i["metadata"].get("creationTimestamp") or "", i["metadata"]["name"]),
        reverse=True,
    )
    return [i["metadata"]["name"] for i in mine[ROLLOUTS_KEPT:]]


class RolloutActivities:
    """The activities, sharing one Kubernetes client per worker."""

    def __init__(self, prometheus_url: str | None = None) -> None:
        self._api: client.ApiClient | None = None
        self.audit = AuditWriter()
        self.prometheus_url = (
            os.environ.get(PROMETHEUS_URL_ENV, "") if prometheus_url is None else prometheus_url
        )

    @property
    def api(self) -> client.ApiClient:
        if self._api is None:
            self._api = api_client()
        return self._api

    def all(self) -> Sequence[Callable[..., Any]]:
        return [self.publish_rollout, self.await_serving, self.analyse_rollout]

    def _get(self, namespace: str, name: str) -> dict[str, Any]:
        """The ModelDeployment; once it is deleted, retrying cannot help: the rollout ends."""
        objects = client.CustomObjectsApi(self.api)
        try:
            found: Any = objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                raise ApplicationError(
                    f"modeldeployment {namespace}/{name} is gone", non_retryable=True
                ) from error
            raise
        return dict(found)

    # -- publish ---------------------------------------------------------------------

    @activity.defn(name="publish_rollout")
    async def publish_rollout(self, publication: Publication) -> bool:
        """Write the rollout record and post its Event; False when another rollout owns
        the object now (this one was superseded)."""
        return await asyncio.to_thread(self._publish, publication)

    def _publish(self, p: Publication) -> bool:
        md = self._get(p.namespace, p.name)
        current = (md.get("status") or {}).get("rollout") or {}
        if current.get("workflowId") not in (None, p.rollout.workflow_id):
            activity.logger.info("%s/%s: superseded, not publishing", p.namespace, p.name)
            return False
        previous = self._record(md, p)
        if p.event is not None:
            self._post_event(md, p)
        self._audit(previous, p)
        return True

    def _record(self, md: Mapping[str, Any], p: Publication) -> RolloutStatus | None:
        """Write the publication into the rollout's ModelRollout (made at the first one);
        returns the record it replaces. An older publication, retried after a newer one
        landed, changes nothing."""
        objects = client.CustomObjectsApi(self.api)
        record = self._model_rollout(md, p)
        status = ModelRolloutStatus.model_validate(record.get("status") or {})
        if status.sequence > p.sequence:
            return status.rollout
        body = {
            # Optimistic concurrency: an earlier attempt of this activity still in flight
            # makes this fail and retry, rather than land under it.
            "metadata": {"resourceVersion": record["metadata"]["resourceVersion"]},
            # The whole record, nulls included: a merge patch removes what became unset.
            "status": {
                "rollout": p.rollout.model_dump(mode="json", by_alias=True),
                "sequence": p.sequence,
            },
        }
        objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, p.namespace, ROLLOUTS, record["metadata"]["name"], body
        )
        return status.rollout

    def _model_rollout(self, md: Mapping[str, Any], p: Publication) -> dict[str, Any]:
        """The rollout's ModelRollout, owned by the ModelDeployment (it goes with it)."""
        objects = client.CustomObjectsApi(self.api)
        name = rollout_name(p.name, p.rollout.version)
        try:
            found: Any = objects.get_namespaced_custom_object(
                GROUP, VERSION, p.namespace, ROLLOUTS, name
            )
            return dict(found)
        except ApiException as error:
            if error.status != 404:
                raise
        owner = owner_reference({**md, "kind": ModelDeployment.crd.kind})
        created = ModelRollout(
            metadata={"name": name, "namespace": p.namespace, "ownerReferences": [owner]},
            spec=ModelRolloutSpec(
                model_deployment=p.name,
                version=p.rollout.version,
                workflow_id=p.rollout.workflow_id,
            ),
        )
        wire = created.model_dump(mode="json", by_alias=True, exclude_none=True)
        try:
            made: Any = objects.create_namespaced_custom_object(
                GROUP, VERSION, p.namespace, ROLLOUTS, wire
            )
        except ApiException as error:
            if error.status != 409:  # 409: made by an earlier attempt of this activity
                raise
            made = objects.get_namespaced_custom_object(GROUP, VERSION, p.namespace, ROLLOUTS, name)
        self._forget_old_rollouts(p.namespace, p.name)
        return dict(made)

    def _forget_old_rollouts(self, namespace: str, model_deployment: str) -> None:
        """A new rollout makes room: the oldest beyond ``ROLLOUTS_KEPT`` go."""
        objects = client.CustomObjectsApi(self.api)
        listed: Any = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, ROLLOUTS)
        for name in expired(listed["items"], model_deployment):
            try:
                objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, ROLLOUTS, name)
            except ApiException as error:
                if error.status != 404:  # 404: gone already
                    raise

    def _audit(self, previous: RolloutStatus | None, p: Publication) -> None:
        """Promotions, rollbacks and refused approvals go to the audit trail (once each: the
        event id is the workflow's, so a retried activity records nothing new)."""
        if p.event is not None and p.event.reason == APPROVAL_REFUSED:
            self.audit.record(
                "approval",
                f"modeldeployment/{p.namespace}/{p.name}",
                {"outcome": "refused", "version": p.rollout.version, "reason": p.event.message},
                event_id=f"{p.rollout.workflow_id}:{p.sequence}",
            )
            return
        kind = {"Promoted": "promotion", "RolledBack": "rollback"}.get(p.rollout.phase)
        if kind is None:
            return
        approval = p.rollout.approval or (previous.approval if previous is not None else None)
        self.audit.record(
            kind,
            f"modeldeployment/{p.namespace}/{p.name}",
            {
                "model": {
                    "name": p.name,
                    "version": p.rollout.version,
                    "canary": p.rollout.strategy == "canary",
                },
                "approver": approval.by if approval is not None else None,
                "approval": approval.name if approval is not None else None,
                "reason": p.rollout.message,
                **(
                    {"replay": p.rollout.replay.model_dump(mode="json", by_alias=True)}
                    if p.rollout.replay is not None
                    else {}
                ),
            },
            actor=approval.by if approval is not None else None,
            event_id=f"{p.rollout.workflow_id}:{kind}",
        )

    def _post_event(self, md: Mapping[str, Any], p: Publication) -> None:
        assert p.event is not None
        digest = hashlib.sha256(p.rollout.workflow_id.encode()).hexdigest()[:8]
        body: Any = event(
            {**md, "kind": ModelDeployment.crd.kind},
            f"{p.name}.{digest}.{p.sequence:04d}",
            p.event.reason,
            p.event.message,
            COMPONENT,
            os.environ.get("POD_NAME", "aios-worker"),
            p.event.type,
        )
        try:
            client.CoreV1Api(self.api).create_namespaced_event(p.namespace, body)
        except ApiException as error:
            if error.status != 409:  # 409: posted by an earlier attempt of this activity
                raise

    # -- serving ---------------------------------------------------------------------

    @activity.defn(name="await_serving")
    async def await_serving(self, check: ServingCheck) -> ServingResult:
        """Watch, for ``check.timeout_seconds``, until the operator serves ``check.revision``
        and, when asked, the new version answers; a model that failed to load ends the
        wait at once. The workflow asks again until its progress deadline."""
        deadline = time.monotonic() + check.timeout_seconds
        reason = "not checked yet"
        while True:
            activity.heartbeat(reason)
            md = await asyncio.to_thread(self._get, check.namespace, check.name)
            status = md.get("status") or {}
            rollout = status.get("rollout") or {}
            if rollout.get("workflowId") != check.workflow_id:
                return ServingResult(False, "another rollout took over")
            if int(status.get("observedRolloutRevision") or 0) < check.revision:
                reason = f"the operator has not served revision {check.revision} yet"
            elif not check.candidate_ready:
                return ServingResult(True)
            else:
                target: dict[str, Any] = (
                    status.get("canary") or status.get("shadow") or status.get("stable") or {}
                )
                address = await asyncio.to_thread(cluster_address, self.api, target["http"])
                if address is None:  # its name is not asked: DNS would remember it missing
                    reason = f"no Service yet for {target['http']}"
                elif await ready(address, target["model"]):
                    activity.logger.info("%s answers at %s", target["version"], target["http"])
                    return ServingResult(True)
                else:
                    reason = await explain(self.api, target["http"], address, target["model"])
                    if " is UNAVAILABLE" in reason:  # Triton tried to load it and failed
                        return ServingResult(False, reason)
            if time.monotonic() > deadline:
                return ServingResult(False, reason, waiting=True)
            await asyncio.sleep(1.0)

    # -- analysis --------------------------------------------------------------------

    @activity.defn(name="analyse_rollout")
    async def analyse_rollout(self, request: AnalysisRequest) -> AnalysisReport:
        """Judge the new version on the readings it served in the step's window; below
        ``minRequests`` of them, on probe requests sent to both versions."""
        md = await asyncio.to_thread(self._get, request.namespace, request.name)
        status = md.get("status") or {}
        stable: dict[str, Any] = status["stable"]
        candidate: dict[str, Any] = status.get("shadow" if request.shadow else "canary") or stable
        gates = request.gates
        window = Window(
            request.namespace,
            request.name,
            str(stable["version"]),
            str(candidate["version"]),
            request.window_seconds,
        )
        live, values = await self._ask_prometheus(window, gates)
        if live is not None and live.requests >= max(gates.min_requests, 1):
            report = judge(live, gates, "live", live.requests, values)
        else:
            probed = await self._probe(stable, candidate, gates)
            seen = None if live is None else live.requests
            report = judge(probed, gates, "probes", seen, values)
        if report.drift_psi is not None:
            drift = activity.metric_meter().create_gauge_float(DRIFT_METRIC, DRIFT_HELP)
            model = f"{request.namespace}/{request.name}"
            drift.set(report.drift_psi, {"model": model, "version": str(candidate["version"])})
        return report

    async def _ask_prometheus(
        self, window: Window, gates: Analysis
    ) -> tuple[Measured | None, dict[str, float | None]]:
        """What the runners measured in the window (None: no Prometheus to ask, none
        answering, or one version on both sides), and each metric gate's value (absent:
        not asked)."""
        if not self.prometheus_url:
            return None, {}
        try:
            async with Prometheus(self.prometheus_url) as prometheus:
                values = await measure_gates(prometheus, gates.metrics, window)
                if window.stable == window.candidate:
                    return None, values
                return await measure_live(prometheus, window), values
        except PrometheusError as error:
            activity.logger.warning("Prometheus not asked, probing instead: %s", error)
            return None, {}

    async def _probe(
        self, stable: Mapping[str, Any], candidate: Mapping[str, Any], gates: Analysis
    ) -> Measured:
        """Send both versions the same probe requests (a failing version not to the end)."""
        planned = max(gates.min_requests, 20)
        async with (
            InferenceClient(stable["grpc"]) as stable_client,
            InferenceClient(candidate["grpc"]) as candidate_client,
        ):
            metadata = await self._metadata(candidate_client, stable_client, candidate, stable)
            samples = Sample(), Sample()
            for number, inputs in enumerate(probe_inputs(metadata, planned)):
                activity.heartbeat(number)
                pairs = (
                    (stable_client, stable, samples[0]),
                    (candidate_client, candidate, samples[1]),
                )
                for probe, target, sample in pairs:
                    await _measure(probe, target["model"], inputs, sample)
                if hopeless(samples[1], gates, planned):
                    break
        return measured(*samples)

    @staticmethod
    async def _metadata(
        candidate_client: InferenceClient,
        stable_client: InferenceClient,
        candidate: Mapping[str, Any],
        stable: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The new version's input signature, or the stable one's when it cannot tell."""
        try:
            return await candidate_client.metadata(candidate["model"])
        except InferenceError:
            return await stable_client.metadata(stable["model"])


async def _measure(
    probe: InferenceClient, model: str, inputs: dict[str, Any], sample: Sample
) -> None:
    started = time.perf_counter()
    try:
        outputs = await probe.infer(model, inputs, timeout=PROBE_TIMEOUT)
    except InferenceError:
        sample.add((time.perf_counter() - started) * 1000, None, None)
        return
    score, confidence = summarise(outputs)
    sample.add((time.perf_counter() - started) * 1000, score, confidence)
