"""The audit record format: canonical JSON, the SHA-256 chain, and ``verify``."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
KINDS = (
    "reconcile",
    "admission",
    "approval",
    "manual-action",
    "promotion",
    "rollback",
    "edge-config",
    "action-step",
)
MALFORMED = "malformed-event"
DEDUP_WINDOW = 10_000


class AuditUnavailable(Exception):
    """The audit event could not be stored; whoever depends on it being recorded stops."""


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def canonical(document: Mapping[str, Any]) -> str:
    """The one serialisation that is hashed and stored."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(record: Mapping[str, Any]) -> str:
    """SHA-256 over every field of ``record`` except ``hash``."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def event(
    kind: str,
    subject: str,
    details: Mapping[str, Any],
    actor: str | None = None,
    policy_decision_id: str | None = None,
    trace_id: str | None = None,
    event_id: str | None = None,
    site: str | None = None,
) -> dict[str, Any]:
    """An unchained audit event as writers produce it."""
    if kind not in KINDS:
        raise ValueError(f"unknown audit kind {kind!r}; one of {', '.join(KINDS)}")
    document = {
        "eventId": event_id or str(uuid.uuid4()),
        "time": now_rfc3339(),
        "kind": kind,
        "subject": subject,
        "actor": actor,
        "details": dict(details),
        "policyDecisionId": policy_decision_id,
        "traceId": trace_id,
    }
    if site is not None:
        document["site"] = site
    return document


def chain(
    event_: Mapping[str, Any], seq: int, prev_hash: str, source: Mapping[str, Any]
) -> dict[str, Any]:
    """The record that appends ``event_`` after the record whose hash is ``prev_hash``."""
    record = {
        **event_,
        "seq": seq,
        "prevHash": prev_hash,
        "appendedAt": now_rfc3339(),
        "source": dict(source),
    }
    record["hash"] = digest(record)
    return record


def malformed(raw: bytes, reason: str) -> dict[str, Any]:
    """An event that could not be read, kept as evidence rather than dropped."""
    return {
        "eventId": f"malformed-{hashlib.sha256(raw).hexdigest()[:16]}",
        "time": now_rfc3339(),
        "kind": MALFORMED,
        "subject": "audit event",
        "actor": None,
        "details": {"reason": reason, "raw": base64.b64encode(raw).decode()},
        "policyDecisionId": None,
        "traceId": None,
    }


@dataclass(frozen=True)
class AuditRecord:
    """One chained record, with the exact text it was stored as."""

    seq: int
    event_id: str
    kind: str
    subject: str
    time: str
    actor: str | None
    details: dict[str, Any]
    policy_decision_id: str | None
    trace_id: str | None
    prev_hash: str
    hash: str
    raw: str
    document: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, raw: str) -> AuditRecord:
        """Raises ValueError when ``raw`` is not a record."""
        try:
            document = json.loads(raw)
            return cls(
                seq=int(document["seq"]),
                event_id=str(document["eventId"]),
                kind=str(document["kind"]),
                subject=str(document["subject"]),
                time=str(document["time"]),
                actor=document.get("actor"),
                details=dict(document.get("details") or {}),
                policy_decision_id=document.get("policyDecisionId"),
                trace_id=document.get("traceId"),
                prev_hash=str(document["prevHash"]),
                hash=str(document["hash"]),
                raw=raw,
                document=document,
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not an audit record: {error}") from error


@dataclass(frozen=True)
class VerifyResult:
    """``first_bad`` is the position (0-based) of the first record that fails."""

    ok: bool
    first_bad: int | None
    reason: str
    count: int
    records: tuple[AuditRecord, ...] = field(default=(), repr=False, compare=False)
    """The records as parsed, when the chain is intact: what is checked next (a signed
    checkpoint) need not parse them again."""


def verify(records: Sequence[AuditRecord | str]) -> VerifyResult:
    """Check content hashes and links; name the first changed, removed, inserted or
    reordered record."""
    seen: dict[str, int] = {}  # hash -> position, to tell an insertion from a gap
    previous: AuditRecord | None = None
    parsed: list[AuditRecord] = []
    for position, item in enumerate(records):
        try:
            record = item if isinstance(item, AuditRecord) else AuditRecord.parse(item)
        except ValueError as error:
            return VerifyResult(False, position, f"record #{position} is unreadable: {error}", 0)
        label = f"record #{position} (seq {record.seq}, event {record.event_id})"
        document = record.document
        if canonical(document) != record.raw or digest(document) != record.hash:
            return VerifyResult(False, position, f"{label} was changed: its hash does not match", 0)
        expected_prev = previous.hash if previous else GENESIS
        expected_seq = previous.seq + 1 if previous else 0
        if record.prev_hash != expected_prev or record.seq != expected_seq:
            if record.prev_hash in seen and seen[record.prev_hash] < position - 1:
                inserted = seen[record.prev_hash] + 1
                return VerifyResult(
                    False,
                    inserted,
                    f"record #{inserted} was inserted: {label} follows "
                    f"record #{seen[record.prev_hash]}",
                    0,
                )
            return VerifyResult(
                False,
                position,
                f"{label} does not follow the record before it (expected seq {expected_seq}): "
                "a record was removed or reordered",
                0,
            )
        seen[record.hash] = position
        previous = record
        parsed.append(record)
    return VerifyResult(
        True, None, f"{len(records)} records, chain intact", len(records), tuple(parsed)
    )
