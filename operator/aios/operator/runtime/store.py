"""The latest copy of each object of one kind, fed by the watch and by the operator's own
writes, so a reconcile never has to GET what it is about to act on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def newer(candidate: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether ``candidate`` is a later version of the same object than ``current``.

    resourceVersions are opaque to clients, but every Kubernetes storage backend issues
    them as increasing integers; when one is not an integer, the candidate wins (the watch
    delivers versions in order)."""
    try:
        return int(candidate["metadata"]["resourceVersion"]) > int(
            current["metadata"]["resourceVersion"]
        )
    except (KeyError, TypeError, ValueError):
        return True


class Store:
    """Objects by uid. A write's response may arrive before the watch event of an older
    version; that older copy is ignored, so a reconcile never starts from it."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[str, Any]] = {}

    def observe(self, obj: Mapping[str, Any]) -> None:
        """Keep ``obj`` if it is newer than the copy held."""
        uid = obj["metadata"]["uid"]
        held = self._objects.get(uid)
        if held is None or newer(obj, held):
            self._objects[uid] = dict(obj)

    def forget(self, uid: str) -> None:
        self._objects.pop(uid, None)

    def get(self, uid: str) -> dict[str, Any] | None:
        return self._objects.get(uid)

    def uids(self) -> list[str]:
        return list(self._objects)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._objects.values()))

    def __len__(self) -> int:
        return len(self._objects)
