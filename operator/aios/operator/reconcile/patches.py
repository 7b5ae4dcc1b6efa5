"""JSON merge patches (RFC 7386), computed purely: a write that would change nothing is
not sent, so an operator that finds everything as it should be makes no requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patched(target: Any, patch: Any) -> Any:
    """``target`` after a merge patch: objects merge key by key, ``null`` deletes, anything
    else (lists included) replaces."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patched(result.get(key), value)
    return result


def changes_anything(target: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    return bool(merge_patched(target, patch) != target)
