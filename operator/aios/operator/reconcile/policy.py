"""Policy: what to load into OPA, what the admission webhook answers, what status says.

Layout in OPA (one Policy ``ns/name``):

* inline Rego: module ``aios/policies/<ns>/<name>`` with package
  ``aios.policies["<ns>"]["<name>"]`` (the Rego with its package clause replaced);
* a library module: the module ``aios/library/<module>`` (shared by every Policy that
  uses it) and data ``aios_index/parameters/<ns>/<name>``, its parameters. No module of its own:
  loading one writes data only, and every module load makes OPA compile all modules;
* data ``aios_index/scopes/<kind>/<ns>/<name>`` for each kind in its scope: the index by which
  ``aios.system`` finds the Policies of an input's kind without walking them all (a city
  has a thousand Policies, most for one kind);
* data ``aios_index/registry/<ns>/<name>``: enforcement, scope and the library module used, read
  by ``aios.system`` (``policies/system/system.rego``), the one entry point every caller
  queries. Written last: a Policy counts as loaded once it is there.

The data sits under its own root (``DATA_ROOT``), beside the modules' ``aios`` rather than
under it: on every data write OPA checks that no rule's path holds data, reading each
rule path's ancestors, and a read of ``data.aios`` during a write that changes something
beneath it copies all of it. Under ``aios``, each write of one Policy's entry cost a copy
of every Policy's per rule: 72 ms a write with 1,000 Policies loaded, against 0.3 ms here.

A module states its findings as ``violation`` (a set of messages) and may expose
``max_retention_days``; enforcement belongs to the Policy, not to the Rego.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aios.api import Policy
from aios.operator.reconcile.bookkeeping import without_bookkeeping
from aios.operator.reconcile.conditions import ConditionUpdate

SYSTEM_MODULE_ID = "aios/system"
MAX_VIOLATIONS = 50
AUDITED_KINDS = ("ModelDeployment", "AutomationIntent", "EdgeGateway")
LOOK_BACK_ACTIONS = 100
"""How many of the latest audited actions in its scope a dry-run Policy is asked about."""
LOOK_BACK_RECORDS = 2000
"""How far back in the audit log a look back reads (an action leaves a few records)."""

_PACKAGE = re.compile(r"^[ \t]*package[ \t]+[^\n#]*", re.MULTILINE)


def _quoted(*parts: str) -> str:
    return "".join(f"[{json.dumps(p)}]" for p in parts)


def module_id(namespace: str, name: str) -> str:
    return f"aios/policies/{namespace}/{name}"


def package(namespace: str, name: str) -> str:
    return f"aios.policies{_quoted(namespace, name)}"


DATA_ROOT = "aios_index"
"""Where the Policies' data lives in OPA: not a prefix of any module's package (above)."""


def registry_path(namespace: str, name: str) -> str:
    return f"{DATA_ROOT}/registry/{namespace}/{name}"


def scope_path(kind: str, namespace: str, name: str) -> str:
    return f"{DATA_ROOT}/scopes/{kind}/{namespace}/{name}"


def parameters_path(namespace: str, name: str) -> str:
    return f"{DATA_ROOT}/parameters/{namespace}/{name}"


def library_module_id(module: str) -> str:
    return f"aios/library/{module}"


class UnknownModule(ValueError):
    """The Policy names a module the library does not have."""


@dataclass(frozen=True)
class LoadPlan:
    """Everything one Policy puts into OPA, in the order it must be written."""

    namespace: str
    name: str
    module_id: str
    """The Policy's own module: loaded for inline Rego, absent for a library module."""
    rego: str | None
    line_offset: int  # lines added before the user's Rego (to report the user's line numbers)
    registry_path: str
    registry: dict[str, Any]
    scope_paths: tuple[str, ...]
    """The kind index's entries, one per kind in scope (each holds ``{}``)."""
    parameters_path: str
    parameters: dict[str, Any]
    library: tuple[str, str] | None  # (module id, Rego) of the library module it uses

    @property
    def source(self) -> str:
        """The Rego that decides: the Policy's own, or its library module's."""
        if self.library is not None:
            return self.library[1]
        assert self.rego is not None  # inline Rego when no library module
        return self.rego

    @property
    def decisions_path(self) -> str:
        """Where its findings come from in OPA's data tree (``status.loadedPath``)."""
        return self.library[0] if self.library is not None else self.module_id


def with_package(rego: str, package_ref: str) -> tuple[str, int]:
    """The Rego with its package clause replaced in place (or one prepended)."""
    if _PACKAGE.search(rego):
        return _PACKAGE.sub(f"package {package_ref}", rego, count=1), 0
    return f"package {package_ref}\n{rego}", 1


def registry_entry(namespace: str, policy: Policy) -> dict[str, Any]:
    """Enforcement, scope and library module as ``aios.system`` reads them. No namespaces
    listed means the Policy's own namespace: a namespaced object governs its namespace
    unless it says otherwise (``*`` for every namespace)."""
    scope = policy.spec.scope
    entry: dict[str, Any] = {
        "enforcement": policy.spec.enforcement,
        "kinds": list(scope.kinds),
        "namespaces": list(scope.namespaces) or [namespace],
    }
    if policy.spec.module is not None:
        entry["library"] = policy.spec.module.name
    if scope.label_selector is not None:
        entry["labelSelector"] = scope.label_selector.model_dump(by_alias=True, mode="json")
    return entry


GLOB_CHARACTERS = frozenset("*?[]{}\\")
"""What makes a scope's namespace a pattern for OPA's ``glob.match``."""


def literal_namespaces(patterns: Sequence[str]) -> list[str] | None:
    """The namespaces a scope's ``patterns`` (its registry entry's) name, when each is a
    plain name; ``None`` when one is a pattern. An audit sends OPA only those namespaces'
    objects (OPA still decides the scope), not the city's."""
    if any(GLOB_CHARACTERS.intersection(pattern) for pattern in patterns):
        return None
    return list(dict.fromkeys(patterns))


def load_plan(namespace: str, name: str, policy: Policy, library: Mapping[str, str]) -> LoadPlan:
    """What to load for ``policy``; ``library`` maps module names to their Rego."""
    spec = policy.spec
    library_module: tuple[str, str] | None = None
    parameters: dict[str, Any] = {}
    rego: str | None = None
    offset = 0
    if spec.module is not None:
        if spec.module.name not in library:
            known = ", ".join(sorted(library)) or "none"
            raise UnknownModule(f"no module {spec.module.name!r} in the library (known: {known})")
        library_module = (library_module_id(spec.module.name), library[spec.module.name])
        parameters = dict(spec.module.parameters)
    else:
        assert spec.rego is not None  # exactly one of rego and module (the CRD enforces it)
        rego, offset = with_package(spec.rego, package(namespace, name))
    return LoadPlan(
        namespace=namespace,
        name=name,
        module_id=module_id(namespace, name),
        rego=rego,
        line_offset=offset,
        registry_path=registry_path(namespace, name),
        registry=registry_entry(namespace, policy),
        scope_paths=tuple(scope_path(kind, namespace, name) for kind in spec.scope.kinds),
        parameters_path=parameters_path(namespace, name),
        parameters=parameters,
        library=library_module,
    )


def data_document(plans: Iterable[LoadPlan]) -> dict[str, Any]:
    """What the plans write to OPA's data, as one document (``{DATA_ROOT: ...}``): for an
    offline ``opa eval`` (``aiosctl validate``) to decide as the site would."""
    data: dict[str, Any] = {"registry": {}, "parameters": {}, "scopes": {}}
    for p in plans:
        data["registry"].setdefault(p.namespace, {})[p.name] = p.registry
        data["parameters"].setdefault(p.namespace, {})[p.name] = p.parameters
        for kind in p.registry["kinds"]:
            data["scopes"].setdefault(kind, {}).setdefault(p.namespace, {})[p.name] = {}
    return {DATA_ROOT: data}


def user_lines(message: str, offset: int) -> str:
    """OPA's "line N" as the user counts lines in ``spec.rego``."""
    if not offset:
        return message
    return re.sub(r"\bline (\d+)", lambda m: f"line {max(1, int(m.group(1)) - offset)}", message)


def loaded_conditions(plan: LoadPlan) -> list[ConditionUpdate]:
    where = plan.decisions_path
    if plan.library is not None:
        where = f"{where} with parameters at {plan.parameters_path}"
    return [
        ConditionUpdate("Compiled", "True", "Compiled", "OPA compiled the module."),
        ConditionUpdate("Loaded", "True", "Loaded", f"Enforced from data.{where}."),
        ConditionUpdate("Ready", "True", "Loaded", f"Loaded into OPA at {where}."),
    ]


def rejected_conditions(reason: str, message: str, previous_loaded: bool) -> list[ConditionUpdate]:
    """The Rego (or module reference) is wrong: say why, and what is enforced meanwhile."""
    meanwhile = (
        "The previously loaded version is still enforced."
        if previous_loaded
        else "Nothing is enforced for this Policy."
    )
    return [
        ConditionUpdate("Compiled", "False", reason, message),
        ConditionUpdate("Loaded", "False", "NotCompiled", meanwhile),
        ConditionUpdate("Ready", "False", reason, message),
    ]


def unavailable_conditions(message: str) -> list[ConditionUpdate]:
    return [
        ConditionUpdate("Loaded", "False", "OpaUnavailable", message),
        ConditionUpdate("Ready", "False", "OpaUnavailable", message),
    ]


def already_reported(
    status: Mapping[str, Any], generation: int, updates: Iterable[ConditionUpdate]
) -> bool:
    """Whether the status already says exactly this for this generation (a timer retry):
    then nothing new happened and nothing is audited again."""
    if status.get("observedGeneration") != generation:
        return False
    current = {c.get("type"): c for c in status.get("conditions") or []}
    return all(
        (current.get(u.type) or {}).get("status") == u.status
        and (current.get(u.type) or {}).get("message") == u.message
        for u in updates
    )


# -- inputs and answers --------------------------------------------------------------------


def review(
    body: Mapping[str, Any],
    operation: str,
    old: Mapping[str, Any] | None = None,
    user: Mapping[str, Any] | None = None,
    approver: str | None = None,
) -> dict[str, Any]:
    """The input document for an aios object (see ``aios.connectors.opa``); a rollout asks
    with operation ``PROMOTE`` and the ``approver`` it recorded."""
    metadata = body.get("metadata") or {}
    document = {
        "kind": body.get("kind"),
        "namespace": metadata.get("namespace"),
        "operation": operation,
        "object": _stored(body),
        "oldObject": _stored(old) if old is not None else None,
        "user": None,
        "approver": approver,
    }
    if user is not None:
        document["user"] = {
            "username": user.get("username"),
            "groups": list(user.get("groups") or []),
        }
    return document


def _stored(body: Mapping[str, Any]) -> dict[str, Any]:
    """The object without what only the operator writes (status) and the API server's and
    kubectl's bookkeeping: the same at admission as in an audit of the operator's copy."""
    return without_bookkeeping(
        {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": body.get("metadata") or {},
            "spec": body.get("spec") or {},
        }
    )


def needs_review(operation: str, new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Admission evaluates what a user changes: a create, or an update of spec or labels.
    Metadata-only updates (finalizers, annotations) and objects being deleted pass, so a
    new deny policy never blocks the operator from finishing an existing object."""
    if (new.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if operation != "UPDATE" or old is None:
        return True
    return bool(
        new.get("spec") != old.get("spec")
        or (new.get("metadata") or {}).get("labels") != (old.get("metadata") or {}).get("labels")
    )


def violations_status(
    reviews: Sequence[Mapping[str, Any]],
    findings: list[tuple[int, str]],
    limit: int = MAX_VIOLATIONS,
) -> dict[str, Any]:
    """Bounded violations (first ``limit``, ordered by kind, namespace, name) plus the count:
    status stays small however many objects violate."""
    items = []
    for index, message in findings:
        obj = reviews[index]["object"]
        metadata = obj.get("metadata") or {}
        items.append(
            {
                "kind": obj.get("kind"),
                "namespace": metadata.get("namespace"),
                "name": metadata.get("name"),
                "message": message,
            }
        )
    items.sort(key=lambda v: (v["kind"] or "", v["namespace"] or "", v["name"] or "", v["message"]))
    return {"violations": items[:limit], "violationCount": len(items)}


def looks_back(policy: Policy) -> bool:
    """A dry-run Policy over runtime actions reports what it would have denied."""
    return policy.spec.enforcement == "dryrun" and "Action" in policy.spec.scope.kinds


@dataclass(frozen=True)
class PastAction:
    """An audited action, with the document OPA last decided on for it."""

    action_id: str
    intent: str
    action: str
    decided_at: str
    asked: dict[str, Any]


def past_actions(steps: Iterable[tuple[str, Mapping[str, Any]]]) -> list[PastAction]:
    """Each action's last decided document, oldest action first, from the ``(time,
    details)`` of ``action-step`` records in log order (only the steps OPA decided carry
    ``policyInput``)."""
    latest: dict[str, PastAction] = {}
    for at, details in steps:
        asked = details.get("policyInput")
        if not isinstance(asked, dict):
            continue
        action_id = str(details.get("actionId"))
        intent = details.get("intent") or {}
        latest.pop(action_id, None)  # insertion order follows each action's last decision
        latest[action_id] = PastAction(
            action_id,
            f"{intent.get('namespace')}/{intent.get('name')}",
            str((details.get("action") or {}).get("name") or ""),
            str(asked.get("time") or at),
            asked,
        )
    return list(latest.values())


def look_back_status(
    actions: Sequence[PastAction],
    covered: Sequence[int],
    findings: Sequence[tuple[int, str]],
    limit: int = MAX_VIOLATIONS,
) -> dict[str, Any]:
    """``status.lookBack``: of the last ``LOOK_BACK_ACTIONS`` actions the scope covers
    (``covered`` indexes ``actions``), those with findings, newest first and bounded."""
    asked = list(covered)[-LOOK_BACK_ACTIONS:]
    messages: dict[int, list[str]] = {}
    for index, message in findings:
        messages.setdefault(index, []).append(message)
    denied = [
        {
            "actionId": actions[index].action_id,
            "intent": actions[index].intent,
            "action": actions[index].action,
            "decidedAt": actions[index].decided_at,
            "messages": messages[index],
        }
        for index in reversed(asked)
        if index in messages
    ]
    return {
        "actions": len(asked),
        "wouldHaveDenied": denied[:limit],
        "wouldHaveDeniedCount": len(denied),
    }
