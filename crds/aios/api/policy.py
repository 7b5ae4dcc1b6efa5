"""Policy: Rego enforced at admission and again before every action."""

from __future__ import annotations

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


class PolicyStatus(ResourceStatus):
    """Where the policy is loaded and what violates it."""

    loaded_path: str | None = Field(default=None, description="OPA data path of the module.")
    violations: list[Violation] = Field(
        default_factory=list, max_length=50, description="A sample of current violations."
    )
    violation_count: Count = Field(default=0, description="Number of current violations.")


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
            AGE,
        ),
    )
