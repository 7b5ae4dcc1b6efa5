"""``aiosctl audit``: verify the hash-chained audit log and trace an action's lineage.

The log is read from Kafka (``aios.audit.log`` at ``$AIOS_KAFKA_BOOTSTRAP``) or from a
local copy (``--file``, one record per line, as the appender mirrors it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from confluent_kafka import KafkaException
from rich.console import Console

from aios.cli.output import Format, Output
from aios.cli.output import emit as _emit
from aios.connectors import audit

app = typer.Typer(help="Verify the audit log; trace an action.", no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True)


Bootstrap = typer.Option(
    None, "--bootstrap", help="Kafka bootstrap servers.", envvar="AIOS_KAFKA_BOOTSTRAP"
)
Topic = typer.Option(audit.LOG_TOPIC, "--topic", help="The audit log topic.")
File = typer.Option(None, "--file", help="Read a local copy of the log instead of Kafka.")


def _raw(bootstrap: str | None, topic: str, file: Path | None) -> list[str]:
    if file is not None:
        return audit.read_file(file)
    if not bootstrap:
        err.print(
            "[red]no Kafka bootstrap servers[/]: pass --bootstrap or set AIOS_KAFKA_BOOTSTRAP"
        )
        raise typer.Exit(2)
    try:
        return audit.read_raw_log(bootstrap, topic)
    except (KafkaException, TimeoutError) as error:
        err.print(f"[red]cannot read the audit log {topic} at {bootstrap}[/]: {error}")
        raise typer.Exit(2) from error


@app.command()
def verify(
    bootstrap: str | None = Bootstrap,
    topic: str = Topic,
    file: Path | None = File,
    output: Output = Format,
) -> None:
    """Check every record's hash and link; exit 1 naming the first bad record."""
    result = audit.verify(_raw(bootstrap, topic, file))
    _emit(
        {
            "ok": result.ok,
            "records": result.count,
            "firstBad": result.first_bad,
            "reason": result.reason,
        },
        output,
    )
    if output is Output.text:
        if result.ok:
            out.print(f"[green]OK[/] {result.reason}")
        else:
            out.print(f"[red]TAMPERED[/] {result.reason}")
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def trace(
    action_id: str = typer.Argument(..., help="The action's id (its idempotency key)."),
    bootstrap: str | None = Bootstrap,
    topic: str = Topic,
    file: Path | None = File,
    output: Output = Format,
) -> None:
    """The lineage of one action, from sensor readings to its result."""
    records = [audit.AuditRecord.parse(raw) for raw in _raw(bootstrap, topic, file)]
    try:
        lineage = audit.trace(records, action_id)
    except LookupError as error:
        err.print(f"[red]{error}[/]")
        raise typer.Exit(1) from error
    _emit(lineage, output)
    if output is Output.text:
        for label, value in lines(lineage):
            out.print(f"[bold]{label:<16}[/] {value}", highlight=False)


def lines(lineage: dict[str, Any]) -> list[tuple[str, str]]:
    """The lineage as labelled lines, in causal order."""
    readings, edge, kafka = lineage["readings"], lineage["edge"], lineage["kafka"]
    model, decision = lineage["model"], lineage["decision"]
    intent = lineage.get("intent") or {}
    action = lineage.get("action") or {}
    rows = [
        (
            "action",
            f"{lineage['actionId']}  {intent.get('namespace')}/{intent.get('name')} → "
            f"{action.get('name')} ({action.get('type')} {action.get('target')})",
        ),
        (
            "sensor readings",
            f"{', '.join(readings['eventIds']) or '-'}  "
            f"sensors {', '.join(readings['sensors']) or '-'}",
        ),
        (
            "edge gateway",
            f"{edge['gateway']}  config generation {edge['configGeneration']}  "
            f"filter chain {edge['filterChain']}" + _seq(edge["record"]),
        ),
        ("kafka", f"{kafka['topic']}[{kafka['partition']}]@{kafka['offset']}"),
    ]
    if model is None:
        rows.append(("model", "none (deterministic rule)"))
    else:
        stage = "canary" if model.get("canary") else "stable"
        promoted = model.get("promotion")
        rows.append(
            (
                "model",
                f"{model.get('name')} {model.get('version')} ({stage})  "
                f"score {model.get('score')}  confidence {model.get('confidence')}"
                + (
                    f"  {promoted['kind']} approved by {promoted['approver']}"
                    f"{_seq(promoted['record'])}"
                    if promoted
                    else ""
                ),
            )
        )
    rule = decision["rule"]
    rows.append(
        (
            "decision",
            f"fallback {rule} ({decision.get('fallbackReason')})"
            if decision["fallback"]
            else f"rule {rule}",
        )
    )
    for item in lineage["policyDecisions"]:
        rows.append(("policy decision", f"{item['decisionId']}  ({item['step']})"))
    rows.append(("approver", lineage["approver"] or "-"))
    rows.append(("result", json.dumps(lineage["result"])))
    return rows


def _seq(record: int | None) -> str:
    return f"  [audit #{record}]" if record is not None else ""
