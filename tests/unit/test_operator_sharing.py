"""The store's objects share their equal sub-trees, refuse changes, and let go of what no
object holds any more."""

from __future__ import annotations

import copy
import json
import pickle
import tracemalloc
from typing import Any

import pytest

from aios.operator.runtime.sharing import SWEEP_EVERY, FrozenDict, FrozenList, Sharing
from aios.operator.runtime.store import Store


def gateway(uid: str, sensor: str, version: str = "1") -> dict[str, Any]:
    """Gateways of one site: the same filter chain, their own sensor."""
    filters = [{"type": "range", "min": 0, "max": 500}, {"type": "anonymise", "fields": ["gps"]}]
    return {
        "metadata": {"uid": uid, "name": uid, "namespace": "city", "resourceVersion": version},
        "spec": {"filters": filters, "sensors": [{"id": sensor, "lat": 52.1, "lon": 4.3}]},
    }


def test_equal_sub_trees_are_held_once_and_different_ones_apart() -> None:
    store = Store()
    store.observe(gateway("a", "s-1"))
    store.observe(gateway("b", "s-2"))
    a, b = store.get("a"), store.get("b")
    assert a is not None and b is not None
    assert a["spec"]["filters"] is b["spec"]["filters"]
    assert a["spec"]["sensors"] is not b["spec"]["sensors"]
    assert a["spec"]["sensors"][0]["id"] == "s-1" and b["spec"]["sensors"][0]["id"] == "s-2"
    assert a == gateway("a", "s-1")  # (no bookkeeping fields to drop)


@pytest.mark.parametrize("value", [1, 1.0, True, "1", None])
def test_json_types_are_kept_apart(value: Any) -> None:
    """1, 1.0 and True are equal in Python, not in JSON: none stands in for another."""
    sharing = Sharing()
    held = [sharing.held({"x": v}) for v in (1, 1.0, True, "1", None)]
    mine = sharing.held({"x": value})
    assert json.dumps(mine) == json.dumps({"x": value})
    assert sum(mine is h for h in held) == 1


def test_a_held_tree_refuses_changes_and_its_copies_are_plain() -> None:
    sharing = Sharing()
    held = sharing.held({"status": {"conditions": [{"type": "Ready"}]}})
    conditions = held["status"]["conditions"]
    assert isinstance(held, FrozenDict) and isinstance(conditions, FrozenList)
    changes = [
        lambda: held.__setitem__("spec", {}),
        lambda: held["status"].update(phase="x"),
        lambda: held["status"].pop("conditions"),
        lambda: held["status"].setdefault("phase", "x"),
        lambda: conditions.append({"type": "Degraded"}),
        lambda: conditions[0].__setitem__("type", "x"),
        lambda: conditions.sort(key=str),
    ]
    for change in changes:
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert held == {"status": {"conditions": [{"type": "Ready"}]}}
    for mutable in (copy.deepcopy(held), pickle.loads(pickle.dumps(held))):
        assert type(mutable) is dict and type(mutable["status"]["conditions"]) is list
        mutable["status"]["conditions"].append({"type": "Degraded"})
    assert len(held["status"]["conditions"]) == 1
    assert json.loads(json.dumps(held)) == held


def test_a_sweep_drops_what_no_held_object_uses() -> None:
    sharing = Sharing()
    kept = sharing.held(gateway("kept", "s-0"))
    size = len(sharing)
    for i in range(SWEEP_EVERY - 1):
        sharing.held(gateway(f"gw-{i}", f"s-{i}"))  # dropped at once
        sharing.release()
    assert len(sharing) > size, "no sweep before SWEEP_EVERY releases"
    sharing.release()
    assert len(sharing) == size
    assert sharing.held(gateway("kept", "s-0")) is kept


def churn(store: Store, round_: int) -> tuple[int, int]:
    """Objects each written three times, then deleted: memory traced when they are all
    held, and after."""
    uids = [f"gw-{round_}-{i}" for i in range(SWEEP_EVERY)]
    for version in range(1, 4):
        for i, uid in enumerate(uids):
            store.observe(gateway(uid, f"s-{i}-{version}", str(version)))
    full, _ = tracemalloc.get_traced_memory()
    for uid in uids:
        store.forget(uid)
    after, _ = tracemalloc.get_traced_memory()
    return full, after


def test_a_store_replaced_and_emptied_gives_its_memory_back() -> None:
    store = Store()
    tracemalloc.start()
    try:
        churn(store, 0)  # the process-wide tables (interned strings) grow once
        before, _ = tracemalloc.get_traced_memory()
        full, after = churn(store, 1)
    finally:
        tracemalloc.stop()
    assert len(store) == 0
    # what remains: the deleted uids' tombstones, not their objects
    assert after - before < (full - before) / 4, (before, full, after)
