"""Signed checkpoints of the audit chain, kept outside Kafka: what catches a truncated or
re-chained log.

The hash chain (``aios.connectors.audit``) names any record changed, removed or inserted
*inside* the log, but someone who deletes its newest records, or replaces the whole topic
with a copy chained afresh, leaves a chain that verifies. So the appender, the chain's one
writer, signs its head (log, seq, hash, time) with an Ed25519 key only it reads (a Secret
mounted into the operator), at most every ``interval`` seconds while the head moves and
when it stops, and stores the signed checkpoint in a ConfigMap, one key per log topic.

``check`` holds a log against a checkpoint: the signature must verify with a trusted key,
the log must reach the checkpoint's seq (else records are missing at the tail) and the
record at that seq must have the signed hash (else the log was rewritten). Records after
the checkpoint are the chain's to vouch for.

Rotation: put a new key in the file (the Secret); the next checkpoint is signed with it,
and carries its key id. Verifiers pin the public keys they trust (old and new while a
checkpoint of the old one may still be the newest).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aios.connectors.audit import AuditRecord, canonical, now_rfc3339

CONFIGMAP = "aios-audit-checkpoints"
SIGNING_KEY_ENV = "AIOS_AUDIT_SIGNING_KEY"
INTERVAL_SECONDS = 60.0

logger = logging.getLogger(__name__)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name of a key: the start of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"ed25519:{hashlib.sha256(raw).hexdigest()[:16]}"


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """Raises ValueError for anything but an Ed25519 public key (PEM)."""
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Raises ValueError for anything but an unencrypted Ed25519 private key (PEM)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head as signed: the log holds records 0..seq, the last one hashing to
    ``hash``, at ``time``."""

    log: str
    seq: int
    hash: str
    time: str

    def payload(self) -> bytes:
        """The bytes signed: the canonical JSON of the four fields."""
        return canonical(
            {"log": self.log, "seq": self.seq, "hash": self.hash, "time": self.time}
        ).encode()


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    key_id: str
    public_key: str
    """The signer's public key (PEM), for a verifier who pins none."""
    signature: str  # base64

    def to_json(self) -> str:
        c = self.checkpoint
        return canonical(
            {
                "log": c.log,
                "seq": c.seq,
                "hash": c.hash,
                "time": c.time,
                "keyId": self.key_id,
                "publicKey": self.public_key,
                "signature": self.signature,
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> SignedCheckpoint:
        """Raises ValueError when ``raw`` is not a signed checkpoint."""
        try:
            document = json.loads(raw)
            return cls(
                Checkpoint(
                    str(document["log"]),
                    int(document["seq"]),
                    str(document["hash"]),
                    str(document["time"]),
                ),
                key_id=str(document["keyId"]),
                public_key=str(document["publicKey"]),
                signature=str(document["signature"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a signed audit checkpoint: {error}") from error


class FileSigner:
    """Signs with the key in ``path``, read again at each signature: a rotated Secret
    takes effect at the next checkpoint, without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def sign(self, checkpoint: Checkpoint) -> SignedCheckpoint:
        private_key = load_private_key(self.path)
        public_key = private_key.public_key()
        return SignedCheckpoint(
            checkpoint,
            key_id=key_id(public_key),
            public_key=public_pem(public_key),
            signature=base64.b64encode(private_key.sign(checkpoint.payload())).decode(),
        )


class ConfigMapStore:
    """Checkpoints in one ConfigMap, one key per log topic (a topic name is a valid key)."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str = CONFIGMAP) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name

    def write(self, signed: SignedCheckpoint) -> None:
        data = {signed.checkpoint.log: signed.to_json()}
        try:
            self._core.patch_namespaced_config_map(self.name, self.namespace, {"data": data})
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(
                    name=self.name,
                    labels={"app.kubernetes.io/part-of": "aios"},
                    annotations={
                        "aios.dev/description": "Signed checkpoints of the audit chain, "
                        "one per log topic (aiosctl audit verify)"
                    },
                ),
                data=data,
            )
            try:
                self._core.create_namespaced_config_map(self.namespace, body)
            except ApiException as conflict:  # another log's appender created it meanwhile
                if conflict.status != 409:
                    raise
                self._core.patch_namespaced_config_map(self.name, self.namespace, {"data": data})

    def read(self, log: str) -> SignedCheckpoint | None:
        try:
            config_map = self._core.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        raw = (config_map.data or {}).get(log)
        return SignedCheckpoint.from_json(raw) if raw is not None else None


class Checkpointer:
    """Signs and stores the head when it moved: at most every ``interval`` seconds, and
    on ``flush`` (shutdown). A failed store is retried at the next call; the chain is
    never held up by it."""

    def __init__(
        self,
        log: str,
        signer: FileSigner,
        store: ConfigMapStore,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self.log = log
        self.signer = signer
        self.store = store
        self.interval = interval
        self._signed: tuple[int, str] | None = None
        self._last = float("-inf")

    def observe(self, seq: int, head: str) -> None:
        if time.monotonic() - self._last >= self.interval:
            self.flush(seq, head)

    def flush(self, seq: int, head: str) -> None:
        if seq < 0 or self._signed == (seq, head):
            return
        self._last = time.monotonic()
        try:
            self.store.write(self.signer.sign(Checkpoint(self.log, seq, head, now_rfc3339())))
        except (ApiException, OSError, ValueError) as error:
            logger.warning(f"audit checkpoint of {self.log} at seq {seq} not stored: {error}")
            return
        self._signed = (seq, head)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str
    missing: int = 0
    """Records the checkpoint vouches for that the log no longer has."""


def check(
    records: Sequence[AuditRecord],
    signed: SignedCheckpoint,
    trusted: Mapping[str, Ed25519PublicKey] | None = None,
) -> CheckResult:
    """Hold a log (already chain-verified) against a signed checkpoint. ``trusted`` maps
    key ids to the keys a verifier pinned; ``None`` trusts the key the checkpoint carries."""
    c = signed.checkpoint
    signed_by = f"the checkpoint of seq {c.seq} signed at {c.time} by {signed.key_id}"
    try:
        key = (
            trusted.get(signed.key_id)
            if trusted is not None
            else load_public_key(signed.public_key)
        )
    except ValueError as error:
        return CheckResult(False, f"{signed_by} carries no usable public key: {error}")
    if key is None:
        known = ", ".join(sorted(trusted or {})) or "none"
        return CheckResult(False, f"{signed_by}: not a trusted key (trusted: {known})")
    if key_id(key) != signed.key_id:
        return CheckResult(False, f"{signed_by}: the key id does not match its public key")
    try:
        key.verify(base64.b64decode(signed.signature), c.payload())
    except (InvalidSignature, ValueError):
        return CheckResult(False, f"bad signature: {signed_by} does not verify")
    if len(records) <= c.seq:
        last = records[-1].seq if records else -1
        missing = c.seq - last
        return CheckResult(
            False,
            f"{missing} records missing at the tail: the log ends at seq {last}, "
            f"{signed_by} covers seq {last + 1} to {c.seq}",
            missing,
        )
    if records[c.seq].hash != c.hash:
        return CheckResult(
            False,
            f"the log was rewritten: record seq {c.seq} has hash {records[c.seq].hash[:16]}…, "
            f"{signed_by} says {c.hash[:16]}…",
        )
    return CheckResult(
        True, f"{signed_by} holds ({len(records) - c.seq - 1} records appended since)"
    )
