"""Objects held read-only, each equal sub-tree once.

A city's 10,000 gateways repeat the same filter chains, buffer specs and condition shapes;
``json.loads`` gives each its own copies (measured: a gateway held in 10.1 KB, 2.8 KB with
equal sub-trees shared). Sharing is only safe when no reader can change what it was given,
so the held containers refuse mutation; ``copy.deepcopy`` (or ``dict(...)``) gives a
reader its own mutable copy.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

SHARED_STRING_LENGTH = 256
"""Strings up to this length are interned: field names, condition types, reasons and
messages repeat across a city's objects; longer ones are rarely shared."""

SWEEP_EVERY = 1000
"""Released objects between two sweeps of the table: what stale versions may keep alive
(about 1.5 MB of gateways, at 1.5 KB each) against the sweep's cost (about 0.1 µs per
held sub-tree)."""


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(
        f"a held {type(self).__name__} is shared between objects and read-only: copy it "
        "(dict(...), list(...) or copy.deepcopy) before changing it"
    )


class FrozenDict(dict[str, Any]):
    """A JSON object that refuses changes; copies of it are plain dicts."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return dict, (dict(self),)


class FrozenList(list[Any]):
    """A JSON array that refuses changes; copies of it are plain lists."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        return list, (list(self),)


def _same(left: Any, right: Any) -> bool:
    """Whether two children are the same value: held containers are canonical, so they
    compare by identity; scalars by type and value (``1``, ``1.0`` and ``True`` are equal
    in Python but not in JSON)."""
    if isinstance(left, (dict, list)):
        return left is right
    return type(left) is type(right) and left == right


def _identity(value: Any) -> object:
    """What a child contributes to its parent's key."""
    return id(value) if isinstance(value, (dict, list)) else (type(value), value)


class Sharing:
    """The held sub-trees of one store, by content. A sub-tree no held object uses any
    more is dropped at a sweep, so the table never outgrows what is held."""

    def __init__(self) -> None:
        self._held: dict[int, FrozenDict | FrozenList] = {}
        self._released = 0

    def held(self, value: Any) -> Any:
        """``value`` read-only, with every sub-tree equal to one already held replaced by
        that one."""
        if isinstance(value, dict):
            items = [(sys.intern(k), self.held(v)) for k, v in value.items()]
            key = hash(("{", *((k, _identity(v)) for k, v in items)))
            found = self._held.get(key)
            if (
                isinstance(found, FrozenDict)
                and len(found) == len(items)
                and all(k in found and _same(found[k], v) for k, v in items)
            ):
                return found
            return self._keep(key, FrozenDict(items), found is None)
        if isinstance(value, list):
            elements = [self.held(v) for v in value]
            key = hash(("[", *(_identity(v) for v in elements)))
            found = self._held.get(key)
            if (
                isinstance(found, FrozenList)
                and len(found) == len(elements)
                and all(_same(a, b) for a, b in zip(found, elements, strict=True))
            ):
                return found
            return self._keep(key, FrozenList(elements), found is None)
        if isinstance(value, str) and len(value) <= SHARED_STRING_LENGTH:
            return sys.intern(value)
        return value

    def release(self) -> None:
        """An object's version was dropped: what only it held goes at the next sweep."""
        self._released += 1
        if self._released >= SWEEP_EVERY:
            self.sweep()

    def __len__(self) -> int:
        return len(self._held)

    def _keep(self, key: int, tree: FrozenDict | FrozenList, free: bool) -> Any:
        """Remember ``tree`` for the objects that come after (a key taken by a different
        tree keeps its first: such collisions are rare and cost only the sharing)."""
        if free:
            self._held[key] = tree
        return tree

    def sweep(self) -> None:
        """Drop the sub-trees only this table refers to. Newest first: a parent is always
        newer than its children, so a child its dropped parent alone held goes too."""
        for key in reversed(list(self._held)):
            # references: the table's, and getrefcount's own argument
            if sys.getrefcount(self._held[key]) <= 2:
                del self._held[key]
        self._held = dict(self._held)  # a dict keeps its size after deletions; a copy does not
        self._released = 0
