"""Kafka users as ``kafka_access`` renders them: a SCRAM credential and exactly the
principal's ACLs, through the Admin API (the operator's user may alter both)."""

from __future__ import annotations

import asyncio
import hashlib

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
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from aios.operator.reconcile.kafka_access import Grant, KafkaPrincipal

TIMEOUT = 30.0
ITERATIONS = 8192
RESOURCES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional-id": ResourceType.TRANSACTIONAL_ID,
}
OPERATIONS = {
    "read": AclOperation.READ,
    "write": AclOperation.WRITE,
    "describe": AclOperation.DESCRIBE,
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


def every_binding_of(user: str) -> AclBindingFilter:
    """None matches any name and host (the library's annotations say str)."""
    return AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        f"User:{user}",
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


class KafkaUsers:
    """Makes each principal exist as rendered. What this process made is remembered (user →
    digest of password and grants), so a steady reconcile costs no Admin call; after a
    restart each user is made once more (its password cannot be read back to compare)."""

    def __init__(self, admin: AdminClient, mechanism: str) -> None:
        self._admin = admin
        self._mechanism = ScramMechanism[mechanism.upper().replace("-", "_")]
        self._made: dict[str, str] = {}

    async def ensure(self, principal: KafkaPrincipal, password: str) -> None:
        made = hashlib.sha256(f"{password}\n{principal.digest()}".encode()).hexdigest()
        if self._made.get(principal.user) == made:
            return
        await asyncio.to_thread(self._ensure, principal, password)
        self._made[principal.user] = made

    def _ensure(self, principal: KafkaPrincipal, password: str) -> None:
        credential = ScramCredentialInfo(self._mechanism, ITERATIONS)
        upsert = UserScramCredentialUpsertion(principal.user, credential, password.encode())
        for future in self._admin.alter_user_scram_credentials([upsert]).values():
            future.result(TIMEOUT)
        wanted = {binding(principal.user, g) for g in principal.grants}
        found = self._admin.describe_acls(every_binding_of(principal.user)).result(TIMEOUT)
        have = set(found or [])
        if missing := wanted - have:
            for future in self._admin.create_acls(list(missing)).values():
                future.result(TIMEOUT)
        if extra := have - wanted:
            self._delete([exactly(b) for b in extra])

    async def remove(self, user: str) -> None:
        """The workload is gone: its ACLs and its credential."""
        self._made.pop(user, None)
        await asyncio.to_thread(self._remove, user)

    def _remove(self, user: str) -> None:
        self._delete([every_binding_of(user)])
        deletion = UserScramCredentialDeletion(user, self._mechanism)
        for future in self._admin.alter_user_scram_credentials([deletion]).values():
            try:
                future.result(TIMEOUT)
            except Exception as error:  # already gone: nothing to remove
                if "RESOURCE_NOT_FOUND" not in str(error):
                    raise

    def _delete(self, filters: list[AclBindingFilter]) -> None:
        for future in self._admin.delete_acls(filters).values():
            future.result(TIMEOUT)
