"""Pure helpers for the in-cluster children a kind renders: ownership and labels.

Every child carries an owner reference to its aios object (so Kubernetes collects it) and
the labels that let the operator find and prune what it no longer renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aios.api import API_VERSION
from aios.api.base import SITE_LABEL

MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
OWNER_UID = "aios.dev/owner-uid"
OPERATOR = "aios-operator"


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned(child: dict[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` with the owner's namespace, owner reference and ownership labels."""
    meta = child.setdefault("metadata", {})
    meta["namespace"] = owner["metadata"]["namespace"]
    meta["ownerReferences"] = [owner_reference(owner)]
    labels = meta.setdefault("labels", {})
    labels[MANAGED_BY] = OPERATOR
    labels[OWNER_UID] = owner["metadata"]["uid"]
    return child


def sited(children: list[dict[str, Any]], site: str) -> list[dict[str, Any]]:
    """``children`` labelled with the site, and so are the pods their templates make:
    Prometheus takes the label onto every series it scrapes from them."""
    for child in children:
        child.setdefault("metadata", {}).setdefault("labels", {})[SITE_LABEL] = site
        template = (child.get("spec") or {}).get("template")
        if isinstance(template, dict):
            template.setdefault("metadata", {}).setdefault("labels", {})[SITE_LABEL] = site
    return children
