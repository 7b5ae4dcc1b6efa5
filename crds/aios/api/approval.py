"""Approval: a human's decision on a model version's promotion or on an action, as an object
the API server vouches for.

The API server authenticates whoever creates it; the admission webhook admits it only when
``spec.approver`` is that user (and groups they hold), the target waits for a decision, and
the user is among the target's approvers. The spec can never change afterwards, so the
object stays the record of who decided. The workflows read it through the API before they
act: a Temporal signal only tells them where to look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from aios.api.base import (
    AGE,
    API_VERSION,
    ApiModel,
    CrdInfo,
    Invariant,
    PrinterColumn,
    Resource,
    ResourceStatus,
    condition_column,
    immutable,
)

TargetKind = Literal["ModelDeployment", "Action"]
Decision = Literal["approved", "rejected"]


MAX_RECORDED_GROUPS = 64


def permits(approvers: Iterable[str], username: str, groups: Iterable[str]) -> bool:
    """``group:NAME`` admits a member of the group, ``user:NAME`` or a bare name the user;
    an empty list leaves it to RBAC (who may create Approvals) alone."""
    listed = list(approvers)
    if not listed:
        return True
    held = set(groups)
    for entry in listed:
        kind, _, value = entry.partition(":") if ":" in entry else ("user", "", entry)
        if (kind == "group" and value in held) or (kind == "user" and value == username):
            return True
    return False


class Target(ApiModel):
    """What the decision is about."""

    kind: TargetKind = Field(description="ModelDeployment (a version's promotion) or Action.")
    name: str = Field(
        min_length=1,
        max_length=253,
        description="The ModelDeployment's name, or the action id (its workflow id).",
    )
    version: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="The version decided on (ModelDeployment).",
    )

    invariants = (
        Invariant(
            rule="self.kind != 'ModelDeployment' || has(self.version)",
            message="a ModelDeployment decision names its version",
            check=lambda t: t.kind != "ModelDeployment" or t.version is not None,
            field_path=".version",
        ),
    )


class User(ApiModel):
    """A user as the API server authenticated them: the admission webhook admits the object
    only when its creator is this user, in these groups."""

    username: str = Field(
        min_length=1, max_length=253, description="The user's name (checked at admission)."
    )
    groups: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list,
        max_length=MAX_RECORDED_GROUPS,
        description="Groups of the user the object relies on (checked at admission).",
    )

    @classmethod
    def authenticated(cls, username: str, groups: Iterable[str]) -> User:
        """The user as an object records them: the cluster's own ``system:`` groups left
        out (no approver list names them), at most as many groups as the field holds."""
        kept = [g for g in groups if not g.startswith("system:")][:MAX_RECORDED_GROUPS]
        return cls(username=username, groups=kept)


class ApprovalSpec(ApiModel):
    """One decision, fixed once made."""

    target: Target = Field(description="What is decided on.")
    decision: Decision = Field(description="approved or rejected.")
    approver: User = Field(description="Who decided.")
    reason: str = Field(default="", max_length=1024, description="Why, in their words.")


class ApprovalStatus(ResourceStatus):
    """Whether the decision reached its target's workflow (Ready)."""


class Approval(Resource[ApprovalSpec, ApprovalStatus]):
    """A human decision on a model version or an action, vouched for by the API server."""

    spec: ApprovalSpec = Field(
        json_schema_extra=immutable("an Approval cannot be changed; create another")
    )

    crd = CrdInfo(
        kind="Approval",
        plural="approvals",
        short_names=("aapr",),
        printer_columns=(
            PrinterColumn("Target", ".spec.target.kind"),
            PrinterColumn("Name", ".spec.target.name"),
            PrinterColumn("Version", ".spec.target.version"),
            PrinterColumn("Decision", ".spec.decision"),
            PrinterColumn("By", ".spec.approver.username"),
            condition_column("Ready"),
            AGE,
        ),
    )


def approval_manifest(
    namespace: str, target: Mapping[str, Any], decision: str, approver: User, reason: str
) -> dict[str, Any]:
    """The Approval object recording ``approver``'s ``decision`` on ``target`` (what
    ``aiosctl approve|reject`` and the console create with the approver's own token)."""
    return {
        "apiVersion": API_VERSION,
        "kind": Approval.crd.kind,
        "metadata": {"generateName": f"{str(target['name'])[:200]}-", "namespace": namespace},
        "spec": {
            "target": dict(target),
            "decision": decision,
            "approver": approver.model_dump(by_alias=True),
            "reason": reason,
        },
    }
