"""Server-side apply of children: idempotent, owned, pruned (a LIST only when needed)."""

from __future__ import annotations

import asyncio
import json

import yaml
from kubernetes import config

from aios.operator.reconcile.children import OWNER_UID, owned
from aios.operator.runtime.children import Children


def policy(name: str) -> dict:
    """An owner of children (any aios kind would do)."""
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "Policy",
        "metadata": {"name": name},
        "spec": {"rego": "package x\n", "enforcement": "dryrun"},
    }


def created(kubectl, namespace: str, manifest: dict) -> dict:
    """The object as the API server stored it at its creation (the site's operator may
    reconcile it a moment later)."""
    return json.loads(
        kubectl("create", "-n", namespace, "-f", "-", "-o", "json", stdin=yaml.safe_dump(manifest))
    )


def test_children_are_applied_idempotently_and_pruned(kubectl, crds, namespace, site_env) -> None:
    api = config.new_client_from_config(config_file=site_env["KUBECONFIG"])
    children = Children(api)
    reapplying = Children(api, reapply_seconds=0)  # sends every time
    owner = created(kubectl, namespace, policy("owner"))  # before the operator reconciles it

    def config_map(name: str, value: str) -> dict:
        return owned(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {"k": value},
            },
            owner,
        )

    first = asyncio.run(children.apply([config_map("a", "1"), config_map("b", "1")]))
    assert asyncio.run(children.apply([config_map("a", "1")])) == [], "just applied: not sent"
    again = asyncio.run(reapplying.apply([config_map("a", "1")]))
    assert again[0]["metadata"]["resourceVersion"] == first[0]["metadata"]["resourceVersion"], (
        "applying the same again changes nothing"
    )
    changed = asyncio.run(children.apply([config_map("a", "2")]))
    assert changed[0]["data"] == {"k": "2"}
    asyncio.run(children.apply([config_map("a", "1")]))
    stored = kubectl.json("get", "configmap", "a", "-n", namespace)
    assert stored["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    assert stored["metadata"]["labels"][OWNER_UID] == owner["metadata"]["uid"]

    kinds = [("v1", "ConfigMap")]
    assert asyncio.run(children.prune(owner, kinds, [config_map("a", "1")])) == [], (
        "an owner never reconciled has no children from another spec: no LIST, b stays"
    )
    assert asyncio.run(children.get("v1", "ConfigMap", "b", namespace)) is not None

    # reconciled by another process (its status written), then this one starts
    kubectl("patch", "policy", "owner", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", '{"status": {"observedGeneration": 1}}')  # fmt: skip
    owner = kubectl.json("get", "policy", "owner", "-n", namespace)
    restarted = Children(api)
    deleted = asyncio.run(restarted.prune(owner, kinds, [config_map("a", "1")]))
    assert deleted == ["ConfigMap/b"], "the first prune of an owner reconciled before looks"
    assert kubectl.run("get", "configmap", "b", "-n", namespace).returncode != 0
    assert asyncio.run(children.get("v1", "ConfigMap", "b", namespace)) is None

    stray = config_map("c", "1")  # rendered by no one this process knows of
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(stray))
    assert asyncio.run(restarted.prune(owner, kinds, [config_map("a", "1")])) == [], (
        "nothing it applied was dropped: no LIST, so the stray stays"
    )
    assert asyncio.run(restarted.prune(owner, kinds, [])) == ["ConfigMap/a", "ConfigMap/c"]
