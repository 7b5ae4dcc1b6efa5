"""Decision rules: CEL conditions over a reading and model outputs, with confidence
thresholds, hysteresis, and the deterministic fallback. Pure: no I/O, clock passed in.

Semantics (what a user can rely on):

* Each model call's state for a reading is ``ok``, ``unavailable`` (no answer: error,
  timeout, open circuit), ``stale`` (the reading is older than ``maxStalenessSeconds``),
  ``incomplete`` (the reading lacks the model's inputs) or ``unsure`` (its confidence is
  below the lowest ``minConfidence`` of the rules that use it).
* If every call a rule uses is ``ok``, the rules decide: in order, a rule whose
  ``minConfidence`` the outputs meet and whose ``when`` holds decides; none → no action.
* Otherwise the fallback rules decide (in order, over the reading and whatever outputs
  are ``ok``), and the decision records why.
* Hysteresis: once a rule has fired for a sensor it stays latched while its condition
  holds with each ``score`` it reads raised by ``hysteresis`` — a score must fall that far
  below the threshold before the rule re-arms (scores are "higher is worse").
* A condition that cannot be evaluated (e.g. a metric the reading lacks) is false.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import cel

from aios.api.automation_intent import AutomationIntentSpec
from aios.api.events import FallbackReason, Reading

READING = "reading"
CallState = Literal["ok", "unavailable", "stale", "incomplete", "unsure"]


class RuleError(ValueError):
    """A rule that cannot be compiled; the message names the rule and the CEL error."""


@dataclass(frozen=True)
class CompiledRule:
    name: str
    action: str
    program: Any
    calls: frozenset[str]
    min_confidence: float = 0.0
    hysteresis: float = 0.0


def _compile(kind: str, name: str, when: str, calls: set[str]) -> tuple[Any, frozenset[str]]:
    try:
        program = cel.compile(when)
    except ValueError as error:
        raise RuleError(f"{kind} {name}: {error}") from error
    unknown = set(program.variables()) - calls - {READING}
    if unknown:
        raise RuleError(
            f"{kind} {name}: unknown variable(s) {', '.join(sorted(unknown))}; "
            f"use 'reading' or a model call name ({', '.join(sorted(calls)) or 'none declared'})"
        )
    return program, frozenset(set(program.variables()) & calls)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[CompiledRule, ...]
    fallback: tuple[CompiledRule, ...]

    @classmethod
    def compile(cls, spec: AutomationIntentSpec) -> RuleSet:
        calls = {m.name for m in spec.models}
        rules = []
        for rule in spec.rules:
            program, used = _compile("rule", rule.name, rule.when, calls)
            rules.append(
                CompiledRule(
                    rule.name, rule.action, program, used, rule.min_confidence, rule.hysteresis
                )
            )
        fallback = []
        for fallback_rule in spec.fallback:
            program, used = _compile("fallback rule", fallback_rule.name, fallback_rule.when, calls)
            fallback.append(CompiledRule(fallback_rule.name, fallback_rule.action, program, used))
        return cls(tuple(rules), tuple(fallback))

    def min_confidence(self, call: str) -> float:
        """Below this confidence a call is unsure: no rule that reads it could decide."""
        needed = [r.min_confidence for r in self.rules if call in r.calls]
        return min(needed) if needed else 0.0


@dataclass(frozen=True)
class CallResult:
    """One model call's answer for one reading (outputs by output name)."""

    state: CallState
    outputs: Mapping[str, float] = field(default_factory=dict)

    @property
    def confidence(self) -> float | None:
        value = self.outputs.get("confidence")
        return None if value is None else float(value)


@dataclass(frozen=True)
class Verdict:
    """What the rules concluded for one reading."""

    rule: str | None
    action: str | None
    fallback: bool
    fallback_reason: FallbackReason | None
    calls: frozenset[str] = frozenset()


def reading_context(reading: Reading, now: datetime) -> dict[str, Any]:
    """The ``reading`` variable: its metrics plus identity and age."""
    metrics: dict[str, Any] = {str(name): value for name, value in reading.metrics.items()}
    return {
        **metrics,
        "sensorId": reading.sensor_id,
        "site": reading.site or "",
        "cell": reading.cell or "",
        "flags": list(reading.flags),
        "ageSeconds": (now - reading.time).total_seconds(),
    }


def _holds(program: Any, context: Mapping[str, Any]) -> bool:
    try:
        return program.execute(dict(context)) is True
    except (RuntimeError, ValueError, TypeError, KeyError):
        return False


def _worst(states: list[CallState]) -> FallbackReason:
    order: tuple[FallbackReason, ...] = ("unavailable", "stale", "incomplete", "unsure")
    for state in order:
        if state in states:
            return state
    return "unsure"


class Decider:
    """Applies a rule set reading by reading, keeping the hysteresis latches."""

    def __init__(self, rules: RuleSet, latched: set[tuple[str, str]] | None = None) -> None:
        self.rules = rules
        self.latched: set[tuple[str, str]] = latched if latched is not None else set()

    def decide(self, reading: Reading, calls: Mapping[str, CallResult], now: datetime) -> Verdict:
        context: dict[str, Any] = {READING: reading_context(reading, now)}
        context.update({name: dict(r.outputs) for name, r in calls.items() if r.state == "ok"})
        states = {name: self._state(name, result) for name, result in calls.items()}
        blocked: list[CallState] = []
        for rule in self.rules.rules:
            rule_states = [states.get(c, "unavailable") for c in rule.calls]
            if any(s != "ok" for s in rule_states):
                blocked += [s for s in rule_states if s != "ok"]
                continue
            confidences = [calls[c].confidence for c in rule.calls]
            if any(c is None or c < rule.min_confidence for c in confidences):
                continue
            if self._fires(rule, reading.sensor_id, context):
                return Verdict(rule.name, rule.action, False, None, rule.calls)
        if not blocked and self.rules.rules:
            return Verdict(None, None, False, None)
        reason: FallbackReason = _worst(blocked) if blocked else "no-model"
        for rule in self.rules.fallback:
            if _holds(rule.program, context):
                return Verdict(rule.name, rule.action, True, reason, rule.calls)
        return Verdict(None, None, True, reason)

    def _state(self, name: str, result: CallResult) -> CallState:
        if result.state != "ok":
            return result.state
        confidence = result.confidence
        if confidence is None or confidence < self.rules.min_confidence(name):
            return "unsure"
        return "ok"

    def _fires(self, rule: CompiledRule, sensor: str, context: dict[str, Any]) -> bool:
        key = (sensor, rule.name)
        if key in self.latched:
            relaxed = {
                k: (
                    {**v, "score": v["score"] + rule.hysteresis}
                    if k in rule.calls and "score" in v
                    else v
                )
                for k, v in context.items()
            }
            if _holds(rule.program, relaxed):
                return True
            self.latched.discard(key)
            return False
        if _holds(rule.program, context):
            self.latched.add(key)
            return True
        return False
