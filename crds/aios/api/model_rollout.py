"""ModelRollout: one version's rollout as its Temporal workflow publishes it, a child of the
ModelDeployment that only the namespace's workflow worker writes.

The operator reads it (a watch) and mirrors it into the ModelDeployment's
``status.rollout``, which it alone writes; so no two processes ever write the same
object's status. ``kubectl get modelrollouts`` lists every rollout a namespace has run.
"""

from __future__ import annotations

from pydantic import Field

from aios.api.base import (
    AGE,
    ApiModel,
    CrdInfo,
    PrinterColumn,
    Resource,
    ResourceStatus,
    immutable,
)
from aios.api.model_deployment import RolloutStatus, version_slug


def rollout_name(model_deployment: str, version: str) -> str:
    """The ModelRollout of one version: there is one rollout workflow per version."""
    return f"{model_deployment[:200]}-{version_slug(version)}"


class ModelRolloutSpec(ApiModel):
    """Which rollout this is, fixed when the workflow first publishes."""

    model_deployment: str = Field(
        min_length=1, max_length=253, description="The ModelDeployment rolled out (its owner)."
    )
    version: str = Field(min_length=1, max_length=128, description="The version rolled out.")
    workflow_id: str = Field(min_length=1, description="The Temporal workflow driving it.")


class ModelRolloutStatus(ResourceStatus):
    """The workflow's latest publication."""

    rollout: RolloutStatus | None = Field(default=None, description="The rollout record.")
    sequence: int = Field(
        default=0,
        ge=0,
        description="The publication's number: a retried older one never overwrites a newer.",
    )


class ModelRollout(Resource[ModelRolloutSpec, ModelRolloutStatus]):
    """One version's rollout, as its workflow reports it."""

    spec: ModelRolloutSpec = Field(
        json_schema_extra=immutable("a ModelRollout names one rollout for good")
    )

    crd = CrdInfo(
        kind="ModelRollout",
        plural="modelrollouts",
        short_names=("mro",),
        printer_columns=(
            PrinterColumn("ModelDeployment", ".spec.modelDeployment"),
            PrinterColumn("Version", ".spec.version"),
            PrinterColumn("Strategy", ".status.rollout.strategy"),
            PrinterColumn("Phase", ".status.rollout.phase"),
            PrinterColumn("Weight", ".status.rollout.weight", "integer"),
            AGE,
        ),
    )
