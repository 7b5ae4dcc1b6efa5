"""``aiosctl status``: every aios object with its conditions, the odd ones first.

Odd means: not Ready, not yet reconciled at its current generation, or Ready with a
condition that says something is wrong (``Degraded``, ``BufferPressure``, ``RolledBack``
true, or another condition false; Unknown only says nothing is known yet). ``--wait``
follows the objects until all are Ready (a progress bar on a terminal) and fails after
``--timeout``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import typer
from kubernetes import client
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from aios.api import GROUP, KINDS, VERSION
from aios.cli.approvals import Kubeconfig, api
from aios.cli.output import Format, Output, emit

ABNORMAL_WHEN_TRUE = frozenset({"Degraded", "BufferPressure", "RolledBack"})
"""Conditions whose True means trouble (Kubernetes' abnormal-true polarity)."""
NEUTRAL = frozenset({"Progressing", "ScalingActive"})
"""Conditions that only say something is under way, or how it runs."""

out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


@dataclass(frozen=True)
class Row:
    """One aios object as ``status`` shows it."""

    kind: str
    namespace: str
    name: str
    ready: str  # True | False | Unknown
    reason: str
    message: str
    generation: int
    observed_generation: int | None
    odd: list[dict[str, str]]  # the conditions that say something is wrong
    conditions: list[dict[str, Any]]
    created: str

    @property
    def reconciled(self) -> bool:
        return self.observed_generation == self.generation

    @property
    def rank(self) -> int:
        """0 not Ready, 1 not reconciled at this generation, 2 Ready but odd, 3 fine."""
        if self.ready != "True":
            return 0
        if not self.reconciled:
            return 1
        return 2 if self.odd else 3

    def document(self) -> dict[str, Any]:
        return {**asdict(self), "reconciled": self.reconciled}


def is_odd(condition: Mapping[str, Any]) -> bool:
    kind, status = condition.get("type", ""), condition.get("status")
    if kind in NEUTRAL:
        return False
    return status == "True" if kind in ABNORMAL_WHEN_TRUE else status == "False"


def row(kind: str, obj: Mapping[str, Any]) -> Row:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    conditions = list(status.get("conditions") or [])
    ready: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    odd = [
        {k: str(c.get(k, "")) for k in ("type", "status", "reason", "message")}
        for c in conditions
        if c.get("type") != "Ready" and is_odd(c)
    ]
    return Row(
        kind=kind,
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        ready=ready.get("status", "Unknown"),
        reason=ready.get("reason", "NotReconciled" if not status else ""),
        message=ready.get("message", "" if status else "The operator has not reported yet."),
        generation=int(meta.get("generation") or 0),
        observed_generation=status.get("observedGeneration"),
        odd=odd,
        conditions=conditions,
        created=meta.get("creationTimestamp", ""),
    )


def ordered(rows: Sequence[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.rank, r.kind, r.namespace, r.name))


def collect(api_client: client.ApiClient, namespace: str | None) -> list[Row]:
    objects = client.CustomObjectsApi(api_client)
    rows = []
    for model in KINDS:
        plural = model.crd.plural
        listed: Any = (
            objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
            if namespace
            else objects.list_cluster_custom_object(GROUP, VERSION, plural)
        )
        rows += [row(model.crd.kind, item) for item in listed["items"]]
    return ordered(rows)


def age(created: str, now: datetime) -> str:
    if not created:
        return ""
    seconds = int((now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


STYLE = {0: "red", 1: "yellow", 2: "yellow", 3: "green"}


def table(rows: Sequence[Row], now: datetime) -> Table:
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("KIND", "NAMESPACE", "NAME", "READY", "REASON", "AGE"):
        grid.add_column(column, no_wrap=True)
    grid.add_column("WHY", overflow="fold")
    for r in rows:
        why = r.message if r.rank == 0 else ""
        if r.rank == 1:
            why = f"generation {r.generation} not reconciled yet (observed {r.observed_generation})"
        notes = [f"{c['type']}={c['status']} {c['reason']}: {c['message']}" for c in r.odd]
        why = "\n".join(x for x in [why, *notes] if x)
        style = STYLE[r.rank]
        grid.add_row(
            r.kind,
            r.namespace,
            r.name,
            f"[{style}]{r.ready}[/]",
            r.reason,
            age(r.created, now),
            why,
        )
    return grid


def summary(rows: Sequence[Row]) -> str:
    ready = sum(r.rank == 3 for r in rows)
    return f"{ready}/{len(rows)} ready and healthy"


Namespace = typer.Option(
    None, "--namespace", "-n", help="One namespace (default: every namespace)."
)
Wait = typer.Option(False, "--wait", "-w", help="Wait until every object is Ready and healthy.")
Timeout = typer.Option(600.0, "--timeout", help="Seconds to wait (--wait).")


def status(
    namespace: str | None = Namespace,
    wait: bool = Wait,
    timeout: float = Timeout,
    kubeconfig: str | None = Kubeconfig,
    output: Output = Format,
) -> None:
    """Every aios object with its conditions, the odd ones first."""
    api_client = api(kubeconfig, None, None)
    try:
        if wait:
            rows = wait_ready(api_client, namespace, timeout)
        else:
            rows = collect(api_client, namespace)
    except client.ApiException as error:
        err.print(f"[red]cannot list aios objects[/]: {error.status} {error.reason}")
        raise typer.Exit(2) from error
    if output is Output.text:
        if rows:
            out.print(table(rows, datetime.now(UTC)))
        out.print(summary(rows) if rows else "no aios objects")
    else:
        emit({"items": [r.document() for r in rows], "summary": summary(rows)}, output)
    if wait and any(r.rank < 3 for r in rows):
        raise typer.Exit(1)


def wait_ready(api_client: client.ApiClient, namespace: str | None, timeout: float) -> list[Row]:
    """Poll until every object is Ready and healthy (and there is at least one)."""
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("waiting for aios objects", total=None)
        while True:
            rows = collect(api_client, namespace)
            healthy = sum(r.rank == 3 for r in rows)
            pending = next((r for r in rows if r.rank < 3), None)
            label = f"{pending.kind}/{pending.name}" if pending else "all"
            bar.update(
                task,
                total=len(rows) or None,
                completed=healthy,
                description=f"{healthy}/{len(rows)} ready, waiting for {label}",
            )
            if (rows and pending is None) or time.monotonic() > deadline:
                return rows
            time.sleep(1)
