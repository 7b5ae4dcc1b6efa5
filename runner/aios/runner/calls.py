"""Calling the intent's models for a batch of readings: features, the traffic route of
each ModelDeployment, a circuit breaker per call, and the shadow mirror.

Every reading gets a ``CallResult`` per model call; anything short of an answer becomes a
state the rules turn into a fallback decision, so inference trouble never stops decisions.
What each version answered (or failed), and whether a mirrored pair decided alike, is
counted per version: a rollout's analysis judges the new version on it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from aios.api.automation_intent import ModelCall
from aios.api.events import Reading
from aios.connectors.inference import (
    InferenceClient,
    InferenceError,
    InferenceUnavailable,
    Route,
    Target,
    decides_alike,
    route,
)
from aios.runner import metrics
from aios.runner.rules import CallResult, CallState

log = logging.getLogger(__name__)


def features(readings: Sequence[Reading], names: Sequence[str]) -> npt.NDArray[Any]:
    """The ``features`` matrix: a column per metric of ``names``, in that order, a row per
    reading (each has every one: see ``unfit``)."""
    rows = [[r.metrics[m] for m in names] for r in readings]
    return np.asarray(rows, dtype=np.float32).reshape(len(readings), len(names))


def rows(outputs: Mapping[str, npt.NDArray[Any]], count: int) -> list[dict[str, float]]:
    """One ``{output: value}`` per row of a batch of ``count`` readings (outputs of another
    shape say nothing per reading and are left out)."""
    per_row = {name: np.ravel(v) for name, v in outputs.items() if np.ravel(v).shape[0] == count}
    return [{name: float(v[row]) for name, v in per_row.items()} for row in range(count)]


def unfit(call: ModelCall, reading: Reading, now: datetime) -> CallState | None:
    """Why ``reading`` cannot be sent to the call's model (``stale``: older than its
    ``maxStalenessSeconds``; ``incomplete``: it lacks a feature), or None if it can. A replay
    asks the same question of a recorded decision's time (``aios.runner.replay``)."""
    if (now - reading.time).total_seconds() > call.max_staleness_seconds:
        return "stale"
    if not all(m in reading.metrics for m in call.features):
        return "incomplete"
    return None


class CircuitBreaker:
    """Stop calling a model that keeps failing; probe again after ``reset_seconds``."""

    def __init__(
        self,
        threshold: int = 3,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold, self.reset_seconds, self.clock = threshold, reset_seconds, clock
        self.failures = 0
        self.opened_at: float | None = None
        self.last_error = ""

    def allow(self) -> bool:
        """Closed, or open long enough that one probe may go through (half-open)."""
        return self.opened_at is None or self.clock() - self.opened_at >= self.reset_seconds

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.last_error = 0, None, ""

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        if self.failures >= self.threshold:
            self.opened_at = self.clock()

    @property
    def open(self) -> bool:
        return self.opened_at is not None


@dataclass
class BatchAnswer:
    """One call's results for a batch, and which model version answered."""

    results: list[CallResult]
    target: Target | None = None


class ModelCaller:
    """Calls one ModelDeployment for the intent, honouring its traffic split."""

    def __init__(
        self,
        intent: str,
        call: ModelCall,
        statuses: Callable[[str], Mapping[str, Any] | None],
        protocol: str = "grpc",
    ) -> None:
        self.call = call
        self.intent = intent
        self.statuses = statuses
        self.protocol = protocol
        self.breaker = CircuitBreaker()
        """The call's: the stable version's (a shadow's never opens it, a canary has its own)."""
        self.canary_breakers: dict[str, CircuitBreaker] = {}
        self.clients: dict[str, InferenceClient] = {}
        self.mirrors: set[asyncio.Task[None]] = set()

    async def _infer(
        self, target: Target, matrix: npt.NDArray[Any], headers: Mapping[str, str] | None
    ) -> Mapping[str, npt.NDArray[Any]]:
        """One request, sent once more on a fresh connection if it failed fast: a connection
        outlives the version it reached (a Service's pods replaced at promotion, the old
        one unloading its model), and a new one reaches the version now serving. A timeout
        has spent the budget and is not retried."""
        budget = self.call.timeout_ms / 1000
        started = time.monotonic()
        # Each Deployment serves one version, so requests name the model only.
        inputs = {"features": matrix}
        try:
            return await self._client(target).infer(
                target.model, inputs, timeout=budget, headers=headers
            )
        except InferenceUnavailable:
            await self._reconnect(target)
            spent = time.monotonic() - started
            if spent > budget / 2:
                raise
        return await self._client(target).infer(
            target.model, inputs, timeout=budget - spent, headers=headers
        )

    async def _reconnect(self, target: Target) -> None:
        """The next request to ``target`` opens a new connection."""
        client = self.clients.pop(target.url(self.protocol), None)  # type: ignore[arg-type]
        if client is not None:
            await client.close()

    def _client(self, target: Target) -> InferenceClient:
        url = target.url(self.protocol)  # type: ignore[arg-type]
        if url not in self.clients:
            self.clients[url] = InferenceClient(url, self.protocol)  # type: ignore[arg-type]
        return self.clients[url]

    async def __call__(
        self, readings: Sequence[Reading], now: datetime, headers: Mapping[str, str] | None = None
    ) -> BatchAnswer:
        """Every reading's result; ``headers`` go with the request (its trace context). What
        a canary cannot answer (it fails, or its own breaker is open) the stable version
        answers: a broken canary costs its readings a retry, never their model's answer."""
        results = [CallResult(unfit(self.call, r, now) or "unavailable") for r in readings]
        complete = [i for i, r in enumerate(results) if r.state == "unavailable"]
        if not complete or not self.breaker.allow():
            return BatchAnswer(results)
        try:
            chosen = self._route()
        except InferenceUnavailable as error:
            self.breaker.failed(str(error))
            log.warning("model call %s failed: %s", self.call.name, error)
            return BatchAnswer(results)
        matrix = features([readings[i] for i in complete], self.call.features)
        if chosen.primary.role == "canary" and chosen.mirror is not None:
            canary = self._canary_breaker(chosen.primary)
            if not canary.allow():
                self._observe(chosen.primary, None, len(complete))  # routed there, unanswerable
            elif (answers := await self._ask(chosen.primary, matrix, headers, canary)) is not None:
                return self._answered(chosen, matrix, answers, results, complete)
            chosen = Route(chosen.mirror)
        answers = await self._ask(chosen.primary, matrix, headers, self.breaker)
        if answers is None:
            return BatchAnswer(results)
        return self._answered(chosen, matrix, answers, results, complete)

    async def _ask(
        self,
        target: Target,
        matrix: npt.NDArray[Any],
        headers: Mapping[str, str] | None,
        breaker: CircuitBreaker,
    ) -> list[dict[str, float]] | None:
        """``target``'s answer for each row, or None when it failed (its breaker told)."""
        try:
            outputs = await self._infer(target, matrix, headers)
        except InferenceError as error:
            breaker.failed(str(error))
            self._observe(target, None, len(matrix))
            log.warning("model call %s to %s failed: %s", self.call.name, target.version, error)
            return None
        breaker.succeeded()
        answers = rows(outputs, len(matrix))
        self._observe(target, answers, len(matrix))
        return answers

    def _answered(
        self,
        chosen: Route,
        matrix: npt.NDArray[Any],
        answers: list[dict[str, float]],
        results: list[CallResult],
        complete: list[int],
    ) -> BatchAnswer:
        if chosen.mirror is not None:
            self._mirror(chosen, matrix, answers)
        for i, answer in zip(complete, answers, strict=True):
            results[i] = CallResult("ok", answer)
        return BatchAnswer(results, chosen.primary)

    def _canary_breaker(self, canary: Target) -> CircuitBreaker:
        """The canary's own breaker (a new canary version starts with a closed one)."""
        if canary.version not in self.canary_breakers:
            self.canary_breakers = {canary.version: CircuitBreaker()}
        return self.canary_breakers[canary.version]

    def _observe(self, target: Target, answers: list[dict[str, float]] | None, count: int) -> None:
        """Count ``count`` readings ``target`` answered (``answers``, one each) or failed
        (None). Both outcomes' series exist from the first, so a rate starts at zero."""
        labels = (self.intent, self.call.model_deployment, target.version, target.role)
        ok, failed = (metrics.MODEL_ANSWERS.labels(*labels, o) for o in ("ok", "error"))
        (failed if answers is None else ok).inc(count)
        scores, confidences = metrics.MODEL_SCORE.labels(*labels), None
        for answer in answers or ():
            if (score := answer.get("score")) is not None:
                scores.observe(score)
            if (confidence := answer.get("confidence")) is not None:
                confidences = confidences or metrics.MODEL_CONFIDENCE.labels(*labels)
                confidences.observe(confidence)

    def _route(self) -> Route:
        status = self.statuses(self.call.model_deployment)
        if status is None:
            raise InferenceUnavailable(f"ModelDeployment {self.call.model_deployment} not found")
        return route(status, random.random())

    def _mirror(
        self, chosen: Route, matrix: npt.NDArray[Any], answers: list[dict[str, float]]
    ) -> None:
        """Send the mirror its copy without waiting for it; its answer never decides, it
        is only compared with ``answers``, the primary's (``aios.connectors.inference.route``)."""
        assert chosen.mirror is not None and chosen.candidate is not None
        target, candidate = chosen.mirror, chosen.candidate

        async def send() -> None:
            try:
                outputs = await self._client(target).infer(
                    target.model,
                    {"features": matrix},
                    timeout=self.call.timeout_ms / 1000,
                )
            except InferenceError as error:
                self._observe(target, None, len(answers))
                log.info("mirror %s of %s failed: %s", target.version, self.call.name, error)
                return
            copies = rows(outputs, len(answers))
            self._observe(target, copies, len(answers))
            pairs = metrics.MODEL_PAIRS
            labels = (self.intent, self.call.model_deployment, candidate.version)
            for answer, copy in zip(answers, copies, strict=True):
                if "score" in answer and "score" in copy:
                    alike = decides_alike(answer["score"], copy["score"])
                    pairs.labels(*labels, "agree" if alike else "disagree").inc()

        task = asyncio.create_task(send())
        self.mirrors.add(task)
        task.add_done_callback(self.mirrors.discard)

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
