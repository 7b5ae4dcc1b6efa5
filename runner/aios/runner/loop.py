"""The runner's loop: consume a batch, decide, hand actions to Temporal, then publish the
decisions and dead letters and commit the offsets in one Kafka transaction.

Exactly once, end to end: the hand-off is idempotent (the workflow id is the action's
idempotency key), and decisions, dead letters, each partition's state (``state``) and
consumer offsets are committed atomically — a crash anywhere replays the batch, which
starts no workflow twice and publishes each decision once; a transaction Kafka aborts (a
rebalance fenced it) rewinds its partitions to their last commit. Backpressure: one batch
in flight; while Temporal cannot take the hand-off the partitions are paused and the batch
is retried, never dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from aios.api.events import ActionRequest, Decision, Reading
from aios.api.runner import RunnerConfig
from aios.connectors import kafka
from aios.connectors.inference import Target
from aios.runner import metrics
from aios.runner.calls import ModelCaller
from aios.runner.deployments import DeploymentStatuses
from aios.runner.records import DLQ_REASON, DLQ_SOURCE, Position, action_request, decide_record
from aios.runner.rules import CallResult, RuleSet
from aios.runner.spans import BatchSpans
from aios.runner.state import (
    Partition,
    SourcePartition,
    committed_offset,
    restore,
    source_of,
    state_key,
)

ACTION_WORKFLOW = "ActionWorkflow"
HANDOFF_TIMEOUT = timedelta(seconds=10)
"""How long one workflow start may take before the hand-off counts as failed (consumption
pauses and it is retried): a Temporal that hangs rather than refuses is found out as soon.
A start that succeeded late is found by its id on the retry, never run twice."""
log = logging.getLogger(__name__)


class BatchAborted(Exception):
    """Kafka aborted the batch's transaction (a rebalance fenced its offsets): nothing of it
    is visible, and its partitions go on from their last commit."""


def dead_letter_reason(error: ValidationError | ValueError) -> str:
    """A short reason naming the fields, e.g. ``metrics.pm25: Input should be a valid number``."""
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in error.errors()
        )[:1000]
    return str(error)[:1000]


def traceparent(message: Message) -> str | None:
    """The W3C trace context the edge agent put in the record's headers."""
    headers = message.headers() or []
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        if name == "traceparent" and value:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None


def parse(value: bytes | None) -> Reading | str:
    """The reading in a record's value, or why it is not one."""
    if not value:
        return "record: empty value"
    try:
        return Reading.model_validate_json(value)
    except ValidationError as error:
        return dead_letter_reason(error)


class Runner:
    """Decides one intent generation; several replicas share the consumer group."""

    def __init__(
        self,
        config: RunnerConfig,
        bootstrap: str,
        temporal: Client,
        pod: str,
        statuses: DeploymentStatuses,
    ) -> None:
        self.config = config
        self.intent = f"{config.intent.namespace}/{config.intent.name}"
        self.temporal = temporal
        self.pod = pod
        spec = config.spec
        self.consumer: Consumer = kafka.consumer(
            config.consumer_group,
            bootstrap,
            **{
                "queued.max.messages.kbytes": 8192,
                "max.poll.interval.ms": 600000,
            },
        )
        self.producer: Producer = kafka.producer(
            bootstrap,
            **{
                "transactional.id": f"{config.transactional_id_prefix}{pod}",
                "linger.ms": 2,
            },
        )
        self.heartbeats: Producer = kafka.producer(bootstrap)
        self.bootstrap = bootstrap
        self.callers = {m.name: ModelCaller(self.intent, m, statuses) for m in spec.models}
        self.rules = RuleSet.compile(spec)
        self.partitions: dict[SourcePartition, Partition] = {}
        """The source partitions this replica holds, restored from the state topic."""
        self.batch_size = spec.sla.max_batch_size
        self.wait = min(0.1, spec.sla.max_latency_ms / 4000)
        self.paused = False
        metrics.PAUSED.labels(self.intent).set(0)  # a series from the start, not the first pause

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.producer.init_transactions, 30)
        self.consumer.subscribe(
            self.config.topics.sources, on_revoke=self._released, on_lost=self._released
        )
        beat = asyncio.create_task(self._heartbeat(stop))
        try:
            while not stop.is_set():
                messages = await asyncio.to_thread(
                    self.consumer.consume, self.batch_size, self.wait
                )
                batch = [m for m in messages if m.error() is None]
                for m in messages:
                    if m.error() is not None:
                        log.warning("consume error: %s", m.error())
                await self._take_over()
                if batch:
                    await self.process(batch)
        finally:
            beat.cancel()
            await asyncio.to_thread(self.consumer.close)
            for caller in self.callers.values():
                await caller.close()

    def _released(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        """Revoked or lost: another replica goes on from the last commit (the consume thread
        calls this between batches, never while one is being decided)."""
        for released in partitions:
            self.partitions.pop((released.topic, released.partition), None)
            metrics.CONSUMER_LAG.remove(self.intent, released.topic, str(released.partition))

    async def _take_over(self) -> None:
        """Restore the state of partitions newly assigned, as of their committed offsets."""
        assigned = self.consumer.assignment()
        new = [tp for tp in assigned if (tp.topic, tp.partition) not in self.partitions]
        if not new:
            return
        committed = await asyncio.to_thread(self.consumer.committed, new, 30)
        restored = await asyncio.to_thread(
            restore,
            self.bootstrap,
            self.config.topics.state,
            {(tp.topic, tp.partition): committed_offset(tp) for tp in committed},
        )
        for source, state in restored.states.items():
            self.partitions[source] = Partition.start(self.rules, state)
            self.partitions[source].saved = source not in restored.unmatched
        if restored.unmatched:
            await self._commit([], [], [])

    def _ours(self, message: Message) -> bool:
        """Whether this replica decides ``message``: not if its partition was released
        while the batch was fetched (the next holder decides it), nor if it lies before
        the partition's committed offset (someone already did)."""
        partition = self.partitions.get(source_of(message))
        return partition is not None and (message.offset() or 0) >= partition.offset

    async def process(self, batch: list[Message]) -> None:
        now = datetime.now(UTC)
        spans = BatchSpans(self.intent, self.config.consumer_group)
        parsed: list[tuple[Message, Reading]] = []
        dead: list[tuple[Message, str]] = []
        batch = [m for m in batch if self._ours(m)]
        for message in batch:
            found = parse(message.value())
            if isinstance(found, str):
                dead.append((message, found))
            else:
                parsed.append((message, found))
                spans.consumed(message, traceparent(message))
        readings = [r for _, r in parsed]
        answers = await self._infer(readings, now, spans)
        decisions: list[Decision] = []
        requests: list[ActionRequest] = []
        for index, (message, reading) in enumerate(parsed):
            calls = {name: answer[0][index] for name, answer in answers.items()}
            targets = {name: answer[1] for name, answer in answers.items()}
            position = Position(
                message.topic() or "", message.partition() or 0, message.offset() or 0
            )
            decider = self.partitions[(position.topic, position.partition)].decider
            with spans.deciding(position):
                verdict = decider.decide(reading, calls, now)
            carried = spans.traceparent(position) or traceparent(message)
            decision = decide_record(
                self.config, position, reading, verdict, calls, targets, now, carried
            )
            decisions.append(decision)
            request = action_request(self.config, decision)
            if request is not None:
                requests.append(request)
        await self._hand_off_durably(requests, spans)
        self._count(batch, decisions, dead, now)
        committed = await self._commit(batch, decisions, dead)
        spans.finish(committed)
        if committed:
            log.info("%s", batch_summary(decisions, len(dead)))

    async def _commit(
        self, batch: list[Message], decisions: list[Decision], dead: list[tuple[Message, str]]
    ) -> bool:
        """Publish the batch in its transaction; if Kafka aborts it, rewind its partitions
        to their last commit (they are decided again, their actions' hand-offs idempotent)."""
        try:
            await asyncio.to_thread(self._publish, batch, decisions, dead)
            return True
        except BatchAborted as error:
            log.warning("batch of %d aborted, deciding it again: %s", len(batch), error)
            await asyncio.to_thread(self._rewind, partitions_of(batch))
            return False

    def _rewind(self, sources: list[SourcePartition]) -> None:
        """Back to the last commit: held partitions are sought to their committed offset,
        and every one's state is read again from the state topic (``_take_over``)."""
        held = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        mine = [TopicPartition(t, p) for t, p in sources if (t, p) in held]
        for found in self.consumer.committed(mine, 30) if mine else []:
            offset = found.offset if found.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(found.topic, found.partition, offset))
        for source in sources:
            self.partitions.pop(source, None)

    async def _infer(
        self, readings: list[Reading], now: datetime, spans: BatchSpans
    ) -> dict[str, tuple[list[CallResult], Target | None]]:
        async def one(
            name: str, caller: ModelCaller
        ) -> tuple[str, tuple[list[CallResult], Target | None]]:
            started = time.perf_counter()
            async with spans.inference(name) as call:
                answer = await caller(readings, now, call.headers())
                call.target = answer.target
                call.error = None if answer.target else caller.breaker.last_error or "no answer"
            role, version = (
                (answer.target.role, answer.target.version) if answer.target else ("none", "")
            )
            deployment = caller.call.model_deployment
            metrics.INFERENCE.labels(self.intent, name, deployment, version, role).observe(
                time.perf_counter() - started
            )
            metrics.MODEL_UP.labels(self.intent, name).set(0 if caller.breaker.failures else 1)
            return name, (answer.results, answer.target)

        if not readings:
            return {}
        return dict(await asyncio.gather(*(one(n, c) for n, c in self.callers.items())))

    async def _hand_off_durably(self, requests: list[ActionRequest], spans: BatchSpans) -> None:
        """Start each action's workflow; on failure pause consumption and retry — the batch
        is neither dropped nor committed until every hand-off is durable."""
        unique = {r.action_id: r for r in requests}
        delay = 0.5
        while True:
            try:
                for request in list(unique.values()):
                    assert request.decision is not None  # a runner's actions follow decisions
                    with spans.handing_off(request.decision):
                        await self._start(request)
                    unique.pop(request.action_id)
                break
            except Exception as error:  # Temporal unreachable or overloaded
                if not self.paused:
                    self.consumer.pause(self.consumer.assignment())
                    self.paused = True
                    metrics.PAUSED.labels(self.intent).set(1)
                log.warning(
                    "hand-off of %d action(s) failed, retrying in %.1fs: %s",
                    len(unique),
                    delay,
                    error,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        if self.paused:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False
            metrics.PAUSED.labels(self.intent).set(0)

    async def _start(self, request: ActionRequest) -> None:
        try:
            await self.temporal.start_workflow(
                ACTION_WORKFLOW,
                request,
                id=request.action_id,
                task_queue=self.config.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=HANDOFF_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            metrics.HANDOFFS.labels(self.intent, "duplicate").inc()
            return
        metrics.HANDOFFS.labels(self.intent, "started").inc()

    def _publish(
        self, batch: list[Message], decisions: list[Decision], dead: list[tuple[Message, str]]
    ) -> None:
        """The batch's transaction, committed — or aborted if Kafka says it must be."""
        try:
            self._transact(batch, decisions, dead)
        except KafkaException as error:
            if not error.args[0].txn_requires_abort():
                raise
            self.producer.abort_transaction(30)
            raise BatchAborted(str(error)) from error

    def _transact(
        self, batch: list[Message], decisions: list[Decision], dead: list[tuple[Message, str]]
    ) -> None:
        """Decisions, dead letters, the partitions' new state and the consumer's offsets,
        atomically."""
        topics = self.config.topics
        self.producer.begin_transaction()
        for message, reason in dead:
            self.producer.produce(
                topics.dead_letters,
                key=message.key(),
                value=message.value(),
                headers=[
                    *(message.headers() or []),
                    (DLQ_REASON, reason.encode()),
                    (
                        DLQ_SOURCE,
                        f"{message.topic()}/{message.partition()}/{message.offset()}".encode(),
                    ),
                ],
            )
        for decision in decisions:
            self.producer.produce(
                topics.decisions,
                key=decision.sensor_id.encode(),
                value=decision.model_dump_json(by_alias=True, exclude_none=True).encode(),
                headers=[("traceparent", decision.traceparent.encode())]
                if decision.traceparent
                else None,
            )
        unsaved = [(s, p) for s, p in self.partitions.items() if not p.saved]
        for source, partition in unsaved:
            self.producer.produce(
                topics.state,
                key=state_key(source).encode(),
                value=partition.state().model_dump_json(by_alias=True).encode(),
            )
        if batch:
            self.producer.send_offsets_to_transaction(
                [
                    TopicPartition(t, p, self.partitions[(t, p)].offset)
                    for t, p in partitions_of(batch)
                ],
                self.consumer.consumer_group_metadata(),
                30,
            )
        self.producer.commit_transaction(30)
        for _, partition in unsaved:
            partition.saved = True

    def _count(
        self,
        batch: list[Message],
        decisions: list[Decision],
        dead: list[tuple[Message, str]],
        now: datetime,
    ) -> None:
        """The partitions' counts and next offsets (their state to save), and the metrics."""
        for message in batch:
            partition = self.partitions[source_of(message)]
            partition.offset = max(partition.offset, (message.offset() or 0) + 1)
            partition.counts.events += 1
            partition.saved = False
        for message, _ in dead:
            self.partitions[source_of(message)].counts.dead_letters += 1
        for decision in decisions:
            counts = self.partitions[(decision.lineage.topic, decision.lineage.partition)].counts
            counts.decisions += 1
            counts.fallbacks += decision.fallback
        metrics.BATCH.labels(self.intent).observe(len(decisions) + len(dead))
        metrics.READINGS.labels(self.intent, "decided").inc(len(decisions))
        metrics.READINGS.labels(self.intent, "dead-letter").inc(len(dead))
        for decision in decisions:
            metrics.DECISIONS.labels(
                self.intent,
                decision.rule or "",
                str(decision.fallback).lower(),
                decision.fallback_reason or "",
            ).inc()
            metrics.DECISION_LATENCY.labels(self.intent).observe(
                max(0.0, (now - decision.time).total_seconds())
            )

    def health(self) -> dict[str, Any]:
        """What the operator turns into the intent's status (``Degraded``, counts and lag);
        each held partition's lag also goes to the metric."""
        reports = {
            source: held.report(self._end(source)) for source, held in dict(self.partitions).items()
        }
        for (topic, partition), report in reports.items():
            if report.lag is not None:
                metrics.CONSUMER_LAG.labels(self.intent, topic, str(partition)).set(report.lag)
        return {
            "namespace": self.config.intent.namespace,
            "intent": self.config.intent.name,
            "generation": self.config.intent.generation,
            "pod": self.pod,
            "time": datetime.now(UTC).isoformat(),
            "paused": self.paused,
            "partitions": {
                state_key(source): report.model_dump(by_alias=True)
                for source, report in reports.items()
            },
            "models": {
                name: {
                    "available": not caller.breaker.open and caller.breaker.failures == 0,
                    "error": caller.breaker.last_error,
                }
                for name, caller in self.callers.items()
            },
        }

    def _end(self, source: SourcePartition) -> int:
        """The partition's high watermark as its last fetch brought it (no request to the
        broker; -1 before the first fetch)."""
        _, high = self.consumer.get_watermark_offsets(TopicPartition(*source), cached=True)
        return int(high)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        key = f"{self.intent}/{self.pod}".encode()
        while not stop.is_set():
            self.heartbeats.produce(
                self.config.heartbeat_topic, key=key, value=json.dumps(self.health()).encode()
            )
            self.heartbeats.poll(0)
            await asyncio.sleep(self.config.heartbeat_seconds)


def partitions_of(batch: list[Message]) -> list[SourcePartition]:
    """The source partitions a batch read from, in order of first appearance."""
    return list(dict.fromkeys(source_of(m) for m in batch))


def batch_summary(decisions: list[Decision], dead_letters: int) -> str:
    """One log line per committed batch, what an operator tails with ``kubectl logs``:
    how many readings led to which outcome, by rule, and what went to the dead letters."""
    outcomes = Counter(
        f"{d.outcome} by {d.rule}" + (f" (fallback: {d.fallback_reason})" if d.fallback else "")
        if d.rule
        else f"{d.outcome} (no rule matched)"
        for d in decisions
    )
    parts = [f"{n} {outcome}" for outcome, n in sorted(outcomes.items())]
    actions = sorted({d.action_id for d in decisions if d.action_id})
    text = f"decided {len(decisions)} reading(s): {', '.join(parts) or 'none'}"
    if actions:
        text += f"; action(s) {', '.join(actions)}"
    return text + (f"; {dead_letters} dead letter(s)" if dead_letters else "")
