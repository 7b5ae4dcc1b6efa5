"""Each object reviewed by the Policies of its build, in ``opa eval``, as admission would."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aios.api import Policy
from aios.api.base import validation_message
from aios.cli.validate.documents import Document, Problem, display_path
from aios.connectors import opa
from aios.operator.reconcile import policy as plan


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
        display_path(document.file, base),
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


def _decide(root: Path, compiled: list[plan.LoadPlan], inputs: list[dict[str, Any]]) -> list[Any]:
    """``data.aios.system.decision`` of each input, with the compiled plans loaded."""
    (root / "data.json").write_text(json.dumps(plan.data_document(compiled)))
    (root / "input.json").write_text(json.dumps({"inputs": inputs}))
    query = "[d | some i in input.inputs; d := data.aios.system.decision with input as i]"
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


def decide_offline(
    document: Document, namespace: str, inputs: list[dict[str, Any]], policies_dir: Path
) -> list[dict[str, Any]]:
    """What the Policy in ``document``, alone, decides of each input (an
    ``aios.connectors.opa`` document), in ``opa eval`` as the site's OPA would; a
    ``ValueError`` names the field when it is no valid Policy or its Rego does not compile."""
    try:
        policy = Policy.model_validate(document.body)
        load_plan = plan.load_plan(
            namespace, document.name, policy, opa.library_modules(policies_dir)
        )
    except ValidationError as error:
        raise ValueError(validation_message(error)) from error
    except plan.UnknownModule as error:
        raise ValueError(f"spec.module: {error}") from error
    problems: list[Problem] = []
    with tempfile.TemporaryDirectory(prefix="aios-policy-") as tmp:
        root = Path(tmp)
        compiled = _compile(root, [(document, load_plan)], policies_dir, problems, root)
        if problems:
            raise ValueError(f"spec.rego: {problems[0].message}")
        return _decide(root, compiled, inputs) if inputs else []
