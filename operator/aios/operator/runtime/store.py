"""The latest copy of each object of one kind, fed by the watch and by the operator's own
writes, so a reconcile never has to GET what it is about to act on."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from aios.operator.reconcile.bookkeeping import without_bookkeeping
from aios.operator.runtime.sharing import Sharing

TOMBSTONE_SECONDS = 600.0
"""How long a deleted object's uid is remembered: longer than any write's response can take
to come back."""


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


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"].get("namespace") or "")


def name_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    return namespace_of(obj), str(obj["metadata"]["name"])


class Store:
    """Objects by uid. A write's response may arrive before the watch event of an older
    version; that older copy is ignored, so a reconcile never starts from it. It may also
    arrive after the object's deletion (the write that removed the last finalizer): a
    deleted uid is never taken back in. What it holds is read-only (see ``sharing``)."""

    def __init__(self) -> None:
        self._sharing = Sharing()
        self._objects: dict[str, dict[str, Any]] = {}
        self._deleted: dict[str, float] = {}
        self._namespaces: dict[str, set[str]] = {}
        """uids by namespace: an intent selects among its namespace's gateways, not the
        city's."""
        self._names: dict[tuple[str, str], str] = {}
        """uids by (namespace, name): what reports about an object names it, not its uid."""

    def observe(self, obj: Mapping[str, Any]) -> None:
        """Keep ``obj`` if it is newer than the copy held (and not deleted)."""
        uid = obj["metadata"]["uid"]
        if uid in self._deleted:
            return
        held = self._objects.get(uid)
        if held is None or newer(obj, held):
            self._objects[uid] = self._sharing.held(without_bookkeeping(obj))
            if held is not None:
                self._sharing.release()
            self._namespaces.setdefault(namespace_of(obj), set()).add(uid)
            self._names[name_of(obj)] = uid

    def forget(self, uid: str) -> None:
        """The object is gone for good (uids are never reused)."""
        held = self._objects.pop(uid, None)
        if held is not None:
            namespace = namespace_of(held)
            self._namespaces[namespace].discard(uid)
            if not self._namespaces[namespace]:
                del self._namespaces[namespace]
            if self._names.get(name_of(held)) == uid:  # not a successor of the same name
                del self._names[name_of(held)]
            self._sharing.release()
        now = time.monotonic()
        while self._deleted:  # oldest first (insertion order): drop the expired ones
            oldest, when = next(iter(self._deleted.items()))
            if now - when < TOMBSTONE_SECONDS:
                break
            del self._deleted[oldest]
        self._deleted[uid] = now

    def get(self, uid: str) -> dict[str, Any] | None:
        return self._objects.get(uid)

    def uid_of(self, namespace: str, name: str) -> str | None:
        """The uid of the object held under this name, if any."""
        return self._names.get((namespace, name))

    def named(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object held under this name, if any."""
        uid = self._names.get((namespace, name))
        return None if uid is None else self._objects.get(uid)

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        return [self._objects[uid] for uid in self._namespaces.get(namespace, ())]

    def missing(self, namespace: str | None, listed: set[str]) -> list[dict[str, Any]]:
        """The objects held in ``namespace`` (``None``: in any) that a new list of it lacks:
        deleted while no watch ran."""
        held = self.in_namespace(namespace) if namespace is not None else list(self)
        return [o for o in held if o["metadata"]["uid"] not in listed]

    def uids(self) -> list[str]:
        return list(self._objects)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._objects.values()))

    def __len__(self) -> int:
        return len(self._objects)
