"""``aios-intent-replay``: a rollout's replay gate for one intent, run as a Job beside the
intent's runners (their image, Kafka user and configuration; only the command differs).

It decides the intent's readings of the last ``--since-seconds`` again, with the outputs a
new model version gives for them in place of those recorded for its ModelDeployment's
calls, and holds each decision against the one made. It writes nothing to Kafka and starts
no action. The whole report is printed (the Job's log keeps it); its counts go to the
termination message, which the rollout reads from the pod's status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaException

from aios.api.automation_intent import ModelCall
from aios.api.events import Reading
from aios.api.replay import ReplayReport
from aios.api.runner import RunnerConfig
from aios.connectors.inference import InferenceClient, InferenceError
from aios.runner import history
from aios.runner.calls import features, rows
from aios.runner.loop import parse
from aios.runner.records import Position
from aios.runner.replay import Recorded, Replay, ReplayError
from aios.runner.rules import CallResult

BATCH = 256
"""Readings per inference request to the new version."""
TERMINATION_LOG = Path("/dev/termination-log")

Record = tuple[Position, bytes | None, Recorded | None]


@dataclass(frozen=True)
class Candidate:
    """The new version, as its rollout serves it beside the stable one (no live traffic)."""

    deployment: str
    version: str
    url: str
    model: str
    protocol: Literal["http", "grpc"] = "http"

    @property
    def label(self) -> str:
        return f"modeldeployment/{self.deployment}@{self.version}"


async def answers(
    client: InferenceClient, candidate: Candidate, calls: Sequence[ModelCall], batch: list[Record]
) -> list[dict[str, CallResult]]:
    """The new version's answer to each call the live version answered: a reading the
    live one could not be asked about (stale, incomplete) or did not answer keeps that
    state, so what differs is the answers alone."""
    found: list[dict[str, CallResult]] = [{} for _ in batch]
    parsed = [parse(value) for _, value, _ in batch]
    for call in calls:
        sent = [
            (i, reading)
            for i, ((_, _, recorded), reading) in enumerate(zip(batch, parsed, strict=True))
            if isinstance(reading, Reading)
            and recorded is not None
            and call.name in recorded.outputs
        ]
        if not sent:
            continue
        outputs = await client.infer(
            candidate.model,
            {"features": features([reading for _, reading in sent], call.features)},
            timeout=max(call.timeout_ms / 1000, 10.0),
        )
        for (i, _), answer in zip(sent, rows(outputs, len(sent)), strict=True):
            found[i][call.name] = CallResult("ok", answer)
    return found


async def replay(
    bootstrap: str, config: RunnerConfig, candidate: Candidate, since: datetime, until: datetime
) -> ReplayReport:
    """The report of the window decided again with ``candidate``'s answers."""
    calls = [c for c in config.spec.models if c.model_deployment == candidate.deployment]
    if not calls:
        raise ReplayError(
            f"intent {config.intent.name} calls no model of ModelDeployment {candidate.deployment}"
        )
    replayer = Replay(config, config.spec)
    found = history.window(bootstrap, config, since, until)
    made = history.decisions(bootstrap, config, found)
    async with InferenceClient(candidate.url, candidate.protocol) as client:
        batch: list[Record] = []
        for position, value in history.readings(bootstrap, found):
            batch.append((position, value, made.get(position)))
            if len(batch) == BATCH:
                await _decide(replayer, client, candidate, calls, batch)
                batch = []
        await _decide(replayer, client, candidate, calls, batch)
    return replayer.report(since, until, candidate.label)


async def _decide(
    replayer: Replay,
    client: InferenceClient,
    candidate: Candidate,
    calls: Sequence[ModelCall],
    batch: list[Record],
) -> None:
    for record, answered in zip(batch, await answers(client, candidate, calls, batch), strict=True):
        replayer.add(*record, answered)


def terminate(summary: dict[str, Any], path: Path = TERMINATION_LOG) -> None:
    """What the rollout reads from the pod's status (Kubernetes keeps 4 KiB of it)."""
    with contextlib.suppress(OSError):  # not in a pod: the printed report is all there is
        path.write_text(json.dumps(summary)[:4000])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aios-intent-replay", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="RunnerConfig JSON file.")
    window = parser.add_mutually_exclusive_group(required=True)
    window.add_argument("--since-seconds", type=int, help="The window: the last N seconds.")
    window.add_argument("--since", type=datetime.fromisoformat, help="The window's start.")
    parser.add_argument("--until", type=datetime.fromisoformat, help="Its end (default: now).")
    parser.add_argument("--deployment", required=True, help="The ModelDeployment rolled out.")
    parser.add_argument("--version", required=True, help="Its new version.")
    parser.add_argument("--url", required=True, help="The new version's V2 endpoint.")
    parser.add_argument("--model", required=True, help="Model name in V2 requests.")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("AIOS_KAFKA_BOOTSTRAP") or parser.error("set AIOS_KAFKA_BOOTSTRAP")
    config = RunnerConfig.model_validate_json(args.config.read_text())
    candidate = Candidate(args.deployment, args.version, args.url, args.model, args.protocol)
    until = args.until or datetime.now(UTC)
    since = args.since or until - timedelta(seconds=args.since_seconds)
    try:
        report = asyncio.run(replay(bootstrap, config, candidate, since, until))
    except history.WindowError as error:  # nothing to compare: not the new version's fault
        terminate({"compared": 0, "changed": 0, "message": str(error)})
        print(error)
        return
    except (ReplayError, InferenceError, KafkaException, TimeoutError) as error:
        terminate({"error": f"{type(error).__name__}: {error}"})
        print(error, file=sys.stderr)
        raise SystemExit(1) from error
    terminate({"compared": report.compared, "changed": report.changed})
    print(report.model_dump_json(by_alias=True, exclude_none=True))


if __name__ == "__main__":
    main()
