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
  "policyDecisionId", "approver", "result": {"status", ...}, "policyInput"}`` — what
  ``aiosctl audit trace`` follows; ``policyInput`` (on a step OPA decided) is the document
  it decided on, which a dry-run Policy is asked about afterwards.

The parts: ``records`` (the record format, the chain, ``verify``), ``writer`` (the topics,
``AuditWriter``), ``log`` (reading the log back), ``appender`` (the chaining thread),
``lineage`` (what ``trace`` follows).
"""

from __future__ import annotations

from aios.connectors.audit.appender import (
    Appender,
    Checkpoints,
)
from aios.connectors.audit.lineage import (
    action_steps,
    trace,
)
from aios.connectors.audit.log import (
    AuditTail,
    open_reader,
    read_file,
    read_log,
    read_raw_log,
)
from aios.connectors.audit.records import (
    DEDUP_WINDOW,
    GENESIS,
    KINDS,
    MALFORMED,
    AuditRecord,
    AuditUnavailable,
    VerifyResult,
    canonical,
    chain,
    digest,
    event,
    malformed,
    now_rfc3339,
    verify,
)
from aios.connectors.audit.writer import (
    EVENTS_TOPIC,
    LOG_TOPIC,
    AuditWriter,
    events_topic_spec,
    log_topic_spec,
)

__all__ = [
    "DEDUP_WINDOW",
    "EVENTS_TOPIC",
    "GENESIS",
    "KINDS",
    "LOG_TOPIC",
    "MALFORMED",
    "Appender",
    "AuditRecord",
    "AuditTail",
    "AuditUnavailable",
    "AuditWriter",
    "Checkpoints",
    "VerifyResult",
    "action_steps",
    "canonical",
    "chain",
    "digest",
    "event",
    "events_topic_spec",
    "log_topic_spec",
    "malformed",
    "now_rfc3339",
    "open_reader",
    "read_file",
    "read_log",
    "read_raw_log",
    "trace",
    "verify",
]
