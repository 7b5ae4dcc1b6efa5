"""The audit trail: append-only, hash-chained records in Kafka (and optionally a file).

A hash chain needs one order, yet the operator, workflow workers and intent runners all
record events at once. So writers never chain: ``AuditWriter.record`` produces an
unchained *event* to ``aios.audit.events`` (one partition, idempotent producer). One
``Appender`` (a thread of the operator; a second one is fenced by Kafka) consumes the
events in order, chains each to the previous record and produces the *records* to
``aios.audit.log`` (one partition, ``retention.ms=-1``, never compacted) in a Kafka
transaction that also commits its consumer offset: every event is chained exactly once,
and a restart resumes from the last chained record. An event that is not valid JSON is
still chained, as a ``malformed-event`` record carrying its bytes and the reason.

A record is the canonical JSON (sorted keys, no spaces, UTF-8) of::

    {"seq": n, "prevHash": hex, "hash": hex, "appendedAt": RFC 3339,
     "eventId", "time", "kind", "subject", "actor", "details", "policyDecisionId",
     "traceId", "site", "source": {"topic", "partition", "offset"}}

(``site``: the site of the process that recorded it, ``$AIOS_SITE``; absent before it was
recorded.)

where ``hash`` is SHA-256 of the canonical JSON of all other fields and ``prevHash`` the
previous record's hash (64 zeros for seq 0). ``verify`` names the first changed, removed,
inserted or reordered record; the appender's signed checkpoints
(``aios.connectors.audit_checkpoint``) catch what a chain cannot: a truncated tail, a log
chained afresh.

Record kinds and their ``details``:

* ``reconcile`` — ``{"generation", "outcome", ...}`` (what the operator decided);
* ``admission`` — ``{"operation", "kind", "allowed", "denials", "warnings", "dryrun",
  "policies", "dryRunRequest"}``;
* ``promotion`` / ``rollback`` — ``{"model": {"name", "version", "canary"}, "approver",
  "reason"}``;
* ``edge-config`` — ``{"gateway", "configGeneration", "filterChain"}``;
* ``action-step`` — ``{"actionId", "step": "authorize|approve|execute|...",
  "intent": {"namespace", "name"}, "action": {"name", "type", "target"},
  "decision": {"rule", "fallback", "fallbackReason",
  "model": {"call", "deployment", "version", "canary"} (``aios.api.events.ModelRef``), "score",
  "confidence", "lineage": {"topic", "partition", "offset", "eventIds", "sensors",
  "gateway", "configGeneration", "filterChain"}},
  "policyDecisionId", "approver", "result": {"status", ...}}`` — what ``aiosctl audit
  trace`` follows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from aios.api.base import SITE_ENV
from aios.connectors import kafka

EVENTS_TOPIC = "aios.audit.events"
LOG_TOPIC = "aios.audit.log"
GENESIS = "0" * 64
KINDS = (
    "reconcile",
    "admission",
    "approval",
    "promotion",
    "rollback",
    "edge-config",
    "action-step",
)
MALFORMED = "malformed-event"
DEDUP_WINDOW = 10_000

logger = logging.getLogger(__name__)


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


# -- Kafka ---------------------------------------------------------------------------------


def events_topic_spec(name: str = EVENTS_TOPIC) -> kafka.TopicSpec:
    """One partition: the order of events is the order of the chain."""
    return kafka.TopicSpec(name, 1, {"cleanup.policy": "delete", "retention.ms": "604800000"})


def log_topic_spec(name: str = LOG_TOPIC) -> kafka.TopicSpec:
    """One partition, kept forever, never compacted: the log is never rewritten."""
    return kafka.TopicSpec(name, 1, {"cleanup.policy": "delete", "retention.ms": "-1"})


class AuditWriter:
    """Records audit events; ``record`` returns once the broker has the event."""

    def __init__(
        self,
        bootstrap: str | None = None,
        topic: str = EVENTS_TOPIC,
        timeout: float = 10.0,
        site: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.site = site if site is not None else os.environ.get(SITE_ENV)
        """Named in every event (the process's ``$AIOS_SITE`` unless given)."""
        self.topic = topic
        self.timeout = timeout
        self._producer: kafka.AcknowledgedProducer | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> kafka.AcknowledgedProducer:
        with self._lock:
            if self._producer is None:
                kafka.ensure_topics(kafka.admin(self.bootstrap), [events_topic_spec(self.topic)])
                self._producer = kafka.AcknowledgedProducer(
                    kafka.producer(
                        self.bootstrap, **{"message.timeout.ms": int(self.timeout * 1000)}
                    )
                )
            return self._producer

    def record(
        self,
        kind: str,
        subject: str,
        details: Mapping[str, Any],
        actor: str | None = None,
        policy_decision_id: str | None = None,
        trace_id: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Store one event durably (acks=all); raises ``AuditUnavailable`` otherwise.
        A repeated ``event_id`` (a retried step) is chained only once."""
        document = event(
            kind, subject, details, actor, policy_decision_id, trace_id, event_id, self.site
        )
        try:
            self._ensure().send(
                self.topic, canonical(document).encode(), document["eventId"].encode(), self.timeout
            )
        except (KafkaException, kafka.NotDelivered) as error:
            raise AuditUnavailable(f"audit event not stored: {error}") from error
        return str(document["eventId"])

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(self.timeout)


def _read(consumer: Consumer, partition: TopicPartition, timeout: float) -> Iterable[Message]:
    """Every committed message of one partition from its assigned offset to the end."""
    consumer.assign([partition])
    deadline = time.monotonic() + timeout
    while True:  # offsets are invalid (negative) until the client knows the partition's leader
        low, high = consumer.get_watermark_offsets(partition, timeout=timeout, cached=False)
        if low >= 0 and high >= 0:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no leader known for {partition.topic} within {timeout}s")
        time.sleep(0.2)
    if high <= low:
        return
    while True:
        message = consumer.poll(timeout)
        if message is None:
            raise TimeoutError(f"no message from {partition.topic} within {timeout}s")
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            raise KafkaException(error)
        yield message


def _reader(bootstrap: str | None) -> Consumer:
    return kafka.consumer(
        f"aios-audit-reader-{uuid.uuid4().hex[:8]}",
        bootstrap,
        **{"enable.partition.eof": True},
    )


def read_raw_log(
    bootstrap: str | None = None,
    topic: str = LOG_TOPIC,
    start: int = OFFSET_BEGINNING,
    timeout: float = 10.0,
) -> list[str]:
    """The stored text of every committed record, in log order. A transaction becomes
    readable once Kafka has written its markers, a moment after its commit returned."""
    reader = _reader(bootstrap)
    try:
        return [
            (m.value() or b"").decode("utf-8", errors="replace")
            for m in _read(reader, TopicPartition(topic, 0, start), timeout)
        ]
    finally:
        reader.close()


def read_log(bootstrap: str | None = None, topic: str = LOG_TOPIC) -> list[AuditRecord]:
    """Every record of the audit log, parsed (``verify`` the raw text to detect tampering)."""
    return [AuditRecord.parse(raw) for raw in read_raw_log(bootstrap, topic)]


def read_file(path: Path) -> list[str]:
    """The records of a local audit file (one per line)."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


class Checkpoints(Protocol):
    """Where the appender reports its head, to be signed and kept outside the log
    (``aios.connectors.audit_checkpoint.Checkpointer``)."""

    def observe(self, seq: int, head: str) -> None:
        """The head now; signed when the last checkpoint is old enough."""

    def flush(self, seq: int, head: str) -> None:
        """The head at shutdown: signed unless it is already."""


class Appender:
    """The one writer of the chain: events → records, exactly once, in a transaction."""

    def __init__(
        self,
        bootstrap: str | None = None,
        events_topic: str = EVENTS_TOPIC,
        log_topic: str = LOG_TOPIC,
        file: Path | None = None,
        batch: int = 500,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.checkpoints = checkpoints
        self.events_topic = events_topic
        self.log_topic = log_topic
        self.file = file
        self.batch = batch
        self.transactional_id = f"aios-audit-appender.{log_topic}"
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._seq = -1
        self._hash = GENESIS
        self._recent: deque[str] = deque(maxlen=DEDUP_WINDOW)
        self._recent_set: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> Appender:
        """Join the appenders' consumer group; the one member assigned the events
        partition appends (``_assigned``), the others stand by — so replicas of the
        operator never fence each other, and one takes over when the active one goes."""
        kafka.ensure_topics(
            kafka.admin(self.bootstrap),
            [events_topic_spec(self.events_topic), log_topic_spec(self.log_topic)],
        )
        self._consumer = kafka.consumer(f"aios-audit-appender.{self.log_topic}", self.bootstrap)
        self._consumer.subscribe(
            [self.events_topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._revoked,
        )
        return self

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Fence any earlier appender, learn the chain's head; consumption resumes at the
        group's committed offset, which each transaction advanced."""
        if not partitions:
            return
        self._producer = kafka.producer(
            self.bootstrap,
            **{"transactional.id": self.transactional_id, "transaction.timeout.ms": 60000},
        )
        self._producer.init_transactions(30)
        self._load_head()

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self._producer = None

    def _load_head(self) -> None:
        tail = read_raw_log(self.bootstrap, self.log_topic, self._tail_start())
        self._seq, self._hash = -1, GENESIS
        self._recent.clear()
        self._recent_set.clear()
        for raw in tail:
            record = AuditRecord.parse(raw)
            self._seq, self._hash = record.seq, record.hash
            self._remember(record.event_id)
        if self.file is not None:
            self._catch_up_file()

    def _tail_start(self) -> int:
        reader = _reader(self.bootstrap)
        try:
            low, high = reader.get_watermark_offsets(TopicPartition(self.log_topic, 0), timeout=10)
        finally:
            reader.close()
        return max(low, high - DEDUP_WINDOW)

    def _catch_up_file(self) -> None:
        """The file mirrors the log: append what a crash left out (it never runs ahead)."""
        assert self.file is not None
        last = -1
        if self.file.exists():
            lines = read_file(self.file)
            last = AuditRecord.parse(lines[-1]).seq if lines else -1
        if last >= self._seq:
            return
        missing = [
            raw
            for raw in read_raw_log(self.bootstrap, self.log_topic)
            if AuditRecord.parse(raw).seq > last
        ]
        self._write_file(missing)

    def _write_file(self, lines: list[str]) -> None:
        if self.file is None or not lines:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with self.file.open("a", encoding="utf-8") as out:
            out.write("".join(f"{line}\n" for line in lines))
            out.flush()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._producer = None

    def start(self) -> Appender:
        """Run in a daemon thread until ``stop``; reopens after a Kafka error."""
        self._thread = threading.Thread(target=self._run, name="aios-audit-appender", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._consumer is None:
                    self.open()
                self.run_once(1.0)
            except Exception:
                logger.exception("audit appender failed; reopening")
                self.close()
                self._stop.wait(2)
        if self.checkpoints is not None and self._producer is not None:
            self.checkpoints.flush(self._seq, self._hash)
        self.close()

    # -- the work ---------------------------------------------------------------------
    def _remember(self, event_id: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(event_id)
        self._recent_set.add(event_id)

    def run_once(self, timeout: float = 1.0) -> int:
        """Chain the events available now, in one transaction; returns how many (0 while
        another appender holds the events partition)."""
        if self._consumer is None:
            self.open()
        assert self._consumer is not None
        messages = [m for m in self._consumer.consume(self.batch, timeout) if m.error() is None]
        if self._producer is None:
            return 0  # a standby: the active appender signs the head
        chained = self._append(messages) if messages else 0
        if self.checkpoints is not None:
            self.checkpoints.observe(self._seq, self._hash)
        return chained

    def _append(self, messages: list[Message]) -> int:
        assert self._producer is not None and self._consumer is not None
        seq, head, lines, added = self._seq, self._hash, [], []
        self._producer.begin_transaction()
        try:
            for message in messages:
                document = self._event_of(message)
                if document["eventId"] in self._recent_set or document["eventId"] in added:
                    continue
                source = {
                    "topic": message.topic(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                }
                record = chain(document, seq + 1, head, source)
                line = canonical(record)
                self._producer.produce(self.log_topic, line.encode(), key=str(seq + 1).encode())
                seq, head = seq + 1, record["hash"]
                lines.append(line)
                added.append(str(document["eventId"]))
            resume = (messages[-1].offset() or 0) + 1
            self._producer.send_offsets_to_transaction(
                [TopicPartition(self.events_topic, 0, resume)],
                self._consumer.consumer_group_metadata(),
                30,
            )
            self._producer.commit_transaction(30)
        except Exception:
            self._producer.abort_transaction(30)
            raise
        self._seq, self._hash = seq, head
        for event_id in added:
            self._remember(event_id)
        self._write_file(lines)
        return len(lines)

    @staticmethod
    def _event_of(message: Message) -> dict[str, Any]:
        raw = message.value() or b""
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or not isinstance(document.get("eventId"), str):
                raise ValueError("an event is a JSON object with an eventId")
            if document.get("kind") not in KINDS:
                raise ValueError(f"unknown kind {document.get('kind')!r}")
            return document
        except ValueError as error:
            return malformed(raw, str(error))


# -- lineage --------------------------------------------------------------------------------


def trace(records: Sequence[AuditRecord], action_id: str) -> dict[str, Any]:
    """The whole lineage of one action from the chain: sensor readings → gateway and
    filter-chain version → Kafka offsets → model (version, score, confidence, canary or
    stable, and the promotion that put it there) → decision rule or fallback → policy
    decision ids → approver → result. Raises LookupError when the action is unknown."""
    steps = sorted(
        (r for r in records if r.kind == "action-step" and r.details.get("actionId") == action_id),
        key=lambda r: r.seq,
    )
    if not steps:
        raise LookupError(f"no action-step records for action {action_id!r}")
    first, last = steps[0], steps[-1]
    decision: dict[str, Any] = next(
        (s.details["decision"] for s in steps if s.details.get("decision")), {}
    )
    lineage = decision.get("lineage") or {}
    model = decision.get("model") or None
    model_name = (model or {}).get("deployment") or (model or {}).get("name")
    edge = _latest(
        records,
        first.seq,
        "edge-config",
        lambda d: (
            d.get("gateway") == lineage.get("gateway")
            and d.get("configGeneration") == lineage.get("configGeneration")
        ),
    )
    promotion = (
        _latest(
            records,
            first.seq,
            ("promotion", "rollback"),
            lambda d: (
                (d.get("model") or {}).get("name") == model_name
                and (d.get("model") or {}).get("version") == model.get("version")
            ),
        )
        if model
        else None
    )
    return {
        "actionId": action_id,
        "intent": first.details.get("intent"),
        "action": first.details.get("action"),
        "readings": {
            "eventIds": lineage.get("eventIds") or [],
            "sensors": lineage.get("sensors") or [],
        },
        "edge": {
            "gateway": lineage.get("gateway"),
            "configGeneration": lineage.get("configGeneration"),
            "filterChain": lineage.get("filterChain"),
            "record": edge.seq if edge else None,
        },
        "kafka": {k: lineage.get(k) for k in ("topic", "partition", "offset")},
        "model": None
        if model is None
        else {
            **model,
            "name": model_name,
            "score": decision.get("score"),
            "confidence": decision.get("confidence"),
            "promotion": None
            if promotion is None
            else {
                "record": promotion.seq,
                "kind": promotion.kind,
                "approver": promotion.details.get("approver") or promotion.actor,
            },
        },
        "decision": {
            "rule": decision.get("rule"),
            "fallback": decision.get("fallback"),
            "fallbackReason": decision.get("fallbackReason"),
        },
        "policyDecisions": [
            {"step": s.details.get("step"), "decisionId": s.policy_decision_id}
            for s in steps
            if s.policy_decision_id
        ],
        "approver": next(
            (s.details.get("approver") for s in reversed(steps) if s.details.get("approver")), None
        ),
        "result": last.details.get("result"),
        "steps": [
            {
                "record": s.seq,
                "step": s.details.get("step"),
                "time": s.time,
                "policyDecisionId": s.policy_decision_id,
                "approver": s.details.get("approver"),
                "result": s.details.get("result"),
            }
            for s in steps
        ],
    }


def _latest(
    records: Sequence[AuditRecord],
    before: int,
    kinds: str | tuple[str, ...],
    match: Callable[[dict[str, Any]], bool],
) -> AuditRecord | None:
    """The newest record of ``kinds`` before seq ``before`` whose details ``match``."""
    wanted = (kinds,) if isinstance(kinds, str) else kinds
    found = [r for r in records if r.kind in wanted and r.seq < before and match(r.details)]
    return max(found, key=lambda r: r.seq) if found else None
