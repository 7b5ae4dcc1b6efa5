"""The operator's write path and leader election against the real API server.

A test kind of its own (``Probe``, a CRD generated the way aios's are) keeps the session's
operator out of the way: only the runtime under test acts on these objects.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import kopf
import pytest
from kubernetes import client, config, watch

from aios.api import GROUP, VERSION
from aios.api.base import AGE, ApiModel, CrdInfo, Resource, ResourceStatus
from aios.api.crd import crd_for
from aios.connectors.informer import Informer
from aios.operator.reconcile.bookkeeping import without_bookkeeping
from aios.operator.reconcile.conditions import ConditionUpdate
from aios.operator.runtime.controller import Context, Controller, KindSpec
from aios.operator.runtime.leadership import Leadership, LeaseTerms
from aios.operator.runtime.store import Store
from aios.operator.runtime.writer import Writer
from aios.operator.settings import OperatorSettings
from aios.stack.site import Site


class ProbeSpec(ApiModel):
    value: int = 0


class ProbeStatus(ResourceStatus):
    note: str | None = None
    summary: str | None = None


class Probe(Resource[ProbeSpec, ProbeStatus]):
    """A kind only these tests act on."""

    crd: ClassVar[CrdInfo] = CrdInfo("Probe", "probes", (), (AGE,))


PLURAL = Probe.crd.plural


@pytest.fixture(scope="module")
def api(site: Site) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=site.endpoints.kubeconfig)
    definition = crd_for(Probe)
    definition["spec"]["names"]["categories"] = []  # not one of `kubectl get aios`
    extensions = client.ApiextensionsV1Api(api_client)
    extensions.create_custom_resource_definition(definition)
    site.wait_established([Probe.crd.name])
    yield api_client
    extensions.delete_custom_resource_definition(Probe.crd.name)


def create_probe(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Probe", "metadata": {"name": name}}
    created: Any = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, {**body, "spec": {"value": 1}}
    )
    return dict(created)


def writes_since(
    api: client.ApiClient, since: Mapping[str, Any], until: Mapping[str, Any]
) -> list[str]:
    """The resourceVersions of every change of an object after ``since`` up to ``until``, as
    the API server replays them to a watch that starts at ``since``."""
    meta = since["metadata"]
    stream = watch.Watch().stream(
        client.CustomObjectsApi(api).list_namespaced_custom_object,
        GROUP,
        VERSION,
        meta["namespace"],
        PLURAL,
        field_selector=f"metadata.name={meta['name']}",
        resource_version=meta["resourceVersion"],
        timeout_seconds=60,
    )
    versions = []
    for event in stream:
        versions.append(event["object"]["metadata"]["resourceVersion"])
        if versions[-1] == until["metadata"]["resourceVersion"]:
            return versions
    raise AssertionError(f"the watch ended before {until['metadata']['resourceVersion']}")


def test_a_status_computed_from_a_stale_copy_never_overwrites_a_newer_one(
    api: client.ApiClient, namespace: str
) -> None:
    stale = create_probe(api, namespace, "stale")
    store = Store()
    store.observe(stale)  # what the operator last saw
    objects = client.CustomObjectsApi(api)
    objects.patch_namespaced_custom_object_status(  # someone else writes meanwhile
        GROUP, VERSION, namespace, PLURAL, "stale", {"status": {"note": "newer"}}
    )
    seen: list[str | None] = []

    def summary(current: Mapping[str, Any]) -> dict[str, Any]:
        note = (current.get("status") or {}).get("note")
        seen.append(note)
        return {"status": {"summary": f"computed from {note}"}}

    writer = Writer(api, PLURAL, store)
    written = asyncio.run(writer.patch(stale["metadata"]["uid"], summary, subresource="status"))
    stored: Any = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "stale")
    assert seen == [None, "newer"], "refused on the stale copy, computed again on the new one"
    assert stored["status"] == {"note": "newer", "summary": "computed from newer"}
    assert written is not None
    assert store.get(stale["metadata"]["uid"]) == without_bookkeeping(written), (
        "the store holds what was written"
    )


def test_a_tick_racing_an_event_reconciles_and_writes_once(
    api: client.ApiClient, namespace: str
) -> None:
    created = create_probe(api, namespace, "racing")
    reconciles: list[int] = []

    async def reconcile(probe: Probe, ctx: Context) -> list[ConditionUpdate]:
        reconciles.append(probe.spec.value)
        await asyncio.sleep(0.05)  # long enough for the tick to arrive while it runs
        return [ConditionUpdate("Ready", "True", "Probed")]

    spec = KindSpec(Probe, reconcile, retry_interval=3600)
    settings = OperatorSettings(kafka_bootstrap="", temporal_address="")

    async def scenario() -> None:
        controller = Controller(spec, api, kopf.Memo(), settings)
        controller.queue.start()
        controller.observe(None, created)  # listed: a generation not yet observed
        controller.tick()
        await asyncio.sleep(0.01)
        controller.tick()  # again while the reconcile runs
        await asyncio.wait_for(controller.queue.drained(), 30)
        controller.tick()  # converged: a tick finds nothing to do
        await asyncio.wait_for(controller.queue.drained(), 30)
        await controller.stop()

    asyncio.run(scenario())
    objects = client.CustomObjectsApi(api)
    stored: Any = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "racing")
    assert reconciles == [1]
    assert stored["status"]["observedGeneration"] == 1
    writes = writes_since(api, created, stored)
    assert len(writes) == 1, f"one status write, not {writes}"


def test_a_standby_acts_only_once_the_leader_is_gone(api: client.ApiClient, namespace: str) -> None:
    terms = LeaseTerms(duration=3, renew_deadline=2, retry_period=0.2)
    coordination = client.CoordinationV1Api(api)
    overlaps: list[float] = []

    async def scenario() -> None:
        first = Leadership(coordination, namespace, "shard", "first", terms)
        second = Leadership(coordination, namespace, "shard", "second", terms)
        running = asyncio.create_task(first.run())
        await asyncio.wait_for(first.acquired.wait(), 30)
        standby = asyncio.create_task(second.run())

        async def watch_overlap() -> None:
            while True:
                if first.held() and second.held():
                    overlaps.append(time.monotonic())
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch_overlap())
        # The standby tries all along while the leader renews twice: it never gets the lead.
        renewals = set()
        while len(renewals) < 3:
            lease = await asyncio.to_thread(coordination.read_namespaced_lease, "shard", namespace)
            renewals.add(lease.spec.renew_time)
            await asyncio.sleep(0.1)
        assert not second.acquired.is_set() and lease.spec.holder_identity == "first"
        running.cancel()  # the leader stops renewing (a crash: it does not release)
        await asyncio.wait_for(second.acquired.wait(), 30)
        assert not first.held(), "the old leader's own deadline passed before"
        # A leader that shuts down gives the Lease up at once.
        third = Leadership(coordination, namespace, "shard", "third", terms)
        waiting = asyncio.create_task(third.run())
        standby.cancel()
        await second.release()
        await asyncio.wait_for(third.acquired.wait(), 30)
        lease = await asyncio.to_thread(coordination.read_namespaced_lease, "shard", namespace)
        assert lease.spec.holder_identity == "third" and lease.spec.lease_transitions == 2
        for task in (waiting, watcher):
            task.cancel()

    asyncio.run(scenario())
    assert overlaps == [], "never two leaders at once"


def test_an_informer_lists_then_follows_across_watches_and_a_relist_names_what_remains(
    api: client.ApiClient, namespace: str
) -> None:
    events: queue.Queue[tuple[str | None, str]] = queue.Queue()
    relists: list[set[str]] = []

    def on_event(event_type: str | None, raw: dict[str, Any]) -> None:
        events.put((event_type, raw["metadata"]["name"]))

    def follow(watch_seconds: int) -> Informer:
        informer = Informer(
            api, GROUP, VERSION, PLURAL, namespace, on_event, lambda _, uids: relists.append(uids),
            watch_seconds=watch_seconds,
        )  # fmt: skip
        informer.start()
        assert informer.synced.wait(30)
        return informer

    def next_event() -> tuple[str | None, str]:
        return events.get(timeout=30)

    first = create_probe(api, namespace, "first")
    informer = follow(watch_seconds=1)  # the API server ends each watch after a second
    assert next_event() == (None, "first") and relists == [{first["metadata"]["uid"]}]
    objects = client.CustomObjectsApi(api)
    try:
        for value in range(2, 5):  # each change in a later watch than the last
            watched = informer.watches
            deadline = time.monotonic() + 30
            while informer.watches == watched and time.monotonic() < deadline:
                time.sleep(0.05)
            assert informer.watches > watched, "the API server ends a watch after a second"
            objects.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "first", {"spec": {"value": value}}
            )
            assert next_event() == ("MODIFIED", "first")
        second = create_probe(api, namespace, "second")
        assert next_event() == ("ADDED", "second")
        objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "first")
        assert next_event() == ("DELETED", "first")
    finally:
        informer.stop()
    assert len(relists) == 1, "resumed from the last version, never listed again"
    assert events.empty(), "each change once"

    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "second")
    create_probe(api, namespace, "third")  # both while no informer ran
    informer = follow(watch_seconds=300)
    informer.stop()
    assert not informer.running, "a stop ends a watch in flight, not its five minutes"
    assert next_event() == (None, "third")
    assert second["metadata"]["uid"] not in relists[-1], "the relist lacks what went meanwhile"


def test_an_informer_follows_a_core_kind_and_only_what_its_selector_matches(
    api: client.ApiClient, namespace: str
) -> None:
    """The core group lives under /api/v1, not /apis/<group>/<version>: the operator holds
    its own Services this way (selected by label, so not every Service of the cluster)."""
    events: queue.Queue[tuple[str | None, str, str]] = queue.Queue()
    selected = {"aios.test/held": "yes"}
    core = client.CoreV1Api(api)

    def config_map(name: str, labels: dict[str, str] | None = None) -> None:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})

    config_map("listed", selected)
    config_map("left-out")
    informer = Informer(
        api, "", "v1", "configmaps", namespace,
        lambda event_type, raw: events.put((event_type, raw["kind"], raw["metadata"]["name"])),
        lambda _, uids: None,
        label_selector="aios.test/held=yes",
    )  # fmt: skip
    informer.start()
    try:
        assert informer.synced.wait(30)
        assert events.get(timeout=30) == (None, "ConfigMap", "listed")
        config_map("also-left-out")
        config_map("watched", selected)
        assert events.get(timeout=30) == ("ADDED", "ConfigMap", "watched")
        core.delete_namespaced_config_map("listed", namespace)
        assert events.get(timeout=30) == ("DELETED", "ConfigMap", "listed")
    finally:
        informer.stop()
    assert events.empty(), "nothing the selector leaves out (nor the namespace's CA bundle)"
