"""``aiosctl validate PATH...``: check manifests offline, for a GitOps repository's CI.

Every kustomization found is built (``kubectl kustomize``, offline) and every other YAML
file read as it is. Each aios object is validated against its model in ``aios.api`` (the
same schema and rules the API server enforces), and every object is reviewed by the
Policies of its build, loaded with the Rego library (``policies/``) into ``opa eval``
exactly as the operator loads them into OPA: what admission would deny is an error, what
it would warn about a warning. Problems are printed ``file:line: severity: message`` (or as
GitHub annotations, or JSON/YAML); the exit code is 1 when there is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress

from aios.api import API_VERSION, GROUP, KINDS, Policy
from aios.cli.output import Output, emit
from aios.connectors import opa
from aios.operator.reconcile import policy as plan

KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MODELS = {model.crd.kind: model for model in KINDS}
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True)


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


# -- reading -----------------------------------------------------------------------------


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
    shown = _shown(target, base)
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


def _shown(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path)


# -- schema ------------------------------------------------------------------------------


def schema_problems(document: Document, base: Path, namespace: str) -> list[Problem]:
    body = document.body
    kind, name = document.kind, document.name
    ns = (body.get("metadata") or {}).get("namespace") or namespace
    file = _shown(document.file, base)
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


# -- policies ----------------------------------------------------------------------------


def opa_binary() -> str:
    found = shutil.which("opa")
    if found:
        return found
    from aios.stack.components import OPA

    return str(OPA.binary())


def policy_problems(
    documents: list[Document], policies_dir: Path, base: Path, namespace: str
) -> list[Problem]:
    """Review every aios object with the build's Policies as the admission webhook would."""
    modules = opa.library_modules(policies_dir)
    loaded: list[tuple[Document, plan.LoadPlan]] = []
    problems: list[Problem] = []
    for document in documents:
        if document.kind != "Policy":
            continue
        ns = (document.body.get("metadata") or {}).get("namespace") or namespace
        try:
            policy = Policy.model_validate(document.body)
            loaded.append((document, plan.load_plan(ns, document.name, policy, modules)))
        except ValidationError:
            continue  # reported by the schema check
        except plan.UnknownModule as error:
            problems.append(_at(document, base, ns, str(error), "policy", ["spec", "module"]))
    reviews = []
    subjects: list[tuple[Document, str]] = []
    for document in documents:
        if document.kind in plan.AUDITED_KINDS:
            ns = (document.body.get("metadata") or {}).get("namespace") or namespace
            body = {**document.body, "metadata": {**document.body["metadata"], "namespace": ns}}
            reviews.append(plan.review(body, "CREATE"))
            subjects.append((document, ns))
    if not loaded or not reviews:
        return problems
    with tempfile.TemporaryDirectory(prefix="aios-validate-") as tmp:
        root = Path(tmp)
        compiled = _compile(root, loaded, policies_dir, problems, base)
        if not compiled:
            return problems
        decisions = _decide(root, compiled, reviews)
    for (document, ns), decision in zip(subjects, decisions, strict=True):
        for message in decision.get("denials", []):
            problems.append(_at(document, base, ns, f"denied by {message}", "policy"))
        for message in decision.get("warnings", []):
            problems.append(
                _at(document, base, ns, f"warning from {message}", "policy", severity="warning")
            )
    return problems


def _at(
    document: Document,
    base: Path,
    namespace: str,
    message: str,
    source: str,
    path: Sequence[str | int] = ("metadata", "name"),
    severity: str = "error",
) -> Problem:
    return Problem(
        severity,
        _shown(document.file, base),
        document.line(path),
        message,
        document.kind,
        document.name,
        namespace,
        source=source,
    )


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _compile(
    root: Path,
    loaded: list[tuple[Document, plan.LoadPlan]],
    policies_dir: Path,
    problems: list[Problem],
    base: Path,
) -> list[plan.LoadPlan]:
    """Write the modules as the operator loads them; keep the Policies OPA compiles."""
    system = _write(root, "aios/system.rego", (policies_dir / "system" / "system.rego").read_text())
    compiled = []
    for document, load_plan in loaded:
        if load_plan.rego is None:  # a library module: checked by the library's own tests
            assert load_plan.library is not None
            _write(root, f"{load_plan.library[0]}.rego", load_plan.library[1])
            compiled.append(load_plan)
            continue
        module = _write(root, f"{load_plan.module_id}.rego", load_plan.rego)
        check = subprocess.run(
            [opa_binary(), "check", "--format=json", str(system), str(module)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check.returncode == 0:
            compiled.append(load_plan)
            continue
        module.unlink()  # not evaluated: the operator would not load it either
        namespace = load_plan.namespace
        message = "; ".join(_opa_errors(check.stdout or check.stderr))
        problems.append(
            _at(
                document,
                base,
                namespace,
                f"Rego does not compile: {plan.user_lines(message, load_plan.line_offset)}",
                "policy",
                ["spec", "rego"],
            )
        )
    return compiled


def _opa_errors(output: str) -> list[str]:
    try:
        errors = json.loads(output).get("errors") or []
    except ValueError:
        return [output.strip()]
    return [
        f"{e.get('message')} (line {(e.get('location') or {}).get('row', '?')})" for e in errors
    ]


def _decide(root: Path, compiled: list[plan.LoadPlan], reviews: list[dict[str, Any]]) -> list[Any]:
    (root / "data.json").write_text(json.dumps(plan.data_document(compiled)))
    (root / "input.json").write_text(json.dumps({"reviews": reviews}))
    query = "[d | some r in input.reviews; d := data.aios.system.decision with input as r]"
    result = subprocess.run(
        [
            opa_binary(),
            "eval",
            "--format=json",
            f"--data={root / 'aios'}",
            f"--data={root / 'data.json'}",
            f"--input={root / 'input.json'}",
            query,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"opa eval failed: {result.stderr.strip() or result.stdout.strip()}")
    answer = json.loads(result.stdout)
    return list(answer["result"][0]["expressions"][0]["value"])


# -- the command -------------------------------------------------------------------------


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
            bar.update(task, description=f"validating {_shown(path, base)}")
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
