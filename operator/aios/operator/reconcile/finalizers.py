"""Finalizers for what lives outside the cluster (Kafka topics, Temporal workflows, OPA
modules): pure list arithmetic; the handler writes the result with the object's
resourceVersion so a concurrent writer is never overwritten."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

FINALIZER_PREFIX = "aios.dev/"


def finalizer_name(purpose: str) -> str:
    """``aios.dev/<purpose>``, e.g. ``aios.dev/kafka-topics``."""
    return f"{FINALIZER_PREFIX}{purpose}"


def with_finalizer(finalizers: Sequence[str], name: str) -> list[str] | None:
    """The list with ``name`` added, or None when it is already there (nothing to write)."""
    return None if name in finalizers else [*finalizers, name]


def without_finalizer(finalizers: Sequence[str], name: str) -> list[str] | None:
    """The list with ``name`` removed, or None when it is absent (nothing to write)."""
    return [f for f in finalizers if f != name] if name in finalizers else None


def is_deleting(metadata: Mapping[str, object]) -> bool:
    return bool(metadata.get("deletionTimestamp"))
