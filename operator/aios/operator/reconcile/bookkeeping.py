"""What the API server and kubectl record on an object for themselves, which nothing in
aios reads: left out of what the operator holds and of what a Policy reviews. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def without_bookkeeping(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object without the API server's and kubectl's records of who set what:
    ``metadata.managedFields`` and, on an object ``kubectl apply``-ed, its whole previous
    manifest in an annotation. Each is often as large as the rest, read by nothing here,
    and a city's objects are all held."""
    metadata = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    annotations = metadata.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        metadata["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**obj, "metadata": metadata}
