"""Replay: decide a window of readings again with a candidate spec and hold each new
decision against the one actually made (matched by the reading's source position).

Pure: the caller reads the records. What the candidate is judged on is what the live
runner saw: the model outputs its decision recorded (or, for a new model version, that
version's answers to the same calls: ``aios.runner.replay_job``), and the time it decided
(so a reading's age, and so staleness, is what it was). A model call that had no answer
then (unavailable, stale, incomplete) has none now. Hysteresis starts unlatched at the
window's start, and each source partition keeps its own latches, as in the runner.
Nothing here acts: action ids are computed, never handed off.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from aios.api.automation_intent import AutomationIntentSpec
from aios.api.base import validation_message
from aios.api.events import ActionRequest, Decision, Reading
from aios.api.replay import ActionTally, Change, Example, Outcome, ReplayReport, RuleTally
from aios.api.runner import RunnerConfig
from aios.runner.calls import unfit
from aios.runner.loop import parse
from aios.runner.records import Position, action_request, decide_record
from aios.runner.rules import CallResult, Decider, RuleError, RuleSet
from aios.runner.state import SourcePartition

LISTED_IDS = 5
"""Action ids listed per action and direction (all are counted)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a replay holds of a decision made: its outcome, and what it was made on. A
    window's worth is held in memory, so no more than that."""

    rule: str | None
    action: str | None
    action_id: str | None
    decided_at: datetime
    outputs: Mapping[str, Mapping[str, float]]

    @classmethod
    def of(cls, decision: Decision) -> Recorded:
        return cls(
            decision.rule,
            decision.action,
            decision.action_id,
            decision.decided_at,
            decision.outputs,
        )


class ReplayError(ValueError):
    """A candidate that cannot be replayed; the message says why."""


def recorded_calls(
    spec: AutomationIntentSpec, reading: Reading, recorded: Recorded
) -> dict[str, CallResult]:
    """Each model call's result as the live runner had it when it made ``recorded``."""
    results: dict[str, CallResult] = {}
    for call in spec.models:
        state = unfit(call, reading, recorded.decided_at)
        if state is not None:
            results[call.name] = CallResult(state)
        elif call.name in recorded.outputs:
            results[call.name] = CallResult("ok", recorded.outputs[call.name])
        else:
            results[call.name] = CallResult("unavailable")
    return results


def candidate_spec(live: AutomationIntentSpec, document: Mapping[str, Any]) -> AutomationIntentSpec:
    """The spec to replay with, from a YAML document: an AutomationIntent manifest (its
    spec, whole), or spec fields laid over the live spec (each one replaces the live field
    whole: give ``rules`` and the rules are these)."""
    manifest = document.get("kind") == "AutomationIntent"
    fields = (document.get("spec") or {}) if manifest else document
    base = {} if manifest else live.model_dump(mode="json", by_alias=True, exclude_none=True)
    try:
        return AutomationIntentSpec.model_validate({**base, **fields})
    except ValidationError as error:
        message = validation_message(error)
        raise ReplayError(f"spec.{message}" if manifest else message) from error


def check_candidate(live: AutomationIntentSpec, candidate: AutomationIntentSpec) -> None:
    """The candidate may change rules, fallback, thresholds and actions, but each model it
    calls must be one the live intent called: only those outputs were recorded."""
    called = {m.name: m.model_deployment for m in live.models}
    for call in candidate.models:
        if called.get(call.name) != call.model_deployment:
            raise ReplayError(
                f"models[{call.name}]: the live intent did not call ModelDeployment "
                f"{call.model_deployment} as {call.name!r}, so no outputs of it were recorded"
            )


class Replay:
    """Accumulates the comparison of a window, reading by reading, in source order."""

    def __init__(self, live: RunnerConfig, candidate: AutomationIntentSpec, examples: int = 3):
        check_candidate(live.spec, candidate)
        self.config = live.model_copy(update={"spec": candidate})
        try:
            self.rules = RuleSet.compile(candidate)
        except RuleError as error:
            raise ReplayError(str(error)) from error
        self.examples = examples
        self.deciders: dict[SourcePartition, Decider] = {}
        self.readings = self.dead_letters = self.undecided = self.compared = 0
        self.changes: Counter[tuple[Outcome, Outcome]] = Counter()
        self.shown: dict[tuple[Outcome, Outcome], list[Example]] = defaultdict(list)
        self.rules_before: Counter[str] = Counter()
        self.rules_after: Counter[str] = Counter()
        self.ran: dict[str, set[str]] = defaultdict(set)
        self.would_run: dict[str, set[str]] = defaultdict(set)
        self.requests: dict[str, ActionRequest] = {}
        """What the candidate would hand each action it starts (for a candidate Policy)."""

    def add(
        self,
        position: Position,
        value: bytes | None,
        recorded: Recorded | None,
        answers: Mapping[str, CallResult] | None = None,
    ) -> None:
        """One record of a source topic, and the decision made on it (None: none found);
        ``answers``: model calls answered again, by a candidate model version, in place of
        what was recorded."""
        self.readings += 1
        reading = parse(value)
        if isinstance(reading, str):
            self.dead_letters += 1
            return
        if recorded is None:
            self.undecided += 1
            return
        self.compared += 1
        calls = {**recorded_calls(self.config.spec, reading, recorded), **(answers or {})}
        source = (position.topic, position.partition)
        decider = self.deciders.setdefault(source, Decider(self.rules))
        verdict = decider.decide(reading, calls, recorded.decided_at)
        now = recorded.decided_at
        again = decide_record(self.config, position, reading, verdict, calls, {}, now)
        before = Outcome(rule=recorded.rule, action=recorded.action)
        after = Outcome(rule=again.rule, action=again.action)
        self._tally(recorded, again)
        request = action_request(self.config, again)
        if request is not None:
            self.requests.setdefault(request.action_id, request)
        if before == after:
            return
        self.changes[(before, after)] += 1
        shown = self.shown[(before, after)]
        if len(shown) < self.examples:
            shown.append(
                Example(
                    sensor_id=reading.sensor_id,
                    time=reading.time,
                    source=f"{position.topic}/{position.partition}/{position.offset}",
                    metrics={str(k): v for k, v in reading.metrics.items()},
                    outputs=again.outputs,
                )
            )

    def _tally(self, recorded: Recorded, again: Decision) -> None:
        for decision, rules, actions in (
            (recorded, self.rules_before, self.ran),
            (again, self.rules_after, self.would_run),
        ):
            if decision.rule is not None:
                rules[decision.rule] += 1
            if decision.action is not None and decision.action_id is not None:
                actions[decision.action].add(decision.action_id)

    def report(self, since: datetime, until: datetime, candidate: str) -> ReplayReport:
        changes = [
            Change(before=before, after=after, count=count, examples=self.shown[(before, after)])
            for (before, after), count in self.changes.most_common()
        ]
        rules = sorted(set(self.rules_before) | set(self.rules_after))
        actions = sorted(set(self.ran) | set(self.would_run))
        return ReplayReport(
            namespace=self.config.intent.namespace,
            intent=self.config.intent.name,
            since=since,
            until=until,
            candidate=candidate,
            readings=self.readings,
            dead_letters=self.dead_letters,
            undecided=self.undecided,
            compared=self.compared,
            changed=sum(self.changes.values()),
            changes=changes,
            rules=[
                RuleTally(rule=r, before=self.rules_before[r], after=self.rules_after[r])
                for r in rules
            ],
            actions=[self._action(a) for a in actions],
        )

    def _action(self, action: str) -> ActionTally:
        before, after = self.ran[action], self.would_run[action]
        added, removed = sorted(after - before), sorted(before - after)
        return ActionTally(
            action=action,
            before=len(before),
            after=len(after),
            added=added[:LISTED_IDS],
            removed=removed[:LISTED_IDS],
            added_count=len(added),
            removed_count=len(removed),
        )
