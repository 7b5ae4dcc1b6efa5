"""Pure helpers for the in-cluster children a kind renders: ownership and labels.

Every child carries an owner reference to its aios object (so Kubernetes collects it) and
the labels that let the operator find and prune what it no longer renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aios.api.base import SITE_LABEL, Resource, owner_reference

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
VERSION = "app.kubernetes.io/version"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
OWNER_UID = "aios.dev/owner-uid"
OPERATOR = "aios-operator"


def app_labels(
    name: str, component: str, instance: str | None = None, version: str | None = None
) -> dict[str, str]:
    """Kubernetes' recommended labels of a workload aios runs (``app.kubernetes.io/*``)."""
    labels = {NAME: name}
    if instance is not None:
        labels[INSTANCE] = instance
    if version is not None:
        labels[VERSION] = version
    return {**labels, COMPONENT: component, PART_OF: "aios"}


def as_owner(obj: Resource[Any, Any]) -> dict[str, Any]:
    """The parts of a parsed object ``owned`` reads, as the stored object has them."""
    return {"apiVersion": obj.api_version, "kind": obj.kind, "metadata": obj.metadata}


def owned(child: dict[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` with the owner's namespace, owner reference and ownership labels."""
    meta = child.setdefault("metadata", {})
    meta["namespace"] = owner["metadata"]["namespace"]
    meta["ownerReferences"] = [owner_reference(owner, block_deletion=True)]
    labels = meta.setdefault("labels", {})
    labels[MANAGED_BY] = OPERATOR
    labels[OWNER_UID] = owner["metadata"]["uid"]
    return child


def controller_of(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(kind, uid)`` of the object's controlling owner, if it has one."""
    for reference in obj["metadata"].get("ownerReferences") or []:
        if reference.get("controller"):
            return str(reference["kind"]), str(reference["uid"])
    return None


def applied_elsewhere(owner: Mapping[str, Any]) -> bool:
    """Whether children of ``owner`` (as stored) may exist that no render of its current
    spec names: once a reconcile has reported (another process's, before a restart), or
    at a later generation. A new object's children can only be what its one spec renders
    (a reconcile stopped part-way), so its first prune has nothing to look for."""
    observed = (owner.get("status") or {}).get("observedGeneration")
    return observed is not None or owner["metadata"].get("generation", 1) != 1


def sited(child: Mapping[str, Any], site: str) -> dict[str, Any]:
    """``child`` labelled with the site, and so are the pods its template makes:
    Prometheus takes the label onto every series it scrapes from them. (A copy: only the
    two label maps it changes are new.)"""
    labelled = {**child, "metadata": _with_site(child.get("metadata"), site)}
    spec = child.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    if isinstance(spec, Mapping) and isinstance(template, Mapping):
        template = {**template, "metadata": _with_site(template.get("metadata"), site)}
        labelled["spec"] = {**spec, "template": template}
    return labelled


def _with_site(metadata: Mapping[str, Any] | None, site: str) -> dict[str, Any]:
    labels = {**((metadata or {}).get("labels") or {}), SITE_LABEL: site}
    return {**(metadata or {}), "labels": labels}
