"""Each aios object against its model in ``aios.api``: the API server's schema and rules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from aios.api import API_VERSION, GROUP
from aios.cli.validate.documents import MODELS, Document, Problem, display_path


def schema_problems(document: Document, base: Path, namespace: str) -> list[Problem]:
    body = document.body
    kind, name = document.kind, document.name
    ns = (body.get("metadata") or {}).get("namespace") or namespace
    file = display_path(document.file, base)
    api_version = str(body.get("apiVersion", ""))

    def problem(message: str, path: Sequence[str | int] = (), severity: str = "error") -> Problem:
        dotted = _dotted(path) or None
        return Problem(severity, file, document.line(path), message, kind, name, ns, dotted)

    if not api_version or not kind:
        return [problem("not a Kubernetes object: apiVersion and kind are required")]
    if not name and not (body.get("metadata") or {}).get("generateName"):
        return [problem("metadata.name is required", ["metadata"])]
    if api_version.split("/")[0] != GROUP:
        return []
    if api_version != API_VERSION:
        return [problem(f"{api_version} is not served; use {API_VERSION}", ["apiVersion"])]
    model = MODELS.get(kind)
    if model is None:
        return [problem(f"{GROUP} has no kind {kind} (kinds: {', '.join(sorted(MODELS))})")]
    try:
        model.model_validate(body)
    except ValidationError as error:
        return [problem(f"{_dotted(e['loc'])}: {e['msg']}", list(e["loc"])) for e in error.errors()]
    return []


def _dotted(path: Sequence[str | int]) -> str:
    """A field path as the API server writes it: spec.sources[0].name (pydantic marks a
    map's offending key with a last part "[key]")."""
    parts = [p for p in path if p != "[key]"]
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)[1:]
