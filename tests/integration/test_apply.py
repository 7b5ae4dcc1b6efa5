"""Server-side apply of children: idempotent, owned, pruned."""

from __future__ import annotations

import asyncio

import yaml

from aios.operator import apply
from aios.operator.reconcile.children import OWNER_UID, owned


def test_children_are_applied_idempotently_and_pruned(
    kubectl, crds, namespace, site_env, monkeypatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", site_env["KUBECONFIG"])
    apply.dynamic_client.cache_clear()
    owner_manifest = {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "Policy",
        "metadata": {"name": "owner"},
        "spec": {"rego": "package x\n", "enforcement": "dryrun"},
    }
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(owner_manifest))
    owner = kubectl.json("get", "policy", "owner", "-n", namespace)

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

    first = asyncio.run(apply.apply([config_map("a", "1"), config_map("b", "1")]))
    again = asyncio.run(apply.apply([config_map("a", "1")]))
    assert again[0]["metadata"]["resourceVersion"] == first[0]["metadata"]["resourceVersion"]
    stored = kubectl.json("get", "configmap", "a", "-n", namespace)
    assert stored["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    assert stored["metadata"]["labels"][OWNER_UID] == owner["metadata"]["uid"]

    deleted = asyncio.run(
        apply.prune(
            namespace, owner["metadata"]["uid"], [("v1", "ConfigMap")], [config_map("a", "1")]
        )
    )
    assert deleted == ["ConfigMap/b"]
    assert kubectl.run("get", "configmap", "b", "-n", namespace).returncode != 0
    assert asyncio.run(apply.get("v1", "ConfigMap", "b", namespace)) is None
