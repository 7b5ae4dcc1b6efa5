"""``aiosctl validate``: every target read, checked and reported."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress

from aios.cli.output import Output, emit
from aios.cli.validate.documents import (
    Format,
    Problem,
    Target,
    display_path,
    find_targets,
    load,
)
from aios.cli.validate.policies import policy_problems
from aios.cli.validate.schema import schema_problems
from aios.connectors import opa

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True)


def validate_paths(
    paths: Sequence[Path], policies_dir: Path, namespace: str, progress: bool = False
) -> tuple[list[Target], list[Problem]]:
    base = Path.cwd().resolve()
    targets = find_targets(paths)
    loaded: list[Target] = []
    problems: list[Problem] = []
    with Progress(console=err, transient=True, disable=not progress) as bar:
        task = bar.add_task("validating", total=len(targets))
        for path in targets:
            bar.update(task, description=f"validating {display_path(path, base)}")
            target = load(path, base)
            for document in target.documents:
                target.problems += schema_problems(document, base, namespace)
            target.problems += policy_problems(target.documents, policies_dir, base, namespace)
            loaded.append(target)
            problems += target.problems
            bar.advance(task)
    # A base built on its own and inside an overlay may report one problem twice.
    return loaded, list(dict.fromkeys(problems))


def report(targets: list[Target], problems: list[Problem], output: Format) -> None:
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    objects = sum(len(t.documents) for t in targets)
    if output in (Format.json, Format.yaml):
        emit(
            {
                "ok": errors == 0,
                "targets": len(targets),
                "objects": objects,
                "errors": errors,
                "warnings": warnings,
                "problems": [asdict(p) for p in problems],
            },
            Output(output.value),
        )
        return
    for p in problems:
        if output is Format.github:
            line = f",line={p.line}" if p.line else ""
            text = f"{p.subject()}{p.message}".replace("%", "%25").replace("\n", "%0A")
            print(f"::{p.severity} file={p.file}{line},title=aiosctl validate::{text}")
        else:
            colour = "red" if p.severity == "error" else "yellow"
            out.print(
                f"{p.location()}: [{colour}]{p.severity}[/]: {p.subject()}{p.message}",
                markup=True,
            )
    verdict = "[red]FAILED[/]" if errors else "[green]OK[/]"
    out.print(
        f"{verdict} {len(targets)} target(s), {objects} object(s): "
        f"{errors} error(s), {warnings} warning(s)"
    )


Paths = typer.Argument(..., exists=True, help="Files or directories (kustomizations are built).")
Policies = typer.Option(
    None, "--policies", help="The Rego library (default: $AIOS_POLICY_LIBRARY or policies/)."
)
CiFormat = typer.Option(
    None,
    "--output",
    "-o",
    help="text, json, yaml or github (default: github inside GitHub Actions, else text).",
)


def validate(
    paths: list[Path] = Paths,
    policies: Path | None = Policies,
    namespace: str = typer.Option(
        "default", "--namespace", "-n", help="Namespace of objects that name none."
    ),
    output: Format | None = CiFormat,
) -> None:
    """Check manifests offline against the aios schemas and the Policies they ship with;
    exit 1 on any error (for a GitOps repository's CI)."""
    chosen = output or (Format.github if os.environ.get("GITHUB_ACTIONS") else Format.text)
    library_dir = (policies or opa.library_dir()).resolve()
    if not (library_dir / "system" / "system.rego").is_file():
        err.print(f"[red]no Rego library in {library_dir}[/] (expected system/system.rego)")
        raise typer.Exit(2)
    targets, problems = validate_paths(
        paths, library_dir, namespace, progress=chosen is Format.text and err.is_terminal
    )
    report(targets, problems, chosen)
    if any(p.severity == "error" for p in problems):
        raise typer.Exit(1)
