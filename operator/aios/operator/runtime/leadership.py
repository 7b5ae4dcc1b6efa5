"""Which replica acts: the holder of a coordination.k8s.io Lease (client-go's leader
election, as kube-controller-manager does it).

kopf's peering lets a replica with a higher priority preempt the one acting, and for a
moment both act. A Lease is held until its holder stops renewing it or gives it up, so a
standby acts only once the leader is gone, and a leader that cannot renew in time stops
acting before anyone else may start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import urllib3
from kubernetes import client

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTerms:
    """client-go's defaults: a standby takes a Lease not renewed for ``duration`` seconds;
    the leader stops acting when it could not renew for ``renew_deadline`` (shorter, so it
    has stopped before anyone may start)."""

    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass
class Leadership:
    """Tries to hold the Lease ``namespace/name`` as ``identity``; ``held()`` says whether
    this replica may act now."""

    api: client.CoordinationV1Api
    namespace: str
    name: str
    identity: str
    terms: LeaseTerms = field(default_factory=LeaseTerms)
    acquired: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    _valid_until: float = 0.0
    _observed: tuple[str | None, datetime | None] = (None, None)
    _observed_at: float = 0.0

    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    async def run(self) -> None:
        """Acquire, then renew until the renewal fails past the deadline (``lost`` is set:
        the process should stop and come back as a standby)."""
        while True:
            attempt = time.monotonic()
            try:
                holding = await asyncio.to_thread(self._try_once)
            except client.ApiException as error:
                LOG.warning("lease %s/%s: %s", self.namespace, self.name, error.reason)
                holding = False
            except (OSError, urllib3.exceptions.HTTPError) as error:  # unreachable, or its
                # connection pool gave up retrying (an API server restarting refuses a while)
                LOG.warning("lease %s/%s: %s", self.namespace, self.name, error)
                holding = False
            if holding:
                self._valid_until = attempt + self.terms.renew_deadline
                if not self.acquired.is_set():
                    LOG.info("acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
                    self.acquired.set()
            elif self.acquired.is_set() and not self.held():
                LOG.error("lost lease %s/%s: stopping", self.namespace, self.name)
                self.lost.set()
                return
            await asyncio.sleep(self.terms.retry_period)

    async def release(self) -> None:
        """Give the Lease up (on shutdown), so a standby takes over at once."""
        if not self.held():
            return
        self._valid_until = 0.0
        try:
            await asyncio.to_thread(self._give_up)
        except (client.ApiException, OSError, urllib3.exceptions.HTTPError) as error:
            LOG.warning("could not release lease %s/%s: %s", self.namespace, self.name, error)

    def _try_once(self) -> bool:
        now = datetime.now(UTC)
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except client.ApiException as error:
            if error.status != 404:
                raise
            return self._create(now)
        spec = lease.spec or client.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time)
        if record != self._observed:  # expiry is judged by our clock, not the holder's
            self._observed, self._observed_at = record, time.monotonic()
        duration = spec.lease_duration_seconds or self.terms.duration
        expired = time.monotonic() > self._observed_at + duration
        if spec.holder_identity and spec.holder_identity != self.identity and not expired:
            return False
        if spec.holder_identity != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = int(self.terms.duration)
        lease.spec = spec
        try:  # conditional on the resourceVersion read: of two replicas, one wins
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except client.ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def _create(self, now: datetime) -> bool:
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=int(self.terms.duration),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self.api.create_namespaced_lease(self.namespace, lease)
        except client.ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def _give_up(self) -> None:
        lease = self.api.read_namespaced_lease(self.name, self.namespace)
        if lease.spec is None or lease.spec.holder_identity != self.identity:
            return
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        self.api.replace_namespaced_lease(self.name, self.namespace, lease)
