"""The operator's own watches: an informer per kind and namespace feeds each of aios's
kinds' controller, the ModelRollouts' mirror and the children held (``Held``) on the
event loop.

Not kopf's watches: kopf hands each event through its per-object machinery (a memory and
a worker per object, handler selection, progress, kwargs for each call) to reach a store
the operator keeps anyway; a profile put it at a fifth of the operator's time at 10,000
objects. kopf still serves the admission webhooks and runs start-up and clean-up.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client

from aios.api import GROUP, VERSION
from aios.connectors.informer import Informer

GLOB = set("*?[")


class Feed(Protocol):
    """What an informer's events go to, on the event loop."""

    def observe(self, event_type: str | None, raw: dict[str, Any]) -> None:
        """A watch event (``None``: listed)."""

    def relisted(self, namespace: str | None, uids: set[str]) -> None:
        """Listed again: what the namespace (``None``: every one) held and ``uids`` lacks
        is gone."""


Target = tuple[str | None, Callable[[str], bool] | None]
"""(namespace, accept): one namespace watched, or the cluster with the namespaces taken."""
CLUSTER: Target = (None, None)
"""The whole cluster, every object taken."""


def watch_targets(namespaces: Sequence[str]) -> list[Target]:
    """The watches ``--namespace`` asks for: one per namespace named, or one over the
    cluster (none named, or a glob: matched as kopf matches them)."""
    if not namespaces:
        return [CLUSTER]
    if any(GLOB & set(n) for n in namespaces):
        patterns = list(namespaces)
        return [(None, lambda ns: any(fnmatch.fnmatchcase(ns, p) for p in patterns))]
    return [(n, None) for n in dict.fromkeys(namespaces)]


class OnLoop:
    """A feed's calls, made from an informer's thread, run on the event loop (in order)."""

    def __init__(self, feed: Feed, loop: asyncio.AbstractEventLoop) -> None:
        self.feed, self.loop = feed, loop

    def observe(self, event_type: str | None, raw: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self.feed.observe, event_type, raw)

    def relisted(self, namespace: str | None, uids: set[str]) -> None:
        self.loop.call_soon_threadsafe(self.feed.relisted, namespace, uids)


@dataclass(frozen=True)
class Fed:
    """A kind watched, and where its events go."""

    feed: Feed
    plural: str
    api_version: str
    label_selector: str | None
    field_selector: str | None
    cluster_scoped: bool


class Watching:
    """The informers of every fed kind, started once the operator is set up and stopped
    at its end."""

    def __init__(self, api: client.ApiClient, namespaces: Sequence[str]) -> None:
        self._api = api
        self._targets = watch_targets(namespaces)
        self._fed: list[Fed] = []
        self._informers: list[Informer] = []

    @property
    def watches_per_kind(self) -> int:
        """The informers each kind fed has: one per namespace named, or one over the
        cluster."""
        return len(self._targets)

    def feed(
        self,
        plural: str,
        feed: Feed,
        api_version: str = f"{GROUP}/{VERSION}",
        label_selector: str | None = None,
        field_selector: str | None = None,
        cluster_scoped: bool = False,
    ) -> None:
        """Send the events of the kind (of ``api_version``: a named group's, or ``v1`` for
        the core group; only the objects ``label_selector`` and ``field_selector`` match)
        to ``feed`` (before ``start``). A ``cluster_scoped`` kind has one watch over the
        cluster, whichever namespaces the others watch."""
        self._fed.append(
            Fed(feed, plural, api_version, label_selector, field_selector, cluster_scoped)
        )

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for fed in self._fed:
            threaded = OnLoop(fed.feed, loop)
            group, _, version = fed.api_version.rpartition("/")  # "v1": the core group
            targets = [CLUSTER] if fed.cluster_scoped else self._targets
            for namespace, accept in targets:
                informer = Informer(
                    self._api,
                    group,
                    version,
                    fed.plural,
                    namespace,
                    threaded.observe,
                    threaded.relisted,
                    accept,
                    label_selector=fed.label_selector,
                    field_selector=fed.field_selector,
                )
                informer.start()
                self._informers.append(informer)

    async def stop(self) -> None:
        informers, self._informers = self._informers, []
        await asyncio.gather(*(asyncio.to_thread(i.stop) for i in informers))
