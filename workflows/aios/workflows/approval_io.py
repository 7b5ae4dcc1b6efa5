"""What crosses the boundary of the activity that reads an Approval for a workflow."""

from __future__ import annotations

from dataclasses import dataclass, field

READ_APPROVAL = "aios.approval.read"


@dataclass(frozen=True)
class ApprovalRef:
    namespace: str
    name: str


@dataclass(frozen=True)
class Decided:
    """An Approval as stored: ``found`` is False when there is no such object."""

    name: str
    found: bool
    kind: str = ""
    target: str = ""
    version: str | None = None
    approved: bool = False
    username: str = ""
    groups: list[str] = field(default_factory=list)
    reason: str = ""
    at: str = ""  # creationTimestamp, RFC 3339
