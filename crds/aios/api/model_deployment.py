"""ModelDeployment: a model version served by Triton or KServe, rolled out under analysis gates."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from itertools import pairwise
from typing import Literal

from pydantic import Field

from aios.api.base import (
    AGE,
    QUANTITY,
    ApiModel,
    ApprovalRule,
    Count,
    CrdInfo,
    Fraction,
    Invariant,
    Name,
    PrinterColumn,
    Resource,
    ResourceStatus,
    condition_column,
    defaults_to,
)

ModelFormat = Literal["onnx", "python", "pytorch", "tensorflow", "sklearn", "xgboost"]
Runtime = Literal["triton", "kserve"]
Strategy = Literal["direct", "canary", "shadow"]
Outcome = Literal["promoted", "rolledBack", "aborted"]


def version_slug(version: str) -> str:
    """A DNS label from a version: 2024.11.2 → 2024-11-2 (a digest keeps long ones unique)."""
    slug = re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-") or "v"
    if len(slug) > 20 or slug != version.lower().replace(".", "-"):
        slug = f"{slug[:13].strip('-')}-{hashlib.sha256(version.encode()).hexdigest()[:6]}"
    return slug


class ModelSource(ApiModel):
    """The model artefact to serve."""

    name: Name = Field(description="Model name as the runtime exposes it (DNS-1123 label).")
    version: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$",
        description="Model version, e.g. 2024.11.3; promotion and rollback are by version.",
    )
    storage_uri: str = Field(
        max_length=2048,
        pattern=r"^(file|s3|gs|pvc|https?)://\S+$",
        description="Where the model repository lives: file://, s3://, gs://, pvc:// or http(s)://.",
    )
    format: ModelFormat = Field(default="python", description="Serialisation format of the model.")


class Resources(ApiModel):
    """Compute requested for each serving replica."""

    cpu: str = Field(default="1", pattern=QUANTITY, description="CPU request, e.g. 500m or 2.")
    memory: str = Field(default="1Gi", pattern=QUANTITY, description="Memory request, e.g. 2Gi.")
    gpu: int = Field(default=0, ge=0, le=16, description="Number of GPUs per replica.")


class Autoscaling(ApiModel):
    """Horizontal autoscaling of the serving replicas."""

    min_replicas: int = Field(
        default=1, ge=0, le=100, description="Fewest replicas; 0 allows scale to zero (KServe)."
    )
    max_replicas: int = Field(default=3, ge=1, le=100, description="Most replicas.")
    target_utilization_percent: int = Field(
        default=70, ge=1, le=100, description="Average utilisation the autoscaler aims for."
    )

    invariants = (
        Invariant(
            rule="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            check=lambda a: a.min_replicas <= a.max_replicas,
        ),
    )


class ModelCard(ApiModel):
    """Governance facts about the model, shown to reviewers and auditors."""

    owner: str = Field(min_length=1, max_length=256, description="Accountable team or person.")
    intended_use: str = Field(
        min_length=1, max_length=4096, description="What the model is for, and for what it is not."
    )
    limitations: str | None = Field(
        default=None, max_length=4096, description="Known weaknesses and failure modes."
    )
    training_data: str | None = Field(
        default=None, max_length=4096, description="Provenance and period of the training data."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Offline evaluation metrics, e.g. {auc: 0.93}."
    )
    personal_data: bool = Field(
        default=False, description="Whether the model was trained on or consumes personal data."
    )


class Decision(ApiModel):
    """How model outputs become decisions."""

    confidence_threshold: Fraction = Field(
        default=0.7, description="Below this confidence the deterministic fallback decides."
    )
    fallback_rule: str | None = Field(
        default=None,
        max_length=253,
        description="Id of the deterministic rule used when the model is unsure, stale or down.",
    )


class CanaryStep(ApiModel):
    """One traffic shift of a canary rollout."""

    weight: int = Field(ge=1, le=100, description="Percent of traffic sent to the new version.")
    pause_seconds: int = Field(
        default=60, ge=0, le=86400, description="How long to observe before analysing this step."
    )


class ReplayGate(ApiModel):
    """Before any live traffic moves: the readings the intents calling this model kept are
    decided again with the new version's outputs, held against the decisions made."""

    window_seconds: int = Field(
        default=3600, ge=60, le=604800, description="How far back the replay reaches."
    )
    max_decision_change: Fraction = Field(
        description="Highest share of the compared decisions the new version may change."
    )
    on_exceeded: Literal["rollback", "approval"] = Field(
        default="rollback",
        description="Over the limit: roll back, or wait for a human approval (which then "
        "approves the version; a rejection rolls back).",
    )


class MetricGate(ApiModel):
    """A gate of the platform team's own, declared as Argo Rollouts declares an analysis
    metric: a PromQL query asked of the site's Prometheus when the step ends, and the bounds
    its value must keep. A query that returns nothing fails the gate."""

    name: Name = Field(description="Names the gate in the report.")
    query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL giving one number. $namespace, $model, $version, $stable and"
        " $window stand for the ModelDeployment's namespace and name, the new and the stable"
        " version, and the step's window (e.g. 45s).",
    )
    max: float | None = Field(default=None, description="Highest value that passes.")
    min: float | None = Field(default=None, description="Lowest value that passes.")

    invariants = (
        Invariant(
            rule="has(self.max) || has(self.min)",
            message="a metric gate needs max, min or both",
            check=lambda g: g.max is not None or g.min is not None,
        ),
    )


class Analysis(ApiModel):
    """Gates the new version must pass at every step; failing any one rolls back."""

    max_error_rate: Fraction = Field(default=0.01, description="Highest share of failed requests.")
    max_p99_latency_ms: float = Field(
        default=250, gt=0, description="Highest p99 inference latency in milliseconds."
    )
    max_drift_psi: float = Field(
        default=0.2,
        ge=0,
        description="Highest population stability index of the new version's scores against"
        " the stable version's.",
    )
    min_confidence_mean: Fraction | None = Field(
        default=None, description="Lowest mean confidence of the new version's outputs."
    )
    min_decision_agreement: Fraction | None = Field(
        default=None, description="Lowest share of decisions equal to the stable version's."
    )
    min_requests: int = Field(
        default=50,
        ge=0,
        description="Readings the new version must have served in the step to be judged on"
        " live traffic (the runners' metrics, from the Prometheus the chart names); below it,"
        " this many synthetic probe requests stand in, and the report says so.",
    )
    replay: ReplayGate | None = Field(
        default=None,
        description="Replay recent readings through the new version before it takes traffic.",
    )
    metrics: list[MetricGate] = Field(
        default_factory=list,
        max_length=10,
        description="Gates of your own: PromQL queries over the step's window, each with its"
        " bounds (needs the chart's monitoring.prometheusUrl).",
    )


class Rollout(ApiModel):
    """How a new version replaces the active one."""

    strategy: Strategy = Field(
        default="direct",
        description="direct: replace at once; canary: shift traffic by steps; "
        "shadow: mirror traffic without acting on the new version's outputs.",
    )
    steps: list[CanaryStep] = Field(
        default_factory=list,
        max_length=20,
        description="Canary steps, by strictly increasing weight; required for canary.",
    )
    shadow_seconds: int = Field(
        default=600, ge=1, le=604800, description="How long a shadow rollout mirrors traffic."
    )
    progress_deadline_seconds: int = Field(
        default=600,
        ge=10,
        le=86400,
        description="How long the new version may take to answer (load its model) before "
        "the rollout rolls back.",
    )
    analysis: Analysis = defaults_to(Analysis, "Gates checked before each promotion.")

    invariants = (
        Invariant(
            rule="self.strategy != 'canary' || (has(self.steps) && size(self.steps) > 0)",
            message="a canary rollout needs at least one step",
            check=lambda r: r.strategy != "canary" or bool(r.steps),
            field_path=".steps",
        ),
        Invariant(
            rule="!has(self.steps) || (self.steps.map(s, s.weight).isSorted() && "
            "self.steps.all(s, self.steps.exists_one(t, t.weight == s.weight)))",
            message="canary step weights must strictly increase",
            check=lambda r: all(a.weight < b.weight for a, b in pairwise(r.steps)),
            field_path=".steps",
        ),
    )


class ModelDeploymentSpec(ApiModel):
    """Desired serving of one model version."""

    model: ModelSource = Field(description="The model artefact to serve.")
    runtime: Runtime = Field(
        default="triton", description="Serving runtime: Triton Inference Server or KServe."
    )
    resources: Resources = defaults_to(Resources, "Compute per serving replica.")
    autoscaling: Autoscaling = defaults_to(Autoscaling, "Replica bounds and scaling target.")
    model_card: ModelCard | None = Field(default=None, description="Governance facts.")
    decision: Decision = defaults_to(Decision, "Confidence threshold and fallback rule.")
    rollout: Rollout = defaults_to(Rollout, "How a new version replaces the active one.")
    approval: ApprovalRule = defaults_to(ApprovalRule, "Whether promotion needs human approval.")


class Endpoints(ApiModel):
    """Where clients reach the model (Open Inference / V2 protocol)."""

    http: str | None = Field(default=None, description="HTTP base URL.")
    grpc: str | None = Field(default=None, description="gRPC host:port.")


class ServingTarget(ApiModel):
    """One version of the model behind its own endpoint; callers route between these
    (``aios.connectors.inference.route``)."""

    version: str = Field(description="The ModelDeployment version served here.")
    model: str = Field(description="Model name to put in V2 requests (no model version).")
    storage_uri: str = Field(description="The model repository this version is served from.")
    format: ModelFormat = Field(default="python", description="Serialisation format.")
    http: str | None = Field(default=None, description="V2 HTTP base URL of this version.")
    grpc: str | None = Field(default=None, description="V2 gRPC host:port of this version.")
    ready: bool | None = Field(
        default=None,
        description="Whether it answered when the operator last checked; callers send a "
        "canary or shadow nothing until it does.",
    )


class AnalysisReport(ApiModel):
    """What one analysis measured on the new version, next to the stable version."""

    traffic: Literal["live", "probes"] = Field(
        default="probes",
        description="What the version was judged on: the readings it served (live), or"
        " synthetic probes when live traffic was below minRequests or no Prometheus was named.",
    )
    live_requests: int | None = Field(
        default=None,
        ge=0,
        description="Readings the new version served in the step, from Prometheus (absent:"
        " none was asked).",
    )
    requests: int = Field(ge=0, description="Requests the new version was judged on.")
    error_rate: float = Field(
        ge=0, le=1, description="Share of the new version's requests that failed."
    )
    p99_latency_ms: float | None = Field(default=None, description="New version's p99 latency.")
    stable_p99_latency_ms: float | None = Field(
        default=None, description="Stable version's p99 latency on the same requests."
    )
    confidence_mean: float | None = Field(
        default=None, description="New version's mean confidence."
    )
    drift_psi: float | None = Field(
        default=None, description="Population stability index of its scores vs the stable's."
    )
    agreement: float | None = Field(
        default=None, description="Share of requests both versions decided alike."
    )
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="Each metric gate's value (null: its query returned nothing).",
    )
    passed: bool = Field(description="Whether every gate held.")
    reasons: list[str] = Field(default_factory=list, description="Each gate that failed, and why.")


class RolloutStep(ApiModel):
    """One step taken: the traffic weight set, and what the analysis found."""

    step: int = Field(ge=0, description="0 deploys the new version; 1.. are the canary steps.")
    weight: int = Field(ge=0, le=100, description="Percent of traffic on the new version.")
    started_at: datetime = Field(description="When the step began.")
    analysis: AnalysisReport | None = Field(default=None, description="The step's analysis.")


class IntentReplay(ApiModel):
    """The replay of one intent's window with the new version."""

    intent: str = Field(description="The AutomationIntent replayed.")
    job: str = Field(description="The Job that replayed it (its log holds the whole report).")
    compared: Count = Field(default=0, description="Decisions compared.")
    changed: Count = Field(default=0, description="Decisions the new version would change.")
    message: str | None = Field(
        default=None, description="Why nothing was compared, or why the replay failed."
    )
    failed: bool = Field(default=False, description="Whether the replay could not be run.")


class ReplayGateReport(ApiModel):
    """What the replay gate found before any live traffic moved."""

    intents: list[IntentReplay] = Field(default_factory=list, description="One per intent.")
    compared: Count = Field(default=0, description="Decisions compared, over the intents.")
    changed: Count = Field(default=0, description="Decisions changed, over the intents.")
    passed: bool = Field(description="Whether the share changed stayed within the limit.")
    message: str = Field(description="The finding, in words.")


class ApprovalRecord(ApiModel):
    """A human decision on promoting one version, as the rollout workflow took it from its
    Approval object (``aiosctl approve|reject``)."""

    name: str | None = Field(
        default=None,
        description="The Approval object that records the decision "
        "(absent from records made before Approval objects).",
    )
    version: str = Field(description="The version decided on.")
    decision: Literal["approved", "rejected"] = Field(description="The decision.")
    by: str = Field(description="Who decided, as the API server authenticated them.")
    at: datetime = Field(description="When.")


RolloutPhase = Literal[
    "Deploying", "Progressing", "AwaitingApproval", "Promoted", "RolledBack", "Aborted"
]


class RolloutStatus(ApiModel):
    """The rollout of one version, as its Temporal workflow reports it."""

    version: str = Field(description="The version being rolled out.")
    strategy: Strategy = Field(description="How it is rolled out.")
    source: ModelSource = Field(description="The new version's model artefact.")
    workflow_id: str = Field(description="The Temporal workflow driving the rollout.")
    phase: RolloutPhase = Field(description="Where the rollout is.")
    weight: int = Field(
        default=0, ge=0, le=100, description="Percent of traffic on the new version."
    )
    revision: int = Field(
        default=0, ge=0, description="Bumped by the workflow whenever serving must change."
    )
    message: str | None = Field(default=None, description="The latest decision, in words.")
    steps: list[RolloutStep] = Field(
        default_factory=list, max_length=22, description="Steps taken so far, in order."
    )
    approval: ApprovalRecord | None = Field(
        default=None, description="The approval or rejection, when one was given."
    )
    replay: ReplayGateReport | None = Field(
        default=None, description="The replay gate's finding, when the rollout has one."
    )


class HistoryEntry(ApiModel):
    """One past rollout, with the model card of the version it concerned."""

    version: str = Field(description="The version rolled out.")
    promoted_at: datetime = Field(description="When the rollout finished.")
    approved_by: str | None = Field(default=None, description="Who approved the promotion.")
    outcome: Outcome = Field(description="How the rollout ended.")
    reason: str | None = Field(default=None, description="Why it ended so.")
    model_card: ModelCard | None = Field(default=None, description="The version's model card.")


class ModelDeploymentStatus(ResourceStatus):
    """Observed serving and rollout state."""

    active_version: str | None = Field(default=None, description="Version taking stable traffic.")
    canary_version: str | None = Field(default=None, description="Version under rollout, if any.")
    canary_weight: int = Field(
        default=0, ge=0, le=100, description="Percent of traffic on the canary version."
    )
    endpoints: Endpoints | None = Field(default=None, description="Inference endpoints.")
    stable: ServingTarget | None = Field(default=None, description="The version serving traffic.")
    canary: ServingTarget | None = Field(
        default=None, description="The canary, taking canaryWeight percent of the requests."
    )
    shadow: ServingTarget | None = Field(
        default=None, description="The shadow: mirrored requests, its answers never used."
    )
    rollout: RolloutStatus | None = Field(default=None, description="The latest rollout.")
    observed_rollout_revision: int = Field(
        default=0, ge=0, description="The rollout revision the operator last served."
    )
    model_card_summary: str | None = Field(
        default=None, description="One-line summary of the model card."
    )
    history: list[HistoryEntry] = Field(
        default_factory=list, max_length=20, description="Most recent rollouts, newest last."
    )


class ModelDeployment(Resource[ModelDeploymentSpec, ModelDeploymentStatus]):
    """A model version served by Triton or KServe, with its governed rollout."""

    crd = CrdInfo(
        kind="ModelDeployment",
        plural="modeldeployments",
        short_names=("md", "mdep"),
        printer_columns=(
            PrinterColumn("Runtime", ".spec.runtime"),
            PrinterColumn("Active", ".status.activeVersion"),
            PrinterColumn("Canary", ".status.canaryVersion"),
            PrinterColumn("Weight", ".status.canaryWeight", "integer"),
            PrinterColumn("Rollout", ".status.rollout.phase"),
            condition_column("Ready"),
            AGE,
        ),
    )
