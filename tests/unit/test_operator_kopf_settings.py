"""The kopf settings the operator starts with: what kopf does per watch event is what the
operator pays for ten thousand objects."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from aios.operator.main import configure


def test_kopf_keeps_no_diff_base_and_copies_no_object_per_event(
    monkeypatch: pytest.MonkeyPatch, example: Any
) -> None:
    settings = kopf.OperatorSettings()
    configure(settings=settings)
    storage = settings.persistence.diffbase_storage
    body = kopf.Body(example("district-7.yaml"))
    copies: list[object] = []
    deep = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda x, *a: copies.append(x) or deep(x, *a))
    assert storage.build(body=body) == {} and storage.fetch(body=body) is None
    assert copies == [], "the essence kopf diffs would be a deep copy of the whole object"
    assert settings.persistence.progress_storage.clear(essence=storage.build(body=body)) == {}
