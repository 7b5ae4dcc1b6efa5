"""The generated CRDs: structural, described, with CEL rules, list-map keys and printer
columns that resolve; the committed YAML is exactly what the generator writes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from aios.api import CRD_KINDS, AutomationIntent, EdgeGateway, ModelDeployment, Policy
from aios.api.base import Resource
from aios.api.crd import crd_for, structural
from aios.api.generate import REPO, render, stale

Schema = dict[str, Any]


def openapi(model: type[Resource[Any, Any]]) -> Schema:
    return crd_for(model)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def nodes(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its path: `.spec.sources[]` for the items of a list."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def node_at(schema: Schema, path: str) -> Schema:
    """The node a (printer-column) JSONPath points to; `[...]` steps into list items."""
    node = schema
    for name, bracket in re.findall(r"\.(\w+)|(\[[^\]]*\])", path):
        if bracket:
            node = node["items"]
            for field in re.findall(r"@\.(\w+)", bracket):
                assert field in node["properties"], f"{path}: filter on unknown field {field}"
        else:
            node = node["properties"][name]
    return node


@pytest.mark.parametrize("model", CRD_KINDS, ids=lambda m: m.crd.kind)
def test_the_crd_names_the_kind(model: type[Resource[Any, Any]]) -> None:
    crd = crd_for(model)
    assert crd["metadata"]["name"] == f"{model.crd.plural}.aios.dev"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("aios.dev", "Namespaced")
    assert spec["names"]["listKind"] == f"{model.crd.kind}List"
    assert spec["names"]["categories"] == ["aios"]
    assert spec["names"]["shortNames"] == list(model.crd.short_names)
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_short_names_are_unique() -> None:
    names = [name for model in CRD_KINDS for name in model.crd.short_names]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("model", CRD_KINDS, ids=lambda m: m.crd.kind)
def test_the_root_schema_has_type_meta_and_a_required_spec(
    model: type[Resource[Any, Any]],
) -> None:
    schema = openapi(model)
    assert list(schema["properties"]) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["spec"]


FORBIDDEN = frozenset({"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "const"})


def structural_problems(node: Schema) -> list[str]:
    """What makes one node non-structural (or not OpenAPI v3.0) for the API server."""
    problems = [f"has {key}" for key in FORBIDDEN & node.keys()]
    if "type" not in node and node.get("x-kubernetes-preserve-unknown-fields") is not True:
        problems.append("has no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append("mixes properties and additionalProperties")
    if node.get("additionalProperties") is False:
        problems.append("forbids additional properties (pruning does that)")
    if "default" in node and node["default"] is None:
        problems.append("defaults to null")
    if not isinstance(node.get("exclusiveMinimum", True), bool):
        problems.append("exclusiveMinimum is a number (OpenAPI v3.0 wants a boolean)")
    return problems


@pytest.mark.parametrize("model", CRD_KINDS, ids=lambda m: m.crd.kind)
def test_every_node_is_structural(model: type[Resource[Any, Any]]) -> None:
    problems = [
        f"{path}: {problem}"
        for path, node in nodes(openapi(model))
        for problem in structural_problems(node)
    ]
    assert problems == []


@pytest.mark.parametrize("model", CRD_KINDS, ids=lambda m: m.crd.kind)
def test_every_spec_field_is_described_for_kubectl_explain(
    model: type[Resource[Any, Any]],
) -> None:
    undescribed = [
        path
        for path, node in nodes(openapi(model))
        # List items and map values are described by their list or map.
        if path.startswith(".spec") and not path.endswith(("[]", "{}"))
        if not node.get("description", "").strip()
    ]
    assert undescribed == []


@pytest.mark.parametrize("model", CRD_KINDS, ids=lambda m: m.crd.kind)
def test_list_map_keys_are_required_in_the_items(model: type[Resource[Any, Any]]) -> None:
    for path, node in nodes(openapi(model)):
        if node.get("x-kubernetes-list-type") == "map":
            required = node["items"].get("required", [])
            assert set(node["x-kubernetes-list-map-keys"]) <= set(required), path


@pytest.mark.parametrize(
    ("model", "path", "keys"),
    [
        (AutomationIntent, ".spec.sources", ["name"]),
        (AutomationIntent, ".spec.models", ["name"]),
        (AutomationIntent, ".spec.rules", ["name"]),
        (AutomationIntent, ".spec.fallback", ["name"]),
        (AutomationIntent, ".spec.actions", ["name"]),
        (EdgeGateway, ".spec.sensors", ["id"]),
        (Policy, ".status.conditions", ["type"]),
    ],
)
def test_keyed_lists_merge_by_key(
    model: type[Resource[Any, Any]], path: str, keys: list[str]
) -> None:
    node = dict(nodes(openapi(model)))[path]
    assert node["x-kubernetes-list-type"] == "map"
    assert node["x-kubernetes-list-map-keys"] == keys


@pytest.mark.parametrize(
    ("model", "path", "fields"),
    [
        (AutomationIntent, ".spec.sources[]", ["kafkaTopic", "edgeGatewaySelector"]),
        (Policy, ".spec", ["rego", "module"]),
        (
            EdgeGateway,
            ".spec.filters[]",
            [
                "validate",
                "deadband",
                "rateLimit",
                "window",
                "anomaly",
                "anonymise",
                "differentialPrivacy",
            ],
        ),
    ],
)
def test_exactly_one_of_rules_are_cel(
    model: type[Resource[Any, Any]], path: str, fields: list[str]
) -> None:
    node = dict(nodes(openapi(model)))[path]
    presence = ", ".join(f"has(self.{field})" for field in fields)
    assert {
        "rule": f"[{presence}].exists_one(x, x)",
        "message": f"exactly one of {', '.join(fields)} must be set",
    } in node["x-kubernetes-validations"]
    for field in fields:
        assert field not in node.get("required", []) and field in node["properties"]


@pytest.mark.parametrize("model", CRD_KINDS, ids=lambda m: m.crd.kind)
def test_cel_rules_have_a_message_and_a_real_field_path(model: type[Resource[Any, Any]]) -> None:
    for path, node in nodes(openapi(model)):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["rule"] and rule["message"], path
            if "fieldPath" in rule:
                assert node_at(node, rule["fieldPath"]), path


@pytest.mark.parametrize("model", CRD_KINDS, ids=lambda m: m.crd.kind)
def test_printer_columns_point_to_fields_of_the_schema(model: type[Resource[Any, Any]]) -> None:
    schema = openapi(model)
    columns = crd_for(model)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert columns[-1] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    for column in columns[:-1]:
        node = node_at(schema, column["jsonPath"])
        expected = {
            "string": {"string"},
            "integer": {"integer"},
            "number": {"number", "integer"},
            "boolean": {"boolean"},
        }
        assert node["type"] in expected[column["type"]], column


def test_real_unions_are_refused() -> None:
    class Union(BaseModel):
        value: int | str

    schema = Union.model_json_schema()
    with pytest.raises(ValueError, match="union is not structural"):
        structural(schema, schema.get("$defs", {}))


def test_free_form_maps_keep_unknown_fields_and_constrained_keys_become_cel() -> None:
    spec = dict(nodes(openapi(Policy)))[".spec.module.parameters"]
    assert spec == {
        "description": spec["description"],
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    ranges = dict(nodes(openapi(EdgeGateway)))[".spec.filters[].validate.ranges"]
    (keys,) = ranges["x-kubernetes-validations"]
    assert keys["rule"] == (
        "self.all(k, size(k) >= 1 && size(k) <= 63 && k.matches('^[a-z][a-z0-9_]*$'))"
    )
    assert ranges["maxProperties"] == 64
    assert ranges["additionalProperties"]["required"] == ["min", "max"]


def test_sub_objects_default_to_their_complete_defaults() -> None:
    rollout = dict(nodes(openapi(ModelDeployment)))[".spec.rollout"]
    assert rollout["default"]["strategy"] == "direct"
    assert rollout["default"]["analysis"]["maxP99LatencyMs"] == 250


def test_the_committed_crds_are_what_the_generator_writes() -> None:
    assert stale() == [], "run `make crds` (python -m aios.api.generate)"


def test_the_chart_carries_the_same_crds() -> None:
    files = render()
    for path, text in files.items():
        if path.parts[0] == "crds":
            assert files[Path("charts/aios") / path] == text
            assert (REPO / "charts/aios" / path).read_text() == (REPO / path).read_text()


def test_generated_files_say_they_are_generated() -> None:
    for text in render().values():
        assert text.startswith("# Generated by `make crds` from aios.api — do not edit.\n")
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"
        assert "&id" not in text, "no YAML anchors: every node is written out"
