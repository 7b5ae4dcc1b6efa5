"""ManualAction: a person asks for an intent's declared action now, or for an action to be
undone, as an object the API server vouches for.

The admission webhook admits it only when ``spec.requestedBy`` is the user the API server
authenticated, the intent declares the action (or the action to revert ran, declares its
compensation and was not reverted yet). The operator then starts the action workflow: the
same policy check, approval, rate limit and audit as an automated action, with the person
and their reason in every audit record. The spec never changes afterwards, so the object
stays the record of who asked.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aios.api.approval import User
from aios.api.base import (
    AGE,
    API_VERSION,
    ApiModel,
    CrdInfo,
    Invariant,
    Name,
    PrinterColumn,
    Resource,
    ResourceStatus,
    condition_column,
    exactly_one_of,
    immutable,
)


class ManualActionSpec(ApiModel):
    """One request, fixed once made."""

    intent: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="The AutomationIntent (same namespace) that declares the action; for a "
        "revert, the reverted action's (checked when given).",
    )
    action: Name | None = Field(default=None, description="The declared action to run now.")
    reverts: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The id of an executed action to undo with its declared compensation.",
    )
    sensor_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="The sensor the request is about, as the action's payload names it.",
    )
    reason: str = Field(min_length=1, max_length=1024, description="Why, in their words.")
    requested_by: User = Field(description="Who asked.")

    invariants = (
        exactly_one_of("action", "reverts"),
        Invariant(
            rule="!has(self.action) || has(self.intent)",
            message="an action is named with its intent",
            check=lambda s: s.action is None or s.intent is not None,
            field_path=".intent",
        ),
    )


class ManualActionStatus(ResourceStatus):
    """Whether the action's workflow started (Ready), and its id."""

    action_id: str | None = Field(
        default=None, description="The action's id (its workflow id; aiosctl audit trace)."
    )


class ManualAction(Resource[ManualActionSpec, ManualActionStatus]):
    """A person's request to run an intent's action now, or to undo one."""

    spec: ManualActionSpec = Field(
        json_schema_extra=immutable("a ManualAction cannot be changed; create another")
    )

    crd = CrdInfo(
        kind="ManualAction",
        plural="manualactions",
        short_names=("mact",),
        printer_columns=(
            PrinterColumn("Intent", ".spec.intent"),
            PrinterColumn("Action", ".spec.action"),
            PrinterColumn("Reverts", ".spec.reverts"),
            PrinterColumn("By", ".spec.requestedBy.username"),
            PrinterColumn("Action ID", ".status.actionId"),
            condition_column("Ready"),
            AGE,
        ),
    )


def manual_action_manifest(
    namespace: str,
    requested_by: User,
    reason: str,
    intent: str | None = None,
    action: str | None = None,
    reverts: str | None = None,
    sensor: str | None = None,
) -> dict[str, Any]:
    """The ManualAction asking for ``action`` of ``intent``, or the reversal of ``reverts``
    (what ``aiosctl act|revert`` and the console create with the requester's own token)."""
    spec: dict[str, Any] = {
        "reason": reason,
        "requestedBy": requested_by.model_dump(by_alias=True),
    }
    for field, value in (("intent", intent), ("action", action), ("reverts", reverts)):
        if value is not None:
            spec[field] = value
    if sensor:
        spec["sensorId"] = sensor
    prefix = f"{intent}-{action}" if action else "revert"
    return {
        "apiVersion": API_VERSION,
        "kind": ManualAction.crd.kind,
        "metadata": {"generateName": f"{prefix[:200]}-", "namespace": namespace},
        "spec": spec,
    }
