"""GitOps against the session's site and operator: a city's overlay applied the way a GitOps
controller applies it (server-side, twice) changes nothing the second time, the operator
owns no field of any spec, and ``kubectl diff`` finds nothing once everything is Ready."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "examples" / "city-b"
CITY = "city-b"
APPLIER = "kubectl"  # kubectl's field manager for server-side apply


def applied(kubectl) -> str:
    return kubectl("apply", "--server-side", f"--field-manager={APPLIER}", "-k", str(OVERLAY))


def aios_objects(kubectl) -> list[dict[str, Any]]:
    return list(kubectl.json("get", "aios", "-n", CITY, "--show-managed-fields")["items"])


def ready(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    return status.get("observedGeneration") == item["metadata"]["generation"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )


@pytest.fixture(scope="module")
def city(kubectl, operator) -> Iterator[list[dict[str, Any]]]:
    """City B applied once and Ready; deleted afterwards."""
    output = applied(kubectl)
    expected = sum(".aios.dev/" in line for line in output.splitlines())

    def all_ready() -> list[dict[str, Any]]:
        found = aios_objects(kubectl)
        return found if len(found) == expected and all(ready(i) for i in found) else []

    try:
        yield wait_for(all_ready, timeout=300, interval=2)
    finally:
        kubectl("delete", "-k", str(OVERLAY), "--wait=false")


def applier_entry(item: dict[str, Any]) -> dict[str, Any]:
    entries = [
        e
        for e in item["metadata"]["managedFields"]
        if e["manager"] == APPLIER and e["operation"] == "Apply"
    ]
    assert len(entries) == 1, item["metadata"]["managedFields"]
    return dict(entries[0])


def test_applying_the_same_manifests_again_changes_nothing(kubectl, city) -> None:
    namespace = kubectl.json("get", "namespace", CITY)
    before = {i["metadata"]["uid"]: i for i in aios_objects(kubectl)}
    output = applied(kubectl)
    aios = [line for line in output.splitlines() if ".aios.dev/" in line]
    assert len(aios) == len(before), output
    assert all(line.endswith("serverside-applied") for line in output.splitlines()), output
    after = {i["metadata"]["uid"]: i for i in aios_objects(kubectl)}
    assert after.keys() == before.keys(), "nothing created or replaced"
    for uid, item in after.items():
        old = before[uid]
        name = f"{item['kind']}/{item['metadata']['name']}"
        assert item["metadata"]["generation"] == old["metadata"]["generation"], name
        assert item["spec"] == old["spec"], name
        assert item["metadata"].get("labels") == old["metadata"].get("labels"), name
        assert applier_entry(item) == applier_entry(old), f"{name}: the apply wrote something"
    again = kubectl.json("get", "namespace", CITY)
    assert again["metadata"]["resourceVersion"] == namespace["metadata"]["resourceVersion"]


def test_the_operator_never_writes_spec(city) -> None:
    for item in city:
        name = f"{item['kind']}/{item['metadata']['name']}"
        owners = {e["manager"]: e for e in item["metadata"]["managedFields"]}
        assert APPLIER in owners, name
        assert "f:spec" in owners[APPLIER]["fieldsV1"], f"{name}: the applier owns spec"
        for manager, entry in owners.items():
            if manager == APPLIER:
                continue
            fields = json.dumps(entry.get("fieldsV1", {}))
            assert '"f:spec"' not in fields, f"{name}: {manager} wrote spec: {fields}"
        status_writers = [
            e["manager"]
            for e in item["metadata"]["managedFields"]
            if e.get("subresource") == "status"
        ]
        assert status_writers, f"{name}: the operator reports only through status"


def test_kubectl_diff_is_empty_after_a_reconcile(kubectl, city) -> None:
    result = kubectl.run("diff", "--server-side", f"--field-manager={APPLIER}", "-k", str(OVERLAY))
    assert result.returncode == 0, f"kubectl diff found changes:\n{result.stdout}{result.stderr}"
    assert result.stdout == ""
