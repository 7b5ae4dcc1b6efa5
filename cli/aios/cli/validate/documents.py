"""What validation reads: YAML documents with their line numbers, kustomize targets,
and the problems it reports on them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from aios.api import KINDS

KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MODELS = {model.crd.kind: model for model in KINDS}


class Format(StrEnum):
    """Text, JSON, YAML, or GitHub Actions annotations (the default inside GitHub Actions)."""

    text = "text"
    json = "json"
    yaml = "yaml"
    github = "github"


@dataclass(frozen=True)
class Problem:
    severity: str  # error | warning
    file: str
    line: int | None
    message: str
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None
    field: str | None = None
    source: str = "schema"  # schema | policy | yaml | kustomize

    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def subject(self) -> str:
        if self.kind is None:
            return ""
        namespace = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {namespace}{self.name}: "


@dataclass
class Document:
    """One manifest, where it came from, and its YAML nodes (for line numbers)."""

    body: dict[str, Any]
    file: Path
    node: yaml.Node | None

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name", ""))

    def line(self, path: Sequence[str | int] = ()) -> int | None:
        """The 1-based line of the deepest part of ``path`` present in the source."""
        node = self.node
        if node is None:
            return None
        found = node.start_mark.line + 1
        for part in path:
            child = _child(node, part)
            if child is None:
                break
            key, node = child
            found = key.start_mark.line + 1
        return found


@dataclass
class Target:
    """What is validated together: one kustomization's build, or one plain file."""

    path: Path
    documents: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if key.value == part:
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part], node.value[part]
    return None


def read_documents(path: Path, text: str) -> list[Document]:
    """The mappings of a YAML stream, each with its nodes."""
    documents = []
    for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if node is None:
            continue
        body = yaml.SafeLoader(yaml.serialize(node)).get_single_data()
        if isinstance(body, dict):
            documents.append(Document(body, path, node))
    return documents


def kustomization_file(directory: Path) -> Path | None:
    return next((directory / n for n in KUSTOMIZATIONS if (directory / n).is_file()), None)


def find_targets(paths: Iterable[Path]) -> list[Path]:
    """Kustomization directories and the YAML files outside any kustomization."""
    targets: list[Path] = []
    for path in paths:
        if path.is_file():
            targets.append(path)
            continue
        for directory, subdirectories, files in os.walk(path):
            here = Path(directory)
            subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
            if kustomization_file(here) is not None:
                targets.append(here)
                continue  # its files are the build's; its subfolders are looked at too
            targets += [here / f for f in sorted(files) if f.endswith((".yaml", ".yml"))]
    return targets


def kustomize_command() -> list[str]:
    """``kustomize build``, else ``kubectl kustomize`` (PATH first, then the local site's)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        from aios.stack.components import KUBERNETES

        kubectl = str(KUBERNETES.binary("kubectl"))
    return [kubectl, "kustomize"]


def local_resources(directory: Path) -> Iterator[Path]:
    """The YAML files a kustomization reads, following local bases."""
    file = kustomization_file(directory)
    if file is None:
        return
    spec = yaml.safe_load(file.read_text()) or {}
    for entry in [*(spec.get("resources") or []), *(spec.get("bases") or [])]:
        resource = (directory / entry).resolve()
        if resource.is_dir():
            yield from local_resources(resource)
        elif resource.is_file():
            yield resource


def origin(document: Document, sources: list[Document]) -> Document:
    """The source document a built one came from (same kind and name), to point at its
    file and lines; the build itself when none is found."""
    for source in sources:
        if source.kind == document.kind and source.name == document.name:
            return Document(document.body, source.file, source.node)
    return document


def load(target: Path, base: Path) -> Target:
    result = Target(target)
    shown = display_path(target, base)
    if target.is_file():
        try:
            result.documents = read_documents(target, target.read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            result.problems.append(Problem("error", shown, line, str(error), source="yaml"))
        return result
    command = [*kustomize_command(), str(target)]
    build = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if build.returncode != 0:
        message = f"kustomize build failed: {build.stderr.strip()}"
        result.problems.append(Problem("error", shown, None, message, source="kustomize"))
        return result
    sources = [
        d
        for path in local_resources(target)
        if path.suffix in (".yaml", ".yml")
        for d in _read_quietly(path)
    ]
    built = read_documents(target, build.stdout)
    result.documents = [origin(Document(d.body, target, None), sources) for d in built]
    return result


def _read_quietly(path: Path) -> list[Document]:
    try:
        return read_documents(path, path.read_text())
    except yaml.YAMLError:
        return []  # the build reports it


def display_path(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path)
