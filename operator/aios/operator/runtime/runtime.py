"""What the operator process holds once: its settings, its clients, which replica leads, and
each kind's controller (whose stores other kinds read)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

from confluent_kafka.admin import AdminClient
from kubernetes import client
from temporalio.client import Client

from aios.api import PLURALS, AutomationIntent
from aios.connectors import audit, kafka, opa, temporal
from aios.operator.reconcile.automation_intent import action_topics
from aios.operator.reconcile.children import controller_of
from aios.operator.reconcile.kafka_access import (
    KafkaPrincipal,
    iterations,
    password,
    worker_principal,
)
from aios.operator.reconcile.worker import is_worker
from aios.operator.runtime.children import (
    ADD_ON_DEFINITIONS,
    DEFINITIONS,
    HELD_KINDS,
    HELD_SELECTOR,
    Children,
    Held,
)
from aios.operator.runtime.kafka_users import KafkaUsers
from aios.operator.runtime.leadership import Leadership
from aios.operator.runtime.queue import DEFAULT_WORKERS
from aios.operator.runtime.store import Store, namespace_of
from aios.operator.runtime.watching import Watching
from aios.operator.settings import OperatorSettings, WebhookSettings

if TYPE_CHECKING:
    from aios.operator.runtime.controller import Controller


@dataclass
class Runtime:
    settings: OperatorSettings
    webhook: WebhookSettings
    api: client.ApiClient
    leadership: Leadership | None = None
    workers: int = DEFAULT_WORKERS
    """Concurrent reconciles per kind."""
    watching: Watching | None = None
    """The watches feeding the controllers and the rollouts' mirror (``--namespace``)."""
    controllers: dict[str, Controller] = field(default_factory=dict)
    """By plural."""
    rollouts: Store = field(default_factory=Store)
    """The ModelRollouts, as the watch has them: what the rollout workflows published,
    which the ModelDeployments' status mirrors."""
    opa_modules: opa.LoadedModules = field(default_factory=opa.LoadedModules)
    """The Rego modules OPA was seen holding: Policies' loads read each back once."""
    children: Children = field(init=False)
    """Server-side apply and prune of what the kinds render, through ``api``; the state of
    the workloads among them, from ``watching``."""
    _kafka_admin: AdminClient | None = None
    _kafka_users: KafkaUsers | None = None
    _temporal: Client | None = None
    _temporal_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.children = Children(self.api, site=self.settings.site)
        if self.watching is not None:
            for api_version, kind, plural in HELD_KINDS:
                held = Held(self.watching.watches_per_kind, self.workload_changed)
                self.children.hold(api_version, kind, held)
                self.watching.feed(plural, held, api_version, HELD_SELECTOR)
            api_version, _, plural = DEFINITIONS
            for definition in ADD_ON_DEFINITIONS:
                held = Held(watches=1)
                self.children.hold_definition(definition, held)
                self.watching.feed(
                    plural,
                    held,
                    api_version,
                    field_selector=f"metadata.name={definition}",
                    cluster_scoped=True,
                )

    @property
    def kafka_admin(self) -> AdminClient:
        """One Kafka admin client for the process: the intents' status refresh asks every
        intent's lag every few seconds, and a client per call costs a connection and a
        metadata fetch."""
        if self._kafka_admin is None:
            self._kafka_admin = kafka.admin(self.settings.kafka_bootstrap)
        return self._kafka_admin

    @property
    def kafka_users(self) -> KafkaUsers:
        if self._kafka_users is None:
            mechanism = json.loads(self.settings.kafka_config)["sasl.mechanism"]
            rounds = iterations(self.settings.kafka_principal_key)
            self._kafka_users = KafkaUsers(self.kafka_admin, mechanism, rounds)
        return self._kafka_users

    async def kafka_user(self, principal: KafkaPrincipal) -> None:
        """Make a workload's Kafka user and ACLs exist as rendered, before its pods start
        (when the site gives workloads their own users)."""
        if self.settings.kafka_principals:
            secret = password(self.settings.kafka_principal_key, principal)
            await self.kafka_users.ensure(principal, secret)

    def worker_principal(self, namespace: str) -> KafkaPrincipal:
        """The Kafka user of the namespace's worker: what the namespace's intents, as the
        watch has them, let it write."""
        intents = self.store(AutomationIntent.crd.plural).in_namespace(namespace)
        written = chain.from_iterable(action_topics(i) for i in intents)
        return worker_principal(namespace, written, audit.EVENTS_TOPIC)

    async def remove_kafka_user(self, principal: KafkaPrincipal) -> None:
        """The workload is gone: so are its Kafka user and ACLs."""
        if self.settings.kafka_principals:
            await self.kafka_users.remove(principal.user)

    async def temporal(self) -> Client:
        """One Temporal client for the process, connected at first use (lazily: a Temporal
        outage fails the calls that need it, not the operator)."""
        async with self._temporal_lock:
            if self._temporal is None:
                self._temporal = await temporal.connect(
                    self.settings.temporal_address, self.settings.temporal_namespace, lazy=True
                )
        return self._temporal

    def workload_changed(self, workload: Mapping[str, Any]) -> None:
        """A held workload's status changed: the objects that report it may be reconciled
        at once: its controlling owner, or for the namespace's worker (it has none) the
        namespace's intents."""
        owner = controller_of(workload)
        if owner is not None:
            kind, uid = owner
            controller = self.controllers.get(PLURALS.get(kind, ""))
            if controller is not None:
                controller.child_changed(uid)
        elif is_worker(workload) and AutomationIntent.crd.plural in self.controllers:
            intents = self.controllers[AutomationIntent.crd.plural]
            for intent in intents.store.in_namespace(namespace_of(workload)):
                intents.child_changed(intent["metadata"]["uid"])

    def store(self, plural: str) -> Store:
        """Another kind's objects as the watch has them (e.g. the EdgeGateways an intent
        selects): no LIST per reconcile."""
        return self.controllers[plural].store
