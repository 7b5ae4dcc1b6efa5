"""Policy: Rego enforced at admission and again before every action."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import Field

from aios.api.base import (
    AGE,
    ApiModel,
    Count,
    CrdInfo,
    LabelSelector,
    Name,
    PrinterColumn,
    Resource,
    ResourceStatus,
    condition_column,
    defaults_to,
    exactly_one_of,
)

Enforcement = Literal["deny", "warn", "dryrun"]
ScopeKind = Literal["ModelDeployment", "AutomationIntent", "EdgeGateway", "Action"]


class ModuleRef(ApiModel):
    """A parameterised module of the policy library (policies/)."""

    name: Name = Field(description="Module name, e.g. actuation-needs-approval.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Parameters of the module (free-form JSON)."
    )


class Scope(ApiModel):
    """What the policy applies to; every listed criterion must match."""

    kinds: list[ScopeKind] = Field(
        default=list(get_args(ScopeKind)),
        min_length=1,
        description="Kinds checked; Action means every action at run time.",
    )
    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces checked (glob patterns; * is every namespace); "
        "empty means the Policy's own namespace.",
    )
    label_selector: LabelSelector | None = Field(
        default=None, description="Only objects with these labels are checked."
    )


class PolicySpec(ApiModel):
    """The rule, how strictly it is enforced, and where."""

    rego: str | None = Field(
        default=None, min_length=1, max_length=65536, description="Inline Rego module."
    )
    module: ModuleRef | None = Field(default=None, description="A module of the policy library.")
    enforcement: Enforcement = Field(
        default="deny",
        description="deny: reject or block; warn: allow with a warning; dryrun: only record.",
    )
    scope: Scope = defaults_to(Scope, "What the policy applies to.")

    invariants = (exactly_one_of("rego", "module"),)


class Violation(ApiModel):
    """An object that currently violates the policy."""

    kind: str = Field(description="Kind of the violating object.")
    namespace: str | None = Field(default=None, description="Its namespace.")
    name: str = Field(description="Its name.")
    message: str = Field(description="What the policy objects to.")


class PastDenial(ApiModel):
    """A past action the Policy would have denied, asked about the document OPA decided on
    when the action ran."""

    action_id: str = Field(description="The action (its workflow id).")
    intent: str = Field(description="The AutomationIntent that decided it, namespace/name.")
    action: str = Field(description="The action's name in that intent.")
    decided_at: datetime = Field(description="When OPA decided on it.")
    messages: list[str] = Field(description="What this Policy objects to.")


class LookBack(ApiModel):
    """What a dry-run Policy would have done to the latest actions in its scope."""

    actions: Count = Field(
        description="How many of the latest audited actions in scope were asked about."
    )
    would_have_denied: list[PastDenial] = Field(
        default_factory=list, max_length=50, description="The newest of those it would deny."
    )
    would_have_denied_count: Count = Field(default=0, description="How many it would deny.")


class PolicyStatus(ResourceStatus):
    """Where the policy is loaded, what violates it and, in dryrun, what it would have denied."""

    loaded_path: str | None = Field(default=None, description="OPA data path of the module.")
    violations: list[Violation] = Field(
        default_factory=list, max_length=50, description="A sample of current violations."
    )
    violation_count: Count = Field(default=0, description="Number of current violations.")
    look_back: LookBack | None = Field(
        default=None,
        description="In dryrun, with Action in scope: the latest audited actions it would "
        "have denied.",
    )


class Policy(Resource[PolicySpec, PolicyStatus]):
    """Rego enforced at admission and before every action (fail closed)."""

    crd = CrdInfo(
        kind="Policy",
        plural="policies",
        short_names=("apol",),
        printer_columns=(
            PrinterColumn("Enforcement", ".spec.enforcement"),
            condition_column("Compiled"),
            condition_column("Loaded"),
            PrinterColumn("Violations", ".status.violationCount", "integer"),
            PrinterColumn("Would-Deny", ".status.lookBack.wouldHaveDeniedCount", "integer"),
            AGE,
        ),
    )
