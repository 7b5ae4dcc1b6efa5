"""Kafka users as ``kafka_access`` renders them: a SCRAM credential and exactly the
principal's ACLs, through the Admin API (the operator's user may alter both).

The broker's users and ACLs are listed once per process; after that this process's own
changes keep the copy current, so making a user costs one credential upsert (only when it
is missing or was set with another key) and one ACL create, and a city's ten thousand
gateways never make the broker scan every ACL once per gateway."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from concurrent.futures import Future

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from aios.operator.reconcile.kafka_access import Grant, KafkaPrincipal

TIMEOUT = 30.0
RESOURCES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional-id": ResourceType.TRANSACTIONAL_ID,
}
OPERATIONS = {
    "read": AclOperation.READ,
    "write": AclOperation.WRITE,
    "describe-configs": AclOperation.DESCRIBE_CONFIGS,
}


def binding(user: str, grant: Grant) -> AclBinding:
    pattern = ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL
    return AclBinding(
        RESOURCES[grant.resource],
        grant.name,
        pattern,
        f"User:{user}",
        "*",
        OPERATIONS[grant.operation],
        AclPermissionType.ALLOW,
    )


def every_binding(principal: str | None = None) -> AclBindingFilter:
    """Of one principal (``User:…``), or of all; None matches any name and host (the
    library's annotations say str)."""
    return AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        principal,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )


def exactly(found: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        found.restype,
        found.name,
        found.resource_pattern_type,
        found.principal,
        found.host,
        found.operation,
        found.permission_type,
    )


Request = tuple[KafkaPrincipal, str]
"""A principal and its password."""


class KafkaUsers:
    """Makes each principal exist as rendered, and remembers what it made (user → digest
    of password and grants), so a steady reconcile costs no Admin call at all.

    Reconciles that need users while a batch is with the broker wait together for the
    next one: a thousand new gateways cost a few credential upserts and ACL creates of
    many entries each, not a thousand controller commits of each kind."""

    def __init__(self, admin: AdminClient, mechanism: str, iterations: int) -> None:
        self._admin = admin
        self._mechanism = ScramMechanism[mechanism.upper().replace("-", "_")]
        self._iterations = iterations
        self._made: dict[str, str] = {}
        self._lock = threading.Lock()
        self._listed = False
        self._credentials: dict[str, int] = {}
        """Iterations of each user's credential of our mechanism, as the broker has it."""
        self._acls: dict[str, set[AclBinding]] = defaultdict(set)
        """Bindings by principal (``User:…``), as the broker has them."""
        self._pending: list[tuple[Request, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def ensure(self, principal: KafkaPrincipal, password: str) -> None:
        made = f"{password}\n{principal.digest()}"
        if self._made.get(principal.user) == made:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((principal, password), done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await done
        self._made[principal.user] = made

    async def remove(self, user: str) -> None:
        """The workload is gone: its ACLs and its credential."""
        self._made.pop(user, None)
        await asyncio.to_thread(self._remove, user)

    async def _flush(self) -> None:
        """Send what is pending, as one batch, until nothing is."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._apply, [request for request, _ in batch])
            except Exception as error:  # each waiter's reconcile fails and is retried
                for _, done in batch:
                    done.set_exception(error)
            else:
                for _, done in batch:
                    done.set_result(None)

    def _list(self) -> None:
        """The broker's users and ACLs, once per process."""
        with self._lock:
            if self._listed:
                return
            every_user = self._admin.describe_user_scram_credentials()  # one future: all
            assert isinstance(every_user, Future)
            users = every_user.result(TIMEOUT)
            for user, description in (users or {}).items():
                for info in description.scram_credential_infos:
                    if info.mechanism == self._mechanism:
                        self._credentials[user] = info.iterations
            for found in self._admin.describe_acls(every_binding()).result(TIMEOUT) or []:
                self._acls[found.principal].add(found)
            self._listed = True

    def _apply(self, batch: list[Request]) -> None:
        """One credential upsert for the users that lack one set with our key, one ACL
        create and one delete for the whole batch (a user twice: its latest grants)."""
        self._list()
        latest = {principal.user: (principal, password) for principal, password in batch}
        credential = ScramCredentialInfo(self._mechanism, self._iterations)
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(user, credential, password.encode())
            for user, (_, password) in latest.items()
            if self._credentials.get(user) != self._iterations  # missing, or another key's
        ]
        if upserts:
            for future in self._admin.alter_user_scram_credentials(upserts).values():
                future.result(TIMEOUT)
        wanted = {
            f"User:{user}": {binding(user, g) for g in principal.grants}
            for user, (principal, _) in latest.items()
        }
        missing = [b for name, bindings in wanted.items() for b in bindings - self._acls[name]]
        extra = [b for name, bindings in wanted.items() for b in self._acls[name] - bindings]
        if missing:
            for future in self._admin.create_acls(missing).values():
                future.result(TIMEOUT)
        if extra:
            self._delete([exactly(b) for b in extra])
        with self._lock:
            self._credentials.update({user: self._iterations for user in latest})
            self._acls.update(wanted)

    def _remove(self, user: str) -> None:
        self._list()
        self._delete([every_binding(f"User:{user}")])
        with self._lock:
            self._acls.pop(f"User:{user}", None)
            known = self._credentials.pop(user, None)
        if known is None:
            return
        deletion = UserScramCredentialDeletion(user, self._mechanism)
        for future in self._admin.alter_user_scram_credentials([deletion]).values():
            try:
                future.result(TIMEOUT)
            except KafkaException as error:  # removed meanwhile: nothing to remove
                if "RESOURCE_NOT_FOUND" not in str(error):
                    raise

    def _delete(self, filters: list[AclBindingFilter]) -> None:
        for future in self._admin.delete_acls(filters).values():
            future.result(TIMEOUT)
