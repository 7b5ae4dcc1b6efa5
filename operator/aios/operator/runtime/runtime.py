"""What the operator process holds once: its settings, its clients, which replica leads, and
each kind's controller (whose stores other kinds read)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka.admin import AdminClient
from kubernetes import client
from temporalio.client import Client

from aios.connectors import kafka
from aios.operator.runtime.children import Children
from aios.operator.runtime.leadership import Leadership
from aios.operator.runtime.queue import DEFAULT_WORKERS
from aios.operator.settings import OperatorSettings, WebhookSettings

if TYPE_CHECKING:
    from aios.operator.runtime.controller import Controller
    from aios.operator.runtime.store import Store


@dataclass
class Runtime:
    settings: OperatorSettings
    webhook: WebhookSettings
    api: client.ApiClient
    leadership: Leadership | None = None
    workers: int = DEFAULT_WORKERS
    """Concurrent reconciles per kind."""
    controllers: dict[str, Controller] = field(default_factory=dict)
    """By plural."""
    children: Children = field(init=False)
    """Server-side apply and prune of what the kinds render, through ``api``."""
    _kafka_admin: AdminClient | None = None
    _temporal: Client | None = None
    _temporal_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.children = Children(self.api, site=self.settings.site)

    @property
    def kafka_admin(self) -> AdminClient:
        """One Kafka admin client for the process: the intents' status refresh asks every
        intent's lag every few seconds, and a client per call costs a connection and a
        metadata fetch."""
        if self._kafka_admin is None:
            self._kafka_admin = kafka.admin(self.settings.kafka_bootstrap)
        return self._kafka_admin

    async def temporal(self) -> Client:
        """One Temporal client for the process, connected at first use (lazily: a Temporal
        outage fails the calls that need it, not the operator)."""
        async with self._temporal_lock:
            if self._temporal is None:
                self._temporal = await Client.connect(
                    self.settings.temporal_address,
                    namespace=self.settings.temporal_namespace,
                    lazy=True,
                )
        return self._temporal

    def store(self, plural: str) -> Store:
        """Another kind's objects as the watch has them (e.g. the EdgeGateways an intent
        selects): no LIST per reconcile."""
        return self.controllers[plural].store
