"""What crosses the rollout workflow's boundary: its input (the operator starts it with
one), its activities' inputs and results, and the Event of a refused decision."""

from __future__ import annotations

from dataclasses import dataclass, field

from aios.api.model_deployment import (
    Analysis,
    CanaryStep,
    ModelSource,
    ReplayGate,
    RolloutStatus,
    Strategy,
)

WORKFLOW_NAME = "ModelRollout"
ABORT_SIGNAL = "abort"
"""The workflow and its abort signal by name: the operator starts and aborts rollouts
without importing the workflow's activities (and the analysis's numpy with them)."""
APPROVAL_REFUSED = "ApprovalRefused"
"""The Event (and audit record) of a decision the workflow did not take."""


@dataclass(frozen=True)
class RolloutInput:
    """Everything the rollout needs, fixed when it starts."""

    namespace: str
    name: str
    version: str
    strategy: Strategy
    source: ModelSource
    workflow_id: str
    steps: list[CanaryStep] = field(default_factory=list)
    shadow_seconds: int = 600
    gates: Analysis = field(default_factory=Analysis)
    approval_required: bool = False
    ready_timeout_seconds: int = 600
    approvers: list[str] = field(default_factory=list)
    """``spec.approval.approvers``, checked again on the Approval read (admission did first)."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the ModelDeployment."""

    reason: str
    message: str
    type: str = "Normal"


@dataclass(frozen=True)
class Publication:
    """One change of the rollout's record (its ModelRollout), with the Event that tells it."""

    namespace: str
    name: str
    rollout: RolloutStatus
    event: Event | None
    sequence: int
    """Numbers the publications: a retried activity never posts an Event twice, nor writes
    an older record over a newer one."""


@dataclass(frozen=True)
class ServingCheck:
    namespace: str
    name: str
    workflow_id: str
    revision: int
    candidate_ready: bool
    timeout_seconds: int
    """How long this check watches (a window of the rollout's progress deadline)."""


@dataclass(frozen=True)
class ServingResult:
    ok: bool
    reason: str = ""
    waiting: bool = False
    """Not ready within the check's window (``reason`` says what is missing); asking again
    may succeed. A result that is neither ok nor waiting is final."""


@dataclass(frozen=True)
class AnalysisRequest:
    namespace: str
    name: str
    gates: Analysis
    shadow: bool
    window_seconds: int = 0
    """How far back the live traffic counts: since the step (or the shadow) began."""


@dataclass(frozen=True)
class ReplayRequest:
    """The replay gate of one rollout: its new version against the intents calling it."""

    namespace: str
    name: str
    version: str
    workflow_id: str
    gate: ReplayGate
