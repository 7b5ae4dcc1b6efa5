"""The runner's loop: consume a batch, decide, hand actions to Temporal, then publish the
decisions and dead letters and commit the offsets in one Kafka transaction.

Exactly once, end to end: the hand-off is idempotent (the workflow id is the action's
idempotency key), and decisions, dead letters and consumer offsets are committed
atomically — a crash anywhere replays the batch, which starts no workflow twice and
publishes each decision once. Backpressure: one batch in flight; while Temporal cannot
take the hand-off the partitions are paused and the batch is retried, never dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition
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
from aios.runner.rules import CallResult, Decider, RuleSet

ACTION_WORKFLOW = "ActionWorkflow"
log = logging.getLogger(__name__)


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


def parse(message: Message) -> Reading | str:
    """The reading in a record, or why it is not one."""
    value = message.value()
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
        self.callers = {m.name: ModelCaller(m, statuses) for m in spec.models}
        self.decider = Decider(RuleSet.compile(spec))
        self.batch_size = spec.sla.max_batch_size
        self.wait = min(0.1, spec.sla.max_latency_ms / 4000)
        self.counts = {
            "events": 0,
            "decisions": 0,
            "deadLetters": 0,
            "fallbacks": 0,
            "actions": 0,
            "duplicates": 0,
        }
        self.paused = False

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.producer.init_transactions, 30)
        self.consumer.subscribe(self.config.topics.sources)
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
                if batch:
                    await self.process(batch)
        finally:
            beat.cancel()
            await asyncio.to_thread(self.consumer.close)
            for caller in self.callers.values():
                await caller.close()

    async def process(self, batch: list[Message]) -> None:
        now = datetime.now(UTC)
        parsed: list[tuple[Message, Reading]] = []
        dead: list[tuple[Message, str]] = []
        for message in batch:
            found = parse(message)
            if isinstance(found, str):
                dead.append((message, found))
            else:
                parsed.append((message, found))
        readings = [r for _, r in parsed]
        answers = await self._infer(readings, now)
        decisions: list[Decision] = []
        requests: list[ActionRequest] = []
        for index, (message, reading) in enumerate(parsed):
            calls = {name: answer[0][index] for name, answer in answers.items()}
            targets = {name: answer[1] for name, answer in answers.items()}
            verdict = self.decider.decide(reading, calls, now)
            position = Position(
                message.topic() or "", message.partition() or 0, message.offset() or 0
            )
            decision = decide_record(
                self.config, position, reading, verdict, calls, targets, now, traceparent(message)
            )
            decisions.append(decision)
            request = action_request(self.config, decision)
            if request is not None:
                requests.append(request)
        await self._hand_off_durably(requests)
        await asyncio.to_thread(self._publish, batch, decisions, dead)
        self._count(decisions, dead, now)
        log.info("%s", batch_summary(decisions, len(dead)))

    async def _infer(
        self, readings: list[Reading], now: datetime
    ) -> dict[str, tuple[list[CallResult], Target | None]]:
        async def one(
            name: str, caller: ModelCaller
        ) -> tuple[str, tuple[list[CallResult], Target | None]]:
            started = time.perf_counter()
            answer = await caller(readings, now)
            role = answer.target.role if answer.target else "none"
            metrics.INFERENCE.labels(self.intent, name, role).observe(time.perf_counter() - started)
            metrics.MODEL_UP.labels(self.intent, name).set(0 if caller.breaker.failures else 1)
            return name, (answer.results, answer.target)

        if not readings:
            return {}
        return dict(await asyncio.gather(*(one(n, c) for n, c in self.callers.items())))

    async def _hand_off_durably(self, requests: list[ActionRequest]) -> None:
        """Start each action's workflow; on failure pause consumption and retry — the batch
        is neither dropped nor committed until every hand-off is durable."""
        unique = {r.action_id: r for r in requests}
        delay = 0.5
        while True:
            try:
                for request in list(unique.values()):
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
            )
        except WorkflowAlreadyStartedError:
            self.counts["duplicates"] += 1
            metrics.HANDOFFS.labels(self.intent, "duplicate").inc()
            return
        self.counts["actions"] += 1
        metrics.HANDOFFS.labels(self.intent, "started").inc()

    def _publish(
        self, batch: list[Message], decisions: list[Decision], dead: list[tuple[Message, str]]
    ) -> None:
        """Decisions, dead letters and the consumer's offsets, atomically."""
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
        offsets: dict[tuple[str, int], int] = {}
        for message in batch:
            key = (message.topic() or "", message.partition() or 0)
            offsets[key] = max(offsets.get(key, -1), (message.offset() or 0) + 1)
        self.producer.send_offsets_to_transaction(
            [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            self.consumer.consumer_group_metadata(),
            30,
        )
        self.producer.commit_transaction(30)

    def _count(
        self, decisions: list[Decision], dead: list[tuple[Message, str]], now: datetime
    ) -> None:
        self.counts["events"] += len(decisions) + len(dead)
        self.counts["decisions"] += len(decisions)
        self.counts["deadLetters"] += len(dead)
        metrics.BATCH.labels(self.intent).observe(len(decisions) + len(dead))
        metrics.READINGS.labels(self.intent, "decided").inc(len(decisions))
        metrics.READINGS.labels(self.intent, "dead-letter").inc(len(dead))
        for decision in decisions:
            self.counts["fallbacks"] += decision.fallback
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
        """What the operator turns into the intent's status (``Degraded`` and counts)."""
        return {
            "namespace": self.config.intent.namespace,
            "intent": self.config.intent.name,
            "generation": self.config.intent.generation,
            "pod": self.pod,
            "time": datetime.now(UTC).isoformat(),
            "paused": self.paused,
            "counts": dict(self.counts),
            "models": {
                name: {
                    "available": not caller.breaker.open and caller.breaker.failures == 0,
                    "error": caller.breaker.last_error,
                }
                for name, caller in self.callers.items()
            },
        }

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        key = f"{self.intent}/{self.pod}".encode()
        while not stop.is_set():
            self.heartbeats.produce(
                self.config.heartbeat_topic, key=key, value=json.dumps(self.health()).encode()
            )
            self.heartbeats.poll(0)
            await asyncio.sleep(self.config.heartbeat_seconds)


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
