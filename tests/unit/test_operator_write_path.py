"""The operator's single write path, without servers: the store never goes back to an older
copy, the queue runs one object once at a time and coalesces what arrives meanwhile, what
makes an object due, which changes are written, and a patch that changes nothing is
recognised as such (so it is never sent)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
from kubernetes import client

from aios.api import AutomationIntent, EdgeGateway
from aios.connectors import serving
from aios.operator.reconcile.bookkeeping import LAST_APPLIED
from aios.operator.reconcile.children import applied_elsewhere
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.reconcile.patches import changes_anything, merge_patched
from aios.operator.runtime.children import Held
from aios.operator.runtime.controller import (
    Context,
    Controller,
    KindSpec,
    finalizer_change,
    reconciled_status,
)
from aios.operator.runtime.queue import Reason, WorkQueue
from aios.operator.runtime.runtime import Runtime
from aios.operator.runtime.store import Store
from aios.operator.runtime.watching import watch_targets
from aios.operator.runtime.writer import Change
from aios.operator.settings import OperatorSettings, WebhookSettings


def obj(uid: str, version: str, name: str = "", **status: Any) -> dict[str, Any]:
    metadata = {"uid": uid, "resourceVersion": version, "namespace": "ns", "name": name or uid}
    return {"metadata": metadata, "status": status}


def test_the_store_keeps_the_newest_copy_whatever_order_they_arrive_in() -> None:
    store = Store()
    store.observe(obj("a", "12", phase="written"))  # a write's response
    store.observe(obj("a", "11", phase="older"))  # the watch catching up
    assert store.get("a") == obj("a", "12", phase="written")
    store.observe(obj("a", "13", phase="newer"))
    assert store.get("a") == obj("a", "13", phase="newer")
    store.forget("a")
    assert store.get("a") is None and len(store) == 0
    store.observe(obj("a", "14", phase="the response of the write that deleted it"))
    assert store.get("a") is None, "a deleted object is never taken back in"


def test_the_store_holds_no_managed_fields_nor_kubectls_last_applied_manifest() -> None:
    store = Store()
    managed = [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
    raw = obj("a", "1", phase="x")
    raw["metadata"]["managedFields"] = managed
    store.observe(raw)
    assert store.get("a") == obj("a", "1", phase="x")
    assert raw["metadata"]["managedFields"] == managed, "the caller's copy is left alone"
    applied = obj("a", "2", phase="y")
    applied["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(applied), "team": "air"}
    store.observe(applied)
    assert store.get("a")["metadata"]["annotations"] == {"team": "air"}  # type: ignore[index]
    assert LAST_APPLIED in applied["metadata"]["annotations"], "the caller's copy is left alone"


def test_objects_held_share_their_repeated_strings() -> None:
    """Each JSON document decodes into its own strings; held, two objects share them."""
    store = Store()
    message = "The agent applied the config of generation 1."
    for uid in ("a", "b"):
        raw = json.loads(json.dumps(obj(uid, "1", reason="Applied", message=message)))
        store.observe(raw)
    a, b = store.get("a"), store.get("b")
    assert a is not None and b is not None
    assert a == obj("a", "1", reason="Applied", message=message)
    assert a["status"]["message"] is b["status"]["message"]
    assert next(iter(a["status"])) is next(iter(b["status"])), "keys too"


def test_the_store_lists_one_namespace_without_the_others() -> None:
    store = Store()
    for uid, namespace in (("a", "north"), ("b", "south"), ("c", "north")):
        store.observe(
            {"metadata": {"uid": uid, "resourceVersion": "1", "namespace": namespace, "name": uid}}
        )
    assert sorted(o["metadata"]["uid"] for o in store.in_namespace("north")) == ["a", "c"]
    store.forget("a")
    store.forget("b")
    assert [o["metadata"]["uid"] for o in store.in_namespace("north")] == ["c"]
    assert store.in_namespace("south") == [] and store.in_namespace("east") == []


def test_the_store_finds_an_object_by_name_and_a_successor_under_the_same_name() -> None:
    store = Store()
    store.observe(obj("first", "1", name="lamp-7"))
    assert store.uid_of("ns", "lamp-7") == "first" and store.uid_of("other", "lamp-7") is None
    store.observe(obj("second", "2", name="lamp-7"))  # recreated before the old one's DELETED
    store.forget("first")
    assert store.uid_of("ns", "lamp-7") == "second", "the successor keeps the name"
    named = store.named("ns", "lamp-7")
    assert named is not None and named["metadata"]["resourceVersion"] == "2"
    store.forget("second")
    assert store.uid_of("ns", "lamp-7") is None and store.named("ns", "lamp-7") is None


def until_drained(queue: WorkQueue, feed: Callable[[WorkQueue], Awaitable[None]]) -> None:
    """Start the queue's workers, feed it, and wait until it has nothing left."""

    async def scenario() -> None:
        queue.start()
        await feed(queue)
        await asyncio.wait_for(queue.drained(), timeout=10)
        await queue.stop()

    asyncio.run(scenario())


def test_a_burst_for_one_object_runs_once_at_a_time_and_once_more_after() -> None:
    runs: list[tuple[str, Reason]] = []
    running: set[str] = set()
    overlaps: list[str] = []

    async def work(key: str, reasons: Reason) -> None:
        if key in running:
            overlaps.append(key)
        running.add(key)
        runs.append((key, reasons))
        await asyncio.sleep(0.01)
        running.discard(key)

    async def feed(queue: WorkQueue) -> None:
        queue.add("a", Reason.EVENT)
        queue.add("b", Reason.TICK)
        await asyncio.sleep(0)  # the workers take a and b
        for _ in range(5):
            queue.add("a", Reason.EVENT)  # while a runs: coalesced into one more run
        queue.add("a", Reason.TICK)
        assert len(queue) == 2, "a key running and queued again counts once"

    until_drained(WorkQueue(work, workers=4), feed)
    assert overlaps == [], "one object is never worked on by two workers"
    assert sorted(k for k, _ in runs) == ["a", "a", "b"], runs
    assert runs[-1] == ("a", Reason.EVENT | Reason.TICK), "the reasons are merged"


def test_objects_queued_for_an_event_go_before_those_queued_by_the_tick() -> None:
    runs: list[tuple[str, Reason]] = []

    async def work(key: str, reasons: Reason) -> None:
        runs.append((key, reasons))
        await asyncio.sleep(0)

    async def feed(queue: WorkQueue) -> None:
        for key in ("t1", "t2", "x", "t3"):
            queue.add(key, Reason.TICK)
        queue.add("new", Reason.EVENT)
        queue.add("x", Reason.EVENT)  # queued by the tick, then changed: moves up

    until_drained(WorkQueue(work, workers=1), feed)
    assert runs == [
        ("new", Reason.EVENT),
        ("x", Reason.TICK | Reason.EVENT),
        ("t1", Reason.TICK),
        ("t2", Reason.TICK),
        ("t3", Reason.TICK),
    ]


def test_a_failing_work_does_not_kill_its_worker() -> None:
    done: list[str] = []

    async def work(key: str, _: Reason) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        done.append(key)

    async def feed(queue: WorkQueue) -> None:
        queue.add("bad", Reason.EVENT)
        queue.add("good", Reason.EVENT)

    until_drained(WorkQueue(work, workers=1), feed)
    assert done == ["good"]


def test_merge_patches_follow_rfc_7386() -> None:
    target = {"status": {"counts": {"a": 1, "b": 2}, "list": [1, 2], "gone": "x"}}
    patch = {"status": {"counts": {"b": 3}, "list": [2], "gone": None}}
    assert merge_patched(target, patch) == {"status": {"counts": {"a": 1, "b": 3}, "list": [2]}}


def test_a_patch_that_restates_the_object_changes_nothing() -> None:
    stored = {"metadata": {"name": "x"}, "status": {"observedGeneration": 2, "lag": {"p": 0}}}
    assert not changes_anything(stored, {"status": {"observedGeneration": 2}})
    assert not changes_anything(stored, {"status": {"lag": {"p": 0}, "absent": None}})
    assert changes_anything(stored, {"status": {"lag": {"p": 1}}})
    assert changes_anything(stored, {"status": {"observedGeneration": None}})


def gateway(generation: int = 1, observed: int | None = 1, **meta: Any) -> dict[str, Any]:
    status = {} if observed is None else {"observedGeneration": observed}
    metadata = {"generation": generation, "uid": "u", "resourceVersion": "1", "namespace": "ns"}
    metadata |= meta
    metadata.setdefault("name", metadata["uid"])
    return {"metadata": metadata, "spec": {}, "status": status}


def test_an_object_is_due_for_a_new_generation_pending_work_or_its_finalizer() -> None:
    def rollout_step(raw: Mapping[str, Any]) -> bool:
        return bool((raw.get("status") or {}).get("stepToServe"))

    spec = KindSpec(EdgeGateway, pending=rollout_step)
    finalizer = spec.finalizer
    assert spec.due(gateway(generation=2, observed=1)), "a spec not yet observed"
    assert not spec.due(gateway())
    assert spec.due({**gateway(), "status": {"observedGeneration": 1, "stepToServe": 3}})
    deleting = {"deletionTimestamp": "2026-11-30T00:00:00Z"}
    assert spec.due(gateway(generation=2, finalizers=[finalizer], **deleting)), "to finalize"
    assert not spec.due(gateway(generation=2, finalizers=["other"], **deleting)), (
        "another controller's finalizer is not ours to wait on"
    )


def test_a_status_for_an_older_generation_is_not_written() -> None:
    change = reconciled_status(1, {"topics": "t"}, [ConditionUpdate("Ready", "True", "Ok")])
    written = change(gateway(generation=1, observed=None))
    assert written is not None
    assert written["status"]["observedGeneration"] == 1 and written["status"]["topics"] == "t"
    assert change(gateway(generation=2, observed=1)) is None, "its own reconcile reports"


def test_finalizers_are_added_and_removed_keeping_other_controllers() -> None:
    add, remove = finalizer_change("aios.dev/x", add=True), finalizer_change("aios.dev/x", False)
    theirs = gateway(finalizers=["kubernetes.io/other"])
    assert add(theirs) == {"metadata": {"finalizers": ["kubernetes.io/other", "aios.dev/x"]}}
    ours = gateway(finalizers=["kubernetes.io/other", "aios.dev/x"])
    assert add(ours) is None, "nothing to write"
    assert remove(ours) == {"metadata": {"finalizers": ["kubernetes.io/other"]}}
    assert remove(theirs) is None


def test_the_tick_queues_only_objects_with_work_due() -> None:
    ready = [{"type": "Ready", "status": "True", "reason": "Ok"}]
    error = [{"type": "Ready", "status": "False", "reason": "Error"}]
    converged = {**gateway(uid="done"), "status": {"observedGeneration": 1, "conditions": ready}}
    failing = {**gateway(uid="failing"), "status": {"observedGeneration": 1, "conditions": error}}
    spec = KindSpec(EdgeGateway, retry_interval=3600)
    settings = OperatorSettings(kafka_bootstrap="", temporal_address="")
    controller = Controller(spec, client.ApiClient(), kopf.Memo(), settings)
    for raw in (converged, gateway(generation=2, uid="changed"), failing):
        controller.store.observe(raw)
    controller.tick()
    assert len(controller.queue) == 2, "the new generation and the retry, not the converged one"


def test_a_report_refreshes_at_once_and_the_tick_waits_its_interval() -> None:
    refreshed: list[str] = []

    async def refresh(ctx: Context) -> Change | None:
        refreshed.append(ctx.body["metadata"]["name"])
        return None

    ready = [{"type": "Ready", "status": "True", "reason": "Ok"}]
    spec = KindSpec(EdgeGateway, refresh=refresh, refresh_interval=lambda _: 3600)
    settings = OperatorSettings(kafka_bootstrap="", temporal_address="")
    controller = Controller(spec, client.ApiClient(), kopf.Memo(), settings)
    for name in ("lamp-1", "lamp-2"):
        raw = gateway(uid=name)
        controller.store.observe({**raw, "status": {"observedGeneration": 1, "conditions": ready}})

    async def scenario() -> None:
        controller.queue.start()
        controller.tick()  # never refreshed: both are due
        await controller.queue.drained()
        controller.report("ns", "lamp-2")  # a heartbeat
        controller.report("ns", "gone")  # nothing held under that name
        await controller.queue.drained()
        controller.tick()  # the interval has not passed since
        assert len(controller.queue) == 0
        await controller.queue.stop()

    asyncio.run(scenario())
    assert sorted(refreshed) == ["lamp-1", "lamp-2", "lamp-2"]


def test_a_deletion_is_cleaned_up_after_and_retried_by_the_tick_until_it_succeeds() -> None:
    attempts: list[str] = []

    async def deleted(ctx: Context) -> None:
        attempts.append(ctx.body["metadata"]["name"])
        if len(attempts) == 1:
            raise ConnectionError("Kafka away")

    spec = KindSpec(EdgeGateway, deleted=deleted, retry_interval=3600)
    settings = OperatorSettings(kafka_bootstrap="", temporal_address="")
    controller = Controller(spec, client.ApiClient(), kopf.Memo(), settings)
    lamp = gateway(uid="lamp-1")

    async def scenario() -> None:
        controller.queue.start()
        controller.observe(None, lamp)
        controller.observe("DELETED", lamp)
        await controller.queue.drained()
        assert attempts == ["lamp-1"] and controller.store.get("lamp-1") is None
        controller.tick()  # the failed clean-up again
        await controller.queue.drained()
        controller.tick()  # done: nothing more
        assert len(controller.queue) == 0
        await controller.queue.stop()

    asyncio.run(scenario())
    assert attempts == ["lamp-1", "lamp-1"]
    assert not spec.due({**lamp, "metadata": {**lamp["metadata"], "deletionTimestamp": "x"}})


def test_a_relist_reports_what_went_while_no_watch_ran_in_that_namespace_only() -> None:
    cleaned: list[str] = []

    async def deleted(ctx: Context) -> None:
        cleaned.append(ctx.body["metadata"]["name"])

    spec = KindSpec(EdgeGateway, deleted=deleted)
    settings = OperatorSettings(kafka_bootstrap="", temporal_address="")
    controller = Controller(spec, client.ApiClient(), kopf.Memo(), settings)
    kept, gone, elsewhere = gateway(uid="kept"), gateway(uid="gone"), gateway(uid="south")
    elsewhere["metadata"]["namespace"] = "south"

    async def scenario() -> None:
        controller.queue.start()
        for raw in (kept, gone, elsewhere):
            controller.observe(None, raw)
        controller.relisted("ns", {"kept"})  # "south" was not listed: not a deletion
        await controller.queue.drained()
        await controller.queue.stop()

    asyncio.run(scenario())
    assert cleaned == ["gone"]
    assert sorted(o["metadata"]["uid"] for o in controller.store) == ["kept", "south"]
    assert Store().missing(None, set()) == []


def test_the_namespaces_asked_for_are_watched_one_by_one_or_over_the_cluster() -> None:
    assert watch_targets([]) == [(None, None)], "the whole cluster"
    assert watch_targets(["north", "south", "north"]) == [("north", None), ("south", None)]
    ((where, accept),) = watch_targets(["city-*", "ops"])
    assert where is None and accept is not None, "a glob: the cluster, filtered"
    assert accept("city-7") and accept("ops") and not accept("operations")


def test_only_an_object_reconciled_before_may_have_children_its_spec_does_not_name() -> None:
    assert not applied_elsewhere(gateway(observed=None)), "new: nothing but its own render"
    assert applied_elsewhere(gateway(observed=1)), "reconciled, maybe by another process"
    assert applied_elsewhere(gateway(generation=2, observed=None)), "an earlier spec's"


INTENT_OWNER = {"kind": "AutomationIntent", "name": "air", "uid": "intent-1", "controller": True}


def statefulset(uid: str, version: str, namespace: str, name: str, **status: Any) -> dict[str, Any]:
    metadata = {"uid": uid, "resourceVersion": version, "namespace": namespace, "name": name}
    metadata["ownerReferences"] = [INTENT_OWNER]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {**metadata, "generation": 2, "labels": {"app": name}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "runner"}]}}},
        "status": status or {"observedGeneration": 2, "availableReplicas": 3},
    }


def test_a_held_workload_is_read_once_every_watch_has_listed_and_only_what_is_read() -> None:
    held = Held(watches=2)  # two namespaces watched
    held.observe(None, statefulset("a", "5", "north", "air-runner"))
    held.relisted("north", {"a"})
    assert not held.synced, "south not listed yet: a missing object may exist there"
    held.relisted("south", set())
    assert held.synced
    assert held.store.named("north", "air-runner") == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "uid": "a", "resourceVersion": "5", "namespace": "north", "name": "air-runner",
            "generation": 2, "ownerReferences": [INTENT_OWNER],
        },
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 2, "availableReplicas": 3},
    }, "no template, no labels"  # fmt: skip
    assert held.store.named("south", "air-runner") is None
    held.observe("MODIFIED", {**statefulset("a", "4", "north", "air-runner"), "status": {}})
    kept = held.store.named("north", "air-runner")
    assert kept is not None
    assert kept["status"]["availableReplicas"] == 3, "an older copy"
    held.observe("DELETED", statefulset("a", "6", "north", "air-runner"))
    assert held.store.named("north", "air-runner") is None
    held.observe(None, statefulset("b", "7", "south", "runner"))
    held.relisted("south", set())  # listed again: b went while no watch ran
    assert held.store.named("south", "runner") is None


def test_a_held_service_keeps_its_cluster_ip_where_a_model_is_probed() -> None:
    """A ModelDeployment's versions are probed at their Services' cluster IPs, read from
    the watch: the held copy keeps the address and nothing else of the spec."""
    held = Held(watches=1)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"uid": "s", "resourceVersion": "3", "namespace": "north", "name": "aq"},
        "spec": {"clusterIP": "10.96.0.7", "ports": [{"port": 8000}], "selector": {"a": "b"}},
    }
    held.observe(None, service)
    kept = held.store.named("north", "aq")
    assert kept is not None and kept["spec"] == {"clusterIP": "10.96.0.7"}
    url = "http://aq.north.svc:8000"
    assert serving.service_of(url) == ("north", "aq")
    assert serving.at_cluster_ip(url, kept["spec"]["clusterIP"]) == "http://10.96.0.7:8000"
    assert serving.at_cluster_ip(url, "None") == url, "headless: the name as given"
    assert serving.at_cluster_ip(url, None) == url, "an ExternalName has none"


def test_a_workloads_new_status_from_the_watch_is_told_once() -> None:
    told: list[tuple[str, str]] = []
    held = Held(watches=1, on_status=lambda w: told.append((w["metadata"]["uid"], w["status"])))
    held.observe(None, statefulset("a", "5", "ns", "r", availableReplicas=0))  # listed
    held.relisted("ns", {"a"})
    held.observe(None, statefulset("a", "6", "ns", "r", availableReplicas=0))  # applied
    assert told == [], "a list and an apply are the owner's own reconcile's to look at"
    held.observe("MODIFIED", statefulset("a", "6", "ns", "r", availableReplicas=0))
    held.observe("MODIFIED", statefulset("a", "5", "ns", "r", availableReplicas=1))  # late
    assert told == [], "the same status, and an older copy"
    held.observe("MODIFIED", statefulset("a", "7", "ns", "r", availableReplicas=1))
    assert told == [("a", {"availableReplicas": 1})]


def test_a_workloads_change_reconciles_its_owner_at_once_only_if_it_has_not_converged() -> None:
    reconciled: list[str] = []
    ready = [{"type": "Ready", "status": "True", "reason": "Ok"}]
    waiting = [{"type": "Ready", "status": "False", "reason": "Progressing"}]
    spec = KindSpec(EdgeGateway, retry_interval=3600)
    settings = OperatorSettings(kafka_bootstrap="", temporal_address="")
    controller = Controller(spec, client.ApiClient(), kopf.Memo(), settings)
    for uid, conditions in (("converged", ready), ("waiting", waiting)):
        raw = gateway(uid=uid)
        controller.store.observe(
            {**raw, "status": {"observedGeneration": 1, "conditions": conditions}}
        )

    async def reconcile(uid: str, _: Mapping[str, Any]) -> None:
        reconciled.append(uid)

    controller._reconcile = reconcile  # type: ignore[method-assign]

    async def scenario() -> None:
        controller.queue.start()
        for uid in ("converged", "waiting", "unknown"):
            controller.child_changed(uid)
        await controller.queue.drained()
        await controller.queue.stop()

    asyncio.run(scenario())
    assert reconciled == ["waiting"], "not its next retry, an hour away"


def test_a_workloads_change_is_told_to_its_owner_and_the_workers_to_its_namespaces_intents() -> (
    None
):
    runtime = Runtime(
        OperatorSettings(kafka_bootstrap="", temporal_address=""),
        WebhookSettings.from_env({}),
        client.ApiClient(),
    )
    reconciled: list[tuple[str, str]] = []
    waiting = {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False"}]}
    for model, uids in ((AutomationIntent, ("intent-1", "other")), (EdgeGateway, ("intent-1",))):
        controller = Controller(KindSpec(model), runtime.api, kopf.Memo(), runtime.settings)
        for uid in uids:
            namespace = "elsewhere" if uid == "other" else "ns"
            controller.store.observe({**gateway(uid=uid, namespace=namespace), "status": waiting})

        async def reconcile(uid: str, _: Mapping[str, Any], kind: str = model.crd.kind) -> None:
            reconciled.append((kind, uid))

        controller._reconcile = reconcile  # type: ignore[method-assign]
        runtime.controllers[model.crd.plural] = controller
    runner = statefulset("a", "5", "ns", "air-runner")
    worker = {**statefulset("b", "6", "ns", "aios-worker"), "kind": "Deployment"}
    worker["metadata"]["ownerReferences"] = []
    stray = {**worker, "metadata": {**worker["metadata"], "name": "someone-elses"}}

    async def told(*workloads: dict[str, Any]) -> list[list[tuple[str, str]]]:
        for controller in runtime.controllers.values():
            controller.queue.start()
        each = []
        for workload in workloads:
            reconciled.clear()
            runtime.workload_changed(workload)
            for controller in runtime.controllers.values():
                await controller.queue.drained()
            each.append(sorted(reconciled))
        for controller in runtime.controllers.values():
            await controller.queue.stop()
        return each

    by_runner, by_worker, by_stray = asyncio.run(told(runner, worker, stray))
    assert by_runner == [("AutomationIntent", "intent-1")], "its owner, of its owner's kind"
    assert by_worker == [("AutomationIntent", "intent-1")], "the intents of its namespace"
    assert by_stray == [], "no owner, and not the worker"
