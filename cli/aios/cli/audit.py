"""``aiosctl audit``: verify the hash-chained audit log, trace an action's lineage, and
export the log for whoever checks it away from the cluster.

The log is read from Kafka (``aios.audit.log`` at ``$AIOS_KAFKA_BOOTSTRAP``) or from a
local copy (``--file``, one record per line, as the appender mirrors it and ``export``
writes it), and held against the newest checkpoint the appender signed
(``aios.connectors.audit_checkpoint``), which catches what the chain alone cannot: records
missing at the tail, a log chained afresh.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from confluent_kafka import KafkaException
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException
from rich.console import Console

from aios.cli.output import Format, Output
from aios.cli.output import emit as _emit
from aios.connectors import audit
from aios.connectors import audit_checkpoint as checkpoints
from aios.connectors.kube import api_client
from aios.workflows.action_io import REQUESTED

app = typer.Typer(
    help="Verify the audit log; trace an action; export the log.", no_args_is_help=True
)
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


Namespace = typer.Option(
    "aios-system",
    "--namespace",
    "-n",
    help=f"aios's namespace, whose ConfigMap {checkpoints.CONFIGMAP} holds the signed checkpoints.",
)
PublicKeys = typer.Option(
    [],
    "--public-key",
    help="A public key (PEM) you trust to sign checkpoints; repeat while keys rotate. "
    "None: the key the checkpoint carries (pin yours: it proves who signed).",
)
CheckpointFile = typer.Option(
    None, "--checkpoint", help="A signed checkpoint kept earlier, instead of the cluster's."
)
NoCheckpoint = typer.Option(
    False, "--no-checkpoint", help="Check the chain alone (a truncated log goes unnoticed)."
)
Read = TypeVar("Read")
TAIL_WAIT_SECONDS = 10.0
"""How long a log that ends before the checkpoint is read again: the appender signs right
after its transaction commits, a moment before the records are readable."""


def _read_until(read: Callable[[], Read], enough: Callable[[Read], bool], seconds: float) -> Read:
    """What ``read`` returns, read again every half second for up to ``seconds`` until it
    holds ``enough`` (the log only grows: what it lacks now may be appended a moment later)."""
    found = read()
    deadline = time.monotonic() + seconds
    while not enough(found) and time.monotonic() < deadline:
        time.sleep(0.5)
        found = read()
    return found


def _raw_reaching(
    bootstrap: str | None,
    topic: str,
    file: Path | None,
    signed: checkpoints.SignedCheckpoint | None,
) -> list[str]:
    """The log, read from Kafka again for up to ``TAIL_WAIT_SECONDS`` while it ends before
    the checkpoint read first (the log only grows, so it must reach what was signed)."""
    if signed is None:
        return _raw(bootstrap, topic, file)
    seq = signed.checkpoint.seq
    wait = TAIL_WAIT_SECONDS if file is None else 0.0
    return _read_until(lambda: _raw(bootstrap, topic, file), lambda raw: len(raw) > seq, wait)


def _checkpoint(log: str, namespace: str, file: Path | None) -> checkpoints.SignedCheckpoint | None:
    try:
        if file is not None:
            return checkpoints.SignedCheckpoint.from_json(file.read_text())
        return checkpoints.ConfigMapStore(api_client(), namespace).read(log)
    except (ValueError, OSError, ApiException, ConfigException) as error:
        err.print(f"[red]cannot read the signed checkpoint[/]: {error}")
        raise typer.Exit(2) from error


def _trusted(paths: list[Path]) -> dict[str, Ed25519PublicKey] | None:
    if not paths:
        return None
    try:
        keys = [checkpoints.load_public_key(path.read_bytes()) for path in paths]
    except (ValueError, OSError) as error:
        err.print(f"[red]cannot read a --public-key[/]: {error}")
        raise typer.Exit(2) from error
    return {checkpoints.key_id(key): key for key in keys}


@app.command()
def verify(
    bootstrap: str | None = Bootstrap,
    topic: str = Topic,
    file: Path | None = File,
    namespace: str = Namespace,
    public_key: list[Path] = PublicKeys,
    checkpoint: Path | None = CheckpointFile,
    no_checkpoint: bool = NoCheckpoint,
    output: Output = Format,
) -> None:
    """Check every record's hash and link, and the log against its newest signed
    checkpoint (a local copy: only with --checkpoint); exit 1 naming what is wrong."""
    trusted = _trusted(public_key)
    # a local copy is held against a checkpoint only when given one to hold it against
    wanted = not no_checkpoint and (file is None or checkpoint is not None)
    signed = _checkpoint(topic, namespace, checkpoint) if wanted else None  # before the log
    raw = _raw_reaching(bootstrap, topic, file, signed)
    chain = audit.verify(raw)
    held = _held(chain, signed, namespace, trusted) if wanted else None
    ok = chain.ok and (held is None or held.ok)
    report: dict[str, Any] = {
        "ok": ok,
        "records": chain.count,
        "firstBad": chain.first_bad,
        "reason": chain.reason if not chain.ok or held is None or held.ok else held.reason,
        "checkpoint": None
        if held is None
        else {
            "ok": held.ok,
            "reason": held.reason,
            "missing": held.missing,
            **(
                {
                    "seq": signed.checkpoint.seq,
                    "time": signed.checkpoint.time,
                    "keyId": signed.key_id,
                    "pinned": trusted is not None,
                }
                if signed is not None
                else {}
            ),
        },
    }
    _emit(report, output)
    if output is Output.text:
        mark = "[green]OK[/]" if chain.ok else "[red]TAMPERED[/]"
        out.print(f"{mark} {chain.reason}")
        if held is not None and chain.ok:
            mark = "[green]OK[/]" if held.ok else "[red]TAMPERED[/]"
            unpinned = held.ok and trusted is None
            pin = " (the key it carries: pin yours with --public-key)" if unpinned else ""
            out.print(f"{mark} {held.reason}{pin}")
    if not ok:
        raise typer.Exit(1)


def _held(
    chain: audit.VerifyResult,
    signed: checkpoints.SignedCheckpoint | None,
    namespace: str,
    trusted: dict[str, Ed25519PublicKey] | None,
) -> checkpoints.CheckResult | None:
    """The log against the checkpoint asked for; a cluster without one fails, since a
    truncated log would pass (None: the chain is broken, which says enough)."""
    if signed is None:
        return checkpoints.CheckResult(
            False,
            f"no signed checkpoint in ConfigMap {namespace}/{checkpoints.CONFIGMAP}: a "
            "truncated log would go unnoticed (--no-checkpoint checks the chain alone)",
        )
    if not chain.ok:
        return None
    return checkpoints.check(chain.records, signed, trusted)


ExportTo = typer.Argument(
    ..., metavar="FILE", help="The file to write: one record per line, as stored."
)
ExportedCheckpoint = typer.Option(
    None, "--checkpoint", help="Also write the newest signed checkpoint here; the copy reaches it."
)


@app.command()
def export(
    to: Path = ExportTo,
    checkpoint: Path | None = ExportedCheckpoint,
    bootstrap: str | None = Bootstrap,
    topic: str = Topic,
    namespace: str = Namespace,
    output: Output = Format,
) -> None:
    """Copy the log to a file, for a regulator or an archive: `verify --file` checks the
    copy away from the cluster (with `--checkpoint`, against the checkpoint exported with
    it, which proves no record was dropped from its tail)."""
    signed = _checkpoint(topic, namespace, None) if checkpoint is not None else None
    if checkpoint is not None and signed is None:
        err.print(f"[red]no signed checkpoint in ConfigMap {namespace}/{checkpoints.CONFIGMAP}[/]")
        raise typer.Exit(1)
    raw = _raw_reaching(bootstrap, topic, None, signed)
    to.write_text("".join(f"{record}\n" for record in raw), encoding="utf-8")
    if checkpoint is not None and signed is not None:
        checkpoint.write_text(signed.to_json(), encoding="utf-8")
    seq = signed.checkpoint.seq if signed is not None else None
    _emit({"records": len(raw), "file": str(to), "checkpointSeq": seq}, output)
    if output is Output.text:
        held = f", the checkpoint of seq {seq} to {checkpoint}" if signed is not None else ""
        out.print(f"exported {len(raw)} records of {topic} to {to}{held}", highlight=False)


@app.command()
def trace(
    action_id: str = typer.Argument(..., help="The action's id (its idempotency key)."),
    bootstrap: str | None = Bootstrap,
    topic: str = Topic,
    file: Path | None = File,
    wait: float = typer.Option(
        0.0,
        "--wait",
        min=0.0,
        help="Seconds to read the log again until it holds policy's answer to the action: "
        "an action is audited a moment after it starts (as `aiosctl act` returns), and "
        "decided a moment later. What the log holds then is printed.",
    ),
    output: Output = Format,
) -> None:
    """The lineage of one action, from sensor readings to its result."""
    records = _read_until(
        lambda: [audit.AuditRecord.parse(raw) for raw in _raw(bootstrap, topic, file)],
        lambda records: _past_request(records, action_id),
        wait,
    )
    try:
        lineage = audit.trace(records, action_id)
    except LookupError as error:
        hint = (
            f" within {wait:g}s"
            if wait
            else " yet: an action is audited a moment after it starts, and --wait SECONDS "
            "reads the log again until it is"
        )
        err.print(f"[red]{error}[/]{hint}", highlight=False)
        raise typer.Exit(1) from error
    _emit(lineage, output)
    if output is Output.text:
        for label, value in lines(lineage):
            out.print(f"[bold]{label:<16}[/] {value}", highlight=False)


def _past_request(records: list[audit.AuditRecord], action_id: str) -> bool:
    """Whether the log holds a step of the action after its request: the first step that
    follows ``requested`` is policy's answer (authorized, denied, or OPA unavailable)."""
    steps = audit.action_steps(records, action_id)
    return any(step.details.get("step") != REQUESTED for step in steps)


def lines(lineage: dict[str, Any]) -> list[tuple[str, str]]:
    """The lineage as labelled lines, in causal order."""
    intent = lineage.get("intent") or {}
    action = lineage.get("action") or {}
    rows = [
        (
            "action",
            f"{lineage['actionId']}  {intent.get('namespace')}/{intent.get('name')} → "
            f"{action.get('name')} ({action.get('type')} {action.get('target')})",
        ),
    ]
    if lineage.get("requestedBy"):
        rows.append(("requested by", f"{lineage['requestedBy']}: {lineage.get('reason')}"))
        if lineage.get("reverts"):
            rows.append(("reverts", lineage["reverts"]))
    else:
        rows += decided_lines(lineage)
    for item in lineage["policyDecisions"]:
        rows.append(("policy decision", f"{item['decisionId']}  ({item['step']})"))
    rows.append(("approver", lineage["approver"] or "-"))
    rows.append(("result", json.dumps(lineage["result"])))
    if lineage.get("revertedBy"):
        rows.append(("reverted by", lineage["revertedBy"]))
    if lineage.get("traceId"):
        rows.append(("trace", trace_link(lineage["traceId"])))
    return rows


def decided_lines(lineage: dict[str, Any]) -> list[tuple[str, str]]:
    """What led a runner to act: readings, gateway, Kafka position, model, rule."""
    readings, edge, kafka = lineage["readings"], lineage["edge"], lineage["kafka"]
    model, decision = lineage["model"], lineage["decision"]
    rows = [
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
    return rows


def trace_link(trace_id: str) -> str:
    """The trace id, and where its spans are (the site's Jaeger, if ``AIOS_JAEGER_URL`` names
    one; else whatever backend the chart's ``tracing.otlpEndpoint`` feeds)."""
    jaeger = os.environ.get("AIOS_JAEGER_URL")
    if jaeger:
        return f"{trace_id}  {jaeger.rstrip('/')}/api/traces/{trace_id}"
    return f"{trace_id}  (search your tracing backend for it)"


def _seq(record: int | None) -> str:
    return f"  [audit #{record}]" if record is not None else ""
