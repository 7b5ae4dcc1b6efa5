"""Render a root model as a CustomResourceDefinition with a structural schema.

Pydantic emits JSON Schema 2020-12; the API server accepts a structural subset of
OpenAPI v3. `structural` closes the gap in one recursive walk: `$ref`s are inlined,
`anyOf [T, null]` becomes an optional `T`, titles and null defaults go, numeric exclusive
bounds become OpenAPI's boolean form, free-form maps keep unknown fields, and a map whose
keys are an enum gets a CEL rule. Anything else without a structural equivalent (a real
union, say) is an error here rather than a CRD the API server rejects.
"""

from __future__ import annotations

import copy
from typing import Any

from aios.api.base import GROUP, VERSION, Resource

CRD_API_VERSION = "apiextensions.k8s.io/v1"
CATEGORIES = ("aios",)

# Keys copied as they are, in the order they are written (stable, readable YAML).
_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "required",
    "properties",
    "items",
    "additionalProperties",
)
_DROPPED = frozenset({"title", "$defs"})
_TYPE_OPTIONAL = frozenset({"x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"})
_VALIDATIONS = "x-kubernetes-validations"

_TYPE_META = {
    "apiVersion": {
        "description": "Versioned schema of this representation of an object.",
        "type": "string",
    },
    "kind": {
        "description": "REST resource this object represents, in CamelCase.",
        "type": "string",
    },
    "metadata": {"type": "object"},
}


def crd_for(model: type[Resource[Any, Any]]) -> dict[str, Any]:
    """The `apiextensions.k8s.io/v1` CustomResourceDefinition of a root model."""
    info = model.crd
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = raw.get("$defs", {})
    properties = raw["properties"]
    schema = {
        "description": raw["description"],
        "type": "object",
        "required": ["spec"],
        "properties": {
            **copy.deepcopy(_TYPE_META),
            "spec": structural(properties["spec"], defs),
            "status": structural(properties["status"], defs),
        },
    }
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.name, "labels": {"app.kubernetes.io/part-of": "aios"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": info.list_kind,
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.as_crd() for c in info.printer_columns],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 form of one pydantic JSON-schema node."""
    node = _inline(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "default" and value is None):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            out[key.replace("exclusiveM", "m")] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:  # false (extra="forbid") is what pruning does anyway
                out[key] = structural(value, defs)
        elif key == "patternProperties":  # dict[constrained str, X]
            ((pattern, values),) = value.items()
            out["additionalProperties"] = structural(values, defs)
            keys = {**node.get("propertyNames", {}), "pattern": pattern}
            out[_VALIDATIONS] = [*out.get(_VALIDATIONS, []), _keys_rule(keys)]
        elif key == "propertyNames":
            if "patternProperties" not in node:  # (or the rule above has it)
                out[_VALIDATIONS] = [*out.get(_VALIDATIONS, []), _keys_rule(value)]
        elif key == _VALIDATIONS:
            out[key] = [*out.get(key, []), *copy.deepcopy(value)]
        elif key in _ORDER or key.startswith("x-kubernetes-"):
            out[key] = copy.deepcopy(value)  # shared values would become YAML aliases
        else:
            raise ValueError(f"JSON-schema keyword {key!r} has no structural equivalent")
    if "type" not in out and not _TYPE_OPTIONAL & out.keys():
        raise ValueError(f"schema node without a type: {node}")
    return dict(sorted(out.items(), key=lambda item: _rank(item[0])))


def _inline(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Resolve `$ref`, single `allOf` and optional `anyOf` into one node; siblings win."""
    if "$ref" in node:
        target = defs[node["$ref"].removeprefix("#/$defs/")]
        return _inline(_merge(target, _without(node, "$ref")), defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        return _inline(_merge(node["allOf"][0], _without(node, "allOf")), defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"a union is not structural; use exactly_one_of: {node['anyOf']}")
        return _inline(_merge(branches[0], _without(node, "anyOf")), defs)
    return node


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` over `base`, keeping the CEL rules of both."""
    merged = {**base, **overlay}
    rules = [*base.get(_VALIDATIONS, []), *overlay.get(_VALIDATIONS, [])]
    if rules:
        merged[_VALIDATIONS] = rules
    return merged


def _without(node: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != key}


def _keys_rule(keys: dict[str, Any]) -> dict[str, str]:
    """CEL for the keys of `dict[Literal[...], X]` or `dict[constrained str, X]`:
    structural schemas cannot constrain map keys."""
    if "enum" in keys:
        quoted = ", ".join(f"'{key}'" for key in keys["enum"])
        return {
            "message": f"keys must be among {', '.join(keys['enum'])}",
            "rule": f"self.all(k, k in [{quoted}])",
        }
    checks = {
        "minLength": ("size(k) >= {}", "be at least {} long"),
        "maxLength": ("size(k) <= {}", "be at most {} long"),
        "pattern": ("k.matches('{}')", "match {}"),
    }
    rules = [(checks[name], keys[name]) for name in checks if name in keys]
    return {
        "message": f"keys must {', '.join(text.format(v) for (_, text), v in rules)}",
        "rule": f"self.all(k, {' && '.join(rule.format(v) for (rule, _), v in rules)})",
    }


def _rank(key: str) -> int:
    return _ORDER.index(key) if key in _ORDER else len(_ORDER)
