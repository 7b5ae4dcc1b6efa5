"""Server-side apply of children: idempotent, owned, pruned (a LIST only when needed); the
operator's workloads and the add-ons' definitions read from its watch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import yaml
from kubernetes import config
from support import wait_for

from aios.operator.reconcile.children import MANAGED_BY, OPERATOR, OWNER_UID, owned
from aios.operator.runtime.children import (
    DEFINITIONS,
    HELD_SELECTOR,
    Children,
    Held,
    refused_as_namespace_goes,
)
from aios.operator.runtime.watching import Watching


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


def test_the_operators_workloads_are_read_from_its_watch_and_its_own_applies(
    kubectl, crds, namespace, site_env
) -> None:
    api = config.new_client_from_config(config_file=site_env["KUBECONFIG"])
    owner = created(kubectl, namespace, policy("workloads"))

    def statefulset(name: str) -> dict:
        return {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": 0,  # no pod: its state is what is read here
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "aios:none"}]},
                },
            },
        }

    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(statefulset("theirs")))
    ours = owned(statefulset("listed"), owner)  # there before the watch: listed
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(ours))

    def stored_version(name: str) -> str:
        found = kubectl.json("get", "statefulset", name, "-n", namespace)
        return str(found["metadata"]["resourceVersion"])

    children = Children(api)
    watching = Watching(api, [namespace])
    held = Held(watching.watches_per_kind)

    def held_version(name: str) -> str | None:
        found = held.store.named(namespace, name)
        return None if found is None else str(found["metadata"]["resourceVersion"])

    async def scenario() -> None:
        children.hold("apps/v1", "StatefulSet", held)
        watching.feed("statefulsets", held, "apps/v1", HELD_SELECTOR)
        try:
            read = await children.get("apps/v1", "StatefulSet", "theirs", namespace)
            assert read is not None and "template" not in read["spec"], "before the watch: a GET"
            watching.start()
            await until(lambda: held.synced)
            assert held.store.named(namespace, "theirs") is None, "not the operator's: not held"
            listed = held.store.named(namespace, "listed")
            assert listed is not None and (listed["apiVersion"], listed["kind"]) == (
                "apps/v1",
                "StatefulSet",
            ), "a list's items say what they are too"

            (applied,) = await children.apply([owned(statefulset("runner"), owner)])
            read = await children.get("apps/v1", "StatefulSet", "runner", namespace)
            assert read is not None
            # the StatefulSet controller may have written its status since: the watch's newer
            # copy then stands (etcd's revisions order one server's versions)
            assert int(read["metadata"]["resourceVersion"]) >= int(
                applied["metadata"]["resourceVersion"]
            ), "what this process applied, whether or not the watch has it yet, or newer"
            assert read["spec"] == {"replicas": 0} and read["metadata"]["generation"] == 1

            kubectl("annotate", "statefulset", "runner", "-n", namespace, "changed=by-someone")
            changed = stored_version("runner")
            await until(lambda: held_version("runner") == changed)
            kubectl("delete", "statefulset", "runner", "-n", namespace, "--wait=false")
            await until(lambda: held.store.named(namespace, "runner") is None)
            assert await children.get("apps/v1", "StatefulSet", "runner", namespace) is None
        finally:
            await watching.stop()

        kubectl("annotate", "statefulset", "theirs", "-n", namespace, "unseen=yes")
        kubectl("label", "statefulset", "theirs", "-n", namespace, f"{MANAGED_BY}={OPERATOR}")
        assert await children.get("apps/v1", "StatefulSet", "theirs", namespace) is None, (
            "the watch stopped: nothing is read with a GET once it has listed"
        )

    asyncio.run(scenario())


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for the watch's events (on this loop) to make ``condition`` true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the watch never delivered it"
        await asyncio.sleep(0.05)


def test_an_add_ons_definition_is_known_from_its_watch(kubectl, namespace, site_env) -> None:
    """``served`` answers from a watch of the one CustomResourceDefinition named (no GET per
    reconcile): it follows the definition's creation and deletion, and holds no other."""
    api = config.new_client_from_config(config_file=site_env["KUBECONFIG"])
    group = f"{namespace}.aios.test"
    name = f"gadgets.{group}"
    definition = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }
    api_version, _, plural = DEFINITIONS
    children = Children(api)
    watching = Watching(api, [namespace])  # a namespaced operator watches definitions too
    held = Held(watches=1)

    async def scenario() -> None:
        children.hold_definition(name, held)
        watching.feed(
            plural, held, api_version, field_selector=f"metadata.name={name}", cluster_scoped=True
        )
        watching.start()
        try:
            await until(lambda: held.synced)
            assert not await children.served(name)
            kubectl("create", "-f", "-", stdin=yaml.safe_dump(definition))
            await until(lambda: held.store.named("", name) is not None)
            assert await children.served(name)
            assert len(held.store) == 1, "aios's own definitions are not held"
            kubectl("delete", "crd", name, "--wait=false")
            await until(lambda: held.store.named("", name) is None)
            assert not await children.served(name)
            kubectl("create", "-f", "-", stdin=yaml.safe_dump(definition))
            await until(lambda: held.store.named("", name) is not None)
        finally:
            await watching.stop()
        kubectl("delete", "crd", name)
        assert await children.served(name), "the watch stopped: what it held, not a GET"

    asyncio.run(scenario())


def test_a_create_in_a_namespace_being_deleted_is_told_apart(kubectl, namespace, site_env) -> None:
    """An object's reconcile in a namespace being deleted fails until the deletion reaches
    the object: the API server's refusal is recognised (and logged without a traceback),
    another refusal is not."""
    api = config.new_client_from_config(config_file=site_env["KUBECONFIG"])
    children = Children(api, reapply_seconds=0)
    going = f"{namespace}-going"

    def config_map(name: str, **meta: object) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": going, **meta},
        }

    def refused(name: str) -> Exception | None:
        try:
            asyncio.run(children.apply([config_map(name)]))
        except Exception as error:
            return error
        return None

    kubectl("create", "namespace", going)
    held = config_map("held", finalizers=["aios.test/hold"])  # keeps the namespace going
    kubectl("create", "-f", "-", stdin=yaml.safe_dump(held))
    try:
        other = refused("Not_A_Name")
        assert other is not None and not refused_as_namespace_goes(other), "refused for its name"
        kubectl("delete", "namespace", going, "--wait=false")
        # the API server's admission may learn of the deletion a moment late
        error = wait_for(lambda: refused("late"), what="a create refused as the namespace goes")
        assert refused_as_namespace_goes(error), error
    finally:
        finalizers = '{"metadata": {"finalizers": null}}'
        kubectl("patch", "configmap", "held", "-n", going, "--type=merge", "-p", finalizers)
