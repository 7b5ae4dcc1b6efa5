"""Building blocks shared by the four kinds: wire conventions, conditions, CRD facts, rules.

Every model speaks camelCase on the wire and rejects unknown fields, so a typo in a
manifest fails in pydantic exactly as it fails in the API server (strict field validation).
A cross-field rule is declared once as an `Invariant`: pydantic checks it in Python and the
CRD generator emits it as a CEL `x-kubernetes-validations` rule for the API server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "aios.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
SITE_LABEL = f"{GROUP}/site"
"""The site (the chart's ``site.name``: a city, a campus) on every object, metric series,
decision and audit record of one installation, so a fleet of sites can be rolled up."""


def owner_reference(owner: Mapping[str, Any], block_deletion: bool = False) -> dict[str, Any]:
    """The ``ownerReferences`` entry making ``owner`` (an object as stored) the controller
    of what carries it; ``block_deletion`` only for a writer that may set the owner's
    finalizers (the API server refuses it otherwise)."""
    meta = owner["metadata"]
    reference = {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }
    return {**reference, "blockOwnerDeletion": True} if block_deletion else reference


SITE_ENV = "AIOS_SITE"
"""Where every aios process reads the name of its site."""
DEFAULT_SITE = "default"


def kube_time(moment: datetime) -> str:
    """A time as Kubernetes writes one (``metav1.Time``): RFC 3339 in UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
KAFKA_TOPIC = r"^[a-zA-Z0-9._-]+$"
NUMBER = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
# A Kubernetes resource quantity without sign ("500m", "2Gi", "1.5").
QUANTITY = rf"^{NUMBER}([KMGTPE]i|[numkMGTPE]|[eE][+-]?{NUMBER})?$"

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
"""A DNS-1123 label: usable as a Kubernetes object name, a label value and a list-map key."""
IDENTIFIER = r"^[a-z][a-z0-9_]*$"
"""A name an expression reads (``anomaly.score``, ``reading.pm25``)."""
MetricName = Annotated[str, Field(min_length=1, max_length=63, pattern=IDENTIFIER)]
"""What a reading measured (``pm25``, ``no2_raw``): lower case, digits and ``_``; rules read
it as ``reading.<name>``."""
RESERVED_METRIC_NAMES = ("site", "cell", "flags")
"""Names the ``reading`` variable of a rule already gives to the reading's own fields."""
KafkaTopic = Annotated[str, Field(min_length=1, max_length=249, pattern=KAFKA_TOPIC)]
Count = Annotated[int, Field(ge=0, json_schema_extra={"format": "int64"})]
"""A monotonic counter; int64 so it never wraps in practice."""
Fraction = Annotated[float, Field(ge=0, le=1)]


@dataclass(frozen=True)
class Invariant:
    """A cross-field rule, enforced by pydantic (`check`) and by the API server (`rule`, CEL).

    `rule` sees the object in wire form (camelCase) as `self`; `field_path` (wire form,
    e.g. ".steps") makes the API server report the violation at that field.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None

    def as_cel(self) -> JsonDict:
        """The `x-kubernetes-validations` entry of this rule."""
        cel: JsonDict = {"rule": self.rule, "message": self.message}
        if self.field_path:
            cel["fieldPath"] = self.field_path
        return cel


def exactly_one_of(*wire_names: str) -> Invariant:
    """A union made structural: several optional fields of which exactly one must be set."""

    def check(obj: BaseModel) -> bool:
        attr = {field.alias or name: name for name, field in type(obj).model_fields.items()}
        return sum(getattr(obj, attr[wire]) is not None for wire in wire_names) == 1

    presence = ", ".join(f"has(self.{wire})" for wire in wire_names)
    return Invariant(
        rule=f"[{presence}].exists_one(x, x)",
        message=f"exactly one of {', '.join(wire_names)} must be set",
        check=check,
    )


def metrics_not_reserved(wire_name: str) -> Invariant:
    """Metric names in the list or map ``wire_name`` are none of ``RESERVED_METRIC_NAMES``
    (a rule's ``reading`` already gives those names to the reading's own fields)."""
    return Invariant(
        rule=f"self.{wire_name}.all(m, !(m in {list(RESERVED_METRIC_NAMES)}))",
        message=f"{wire_name} cannot name {', '.join(RESERVED_METRIC_NAMES)}: "
        "the reading's own fields",
        check=lambda obj: not set(getattr(obj, wire_name)) & set(RESERVED_METRIC_NAMES),
        field_path=f".{wire_name}",
    )


def once_each(names: list[str]) -> list[str]:
    """A list of names as the API server checks a ``set`` list (for a field validator)."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"repeats {', '.join(repeated)}")
    return names


def _emit_invariants(schema: JsonDict, cls: type[Any]) -> None:
    """Attach a model's invariants to its JSON schema as CEL rules (pydantic calls this)."""
    if cls.invariants:
        schema["x-kubernetes-validations"] = [invariant.as_cel() for invariant in cls.invariants]


def validation_message(error: ValidationError) -> str:
    """``spec.rollout.steps: weights must strictly increase; …`` — every problem, field first."""
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        problems.append(f"{path}: {item['msg']}" if path else item["msg"])
    return "; ".join(problems)


class ApiModel(BaseModel):
    """Base of every aios API object: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_emit_invariants,
    )

    invariants: ClassVar[tuple[Invariant, ...]] = ()

    @model_validator(mode="after")
    def _check_invariants(self) -> Self:
        for invariant in self.invariants:
            if not invariant.check(self):
                raise ValueError(invariant.message)
        return self


def defaults_to(model: type[ApiModel], description: str) -> Any:
    """A sub-object that is always present: when omitted, all its defaults apply.

    The schema's default is the complete object, so the API server stores what pydantic
    applies (`kubectl get -o yaml` shows the effective configuration) and CEL rules, which
    it checks against the default as written, see every field.
    """
    default = model().model_dump(mode="json", by_alias=True, exclude_none=True)
    return Field(
        default_factory=model, description=description, json_schema_extra={"default": default}
    )


def list_map(*keys: str) -> JsonDict:
    """Schema extras for a list merged by key (server-side apply merges items, not the list)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def immutable(message: str) -> JsonDict:
    """Schema extras refusing any change once created: a transition rule, which only the API
    server can check (pydantic never sees an update)."""
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": message}]}


class LabelSelector(ApiModel):
    """Selects objects by their labels (all listed labels must match)."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels that must all be present with these values."
    )


class ApprovalRule(ApiModel):
    """Whether a human must approve, and who may."""

    required: bool = Field(default=False, description="Whether a human must approve.")
    approvers: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Groups or users allowed to approve (e.g. group:street-cleaning).",
    )

    invariants: ClassVar[tuple[Invariant, ...]] = (
        Invariant(
            rule="!self.required || (has(self.approvers) && size(self.approvers) > 0)",
            message="a required approval needs at least one approver",
            check=lambda a: not a.required or bool(a.approvers),
            field_path=".approvers",
        ),
    )


class Condition(ApiModel):
    """One aspect of the object's state, in the standard Kubernetes form."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Condition type in CamelCase, e.g. Ready.",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable CamelCase reason for the last transition.",
    )
    message: str = Field(
        default="", max_length=32768, description="Human-readable details of the last transition."
    )
    last_transition_time: datetime = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this condition was computed from."
    )


class ResourceStatus(ApiModel):
    """Observed state, written by the operator through the status subresource."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Current conditions (Ready, and kind-specific ones), one per type.",
        json_schema_extra=list_map("type"),
    )


@dataclass(frozen=True)
class PrinterColumn:
    """A column of `kubectl get`."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"

    def as_crd(self) -> dict[str, str]:
        """The `additionalPrinterColumns` entry."""
        return {"name": self.name, "type": self.type, "jsonPath": self.json_path}


def condition_column(condition_type: str) -> PrinterColumn:
    """A column showing the status (True/False/Unknown) of one condition type."""
    path = f'.status.conditions[?(@.type=="{condition_type}")].status'
    return PrinterColumn(condition_type, path)


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class CrdInfo:
    """The CRD facts of one kind that are not in its schema."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def name(self) -> str:
        """The CRD's metadata.name, `<plural>.<group>`."""
        return f"{self.plural}.{GROUP}"


SpecT = TypeVar("SpecT", bound=ApiModel)
StatusT = TypeVar("StatusT", bound=ResourceStatus)


class Resource(ApiModel, Generic[SpecT, StatusT]):
    """A root object: type meta, free-form metadata, the desired spec and observed status."""

    crd: ClassVar[CrdInfo]

    api_version: str = Field(description="Always aios.dev/v1alpha1.")
    kind: str = Field(description="The kind of this object.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Standard object metadata (owned by the API server)."
    )
    spec: SpecT
    status: StatusT | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_type_meta(cls, data: Any) -> Any:
        """Let code build an object without repeating apiVersion and kind."""
        if isinstance(data, dict):
            return {"apiVersion": API_VERSION, "kind": cls.crd.kind, **data}
        return data

    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, value: str) -> str:
        if value != API_VERSION:
            raise ValueError(f"apiVersion must be {API_VERSION}")
        return value

    @field_validator("kind")
    @classmethod
    def _check_kind(cls, value: str) -> str:
        if value != cls.crd.kind:
            raise ValueError(f"kind must be {cls.crd.kind}")
        return value
