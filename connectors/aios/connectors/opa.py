"""OPA: load policy modules and ask for decisions, failing closed.

Built on ``opa-python-client`` (``opa_client.AsyncOpaClient``): it loads modules (with
OPA's compile errors, line and column), writes data and queries rules. Its automatic
"v0 → v1 Rego upgrade" is switched off, so OPA's own message reaches the user unchanged.

Every caller asks one entry point, ``data.aios.system`` (``policies/system/system.rego``),
which finds the Policies whose scope covers the input and splits their violations by
enforcement: ``deny`` → not allowed, ``warn`` → warnings, ``dryrun`` → only counted.

Input documents (keep to them; the Rego library reads exactly these fields):

* admission, reconcile and periodic audit of an aios object::

    {"kind": "ModelDeployment" | "AutomationIntent" | "EdgeGateway",
     "namespace": str, "operation": "CREATE" | "UPDATE" | "RECONCILE" | "AUDIT" | "PROMOTE",
     "object": {...the object as stored...}, "oldObject": {...} | None,
     "user": {"username": str, "groups": [str]} | None, "approver": str | None}

* a runtime action, built by the action workflow just before it acts::

    {"kind": "Action", "namespace": str,
     "intent": {"name": str, "labels": {...}, "dataPolicy": {...}},
     "action": {"name": str, "type": "alert|webhook|mqtt|kafka", "target": str,
                "idempotencyKey": str, "approvalRequired": bool},
     "decision": {"rule": str, "fallback": bool,
                  "model": {"call": str, "deployment": str, "version": str,
                            "canary": bool} | None,
                  "score": float | None, "confidence": float | None, "lineage": {...}}
                 | None,                  # None: a person asked (a ManualAction)
     "requestedBy": str, "reason": str,   # only when a person asked: who and why
     "manualAction": str, "reverts": str,  # its ManualAction; the action it undoes, if any
     "approver": str | None,
     "recentActuations": int,   # actuations of this target in the last hour
     "time": RFC 3339}

OPA unreachable, erroring, or without the system module loaded → ``PolicyUnavailable``:
the caller must not act (fail closed).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opa_client import AsyncOpaClient
from opa_client.errors import (
    DeleteDataError,
    DeletePolicyError,
    PolicyNotFoundError,
    RegoParseError,
)
from prometheus_client import Counter

OPA_URL_ENV = "AIOS_OPA_URL"
LIBRARY_ENV = "AIOS_POLICY_LIBRARY"
"""Where the Rego library is (the image sets it); ``policies/`` of this checkout if unset."""
SYSTEM_PACKAGE = "aios/system"
TIMEOUT_SECONDS = 5.0
LOAD_TIMEOUT_SECONDS = 60.0
"""For managing what OPA holds (modules and data): loading a module makes OPA compile
every module it holds again, and every other read or write waits for that. With a city's
Policies it takes seconds, and a load cut short is retried from the start. Decisions keep
the short timeout."""

DECISIONS = Counter(
    "aios_policy_decisions",
    "Policy decisions asked of OPA, by kind of input and outcome.",
    ["kind", "outcome"],
)
VIOLATIONS = Counter(
    "aios_policy_violations",
    "Violations found by policy decisions, by kind of input and enforcement "
    "(dryrun violations are only counted here and in the audit log).",
    ["kind", "enforcement"],
)


class PolicyUnavailable(Exception):
    """OPA could not answer; whoever asked must not act (fail closed)."""


@dataclass(frozen=True)
class RegoProblem:
    """One compile error as OPA reports it."""

    code: str
    message: str
    row: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        where = f"line {self.row}" if self.row is not None else ""
        if where and self.col is not None:
            where += f", column {self.col}"
        return (
            f"{where}: {self.message} ({self.code})" if where else f"{self.message} ({self.code})"
        )


class RegoError(Exception):
    """OPA rejected a module: its messages with line and column."""

    def __init__(self, problems: list[RegoProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems) or "OPA rejected the module")


@dataclass(frozen=True)
class PolicyDecision:
    """What the policies that apply concluded; ``decision_id`` is OPA's (its decision log)."""

    allowed: bool
    decision_id: str
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dryrun: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)


def library_dir() -> Path:
    """The Rego library: ``$AIOS_POLICY_LIBRARY`` or ``policies/`` of this checkout."""
    checkout = Path(__file__).resolve().parents[3] / "policies"
    return Path(os.environ.get(LIBRARY_ENV) or checkout)


def library_modules(directory: Path) -> dict[str, str]:
    """The library's modules by name (``<name>.rego``; its ``_test`` modules left out)."""
    return {
        path.stem: path.read_text()
        for path in sorted(directory.glob("*.rego"))
        if not path.stem.endswith("_test")
    }


UNAVAILABLE = (aiohttp.ClientError, TimeoutError, OSError)


_CLIENTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, float], AsyncOpaClient]
] = weakref.WeakKeyDictionary()
"""Each event loop's OPA clients, kept alive: a Policy's load asks OPA several things, and a
client per request paid a new connection each time (aiohttp sessions belong to a loop)."""


async def _kept(opa_url: str, timeout: float) -> AsyncOpaClient:
    clients = _CLIENTS.setdefault(asyncio.get_running_loop(), {})
    found = clients.get((opa_url, timeout))
    if found is None:
        parts = urlsplit(opa_url)
        if parts.hostname is None:
            raise ValueError(f"not an OPA URL: {opa_url!r}")
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        found = AsyncOpaClient(
            host=parts.hostname, port=port, ssl=https, timeout=timeout, retries=1
        )
        clients[(opa_url, timeout)] = await found.__aenter__()
    return found


@asynccontextmanager
async def client(opa_url: str, timeout: float = TIMEOUT_SECONDS) -> AsyncIterator[AsyncOpaClient]:
    """The loop's OPA client for ``opa_url`` (kept open between calls); any failure to
    reach OPA inside the block becomes ``PolicyUnavailable``, and the next call connects
    afresh."""
    opa = await _kept(opa_url, timeout)
    try:
        yield opa
    except UNAVAILABLE as error:
        _CLIENTS.get(asyncio.get_running_loop(), {}).pop((opa_url, timeout), None)
        await opa.close_connection()
        raise PolicyUnavailable(f"OPA at {opa_url} is unreachable: {error!r}") from error


async def close_clients() -> None:
    """Close this loop's OPA clients (a process that stops)."""
    for opa in _CLIENTS.pop(asyncio.get_running_loop(), {}).values():
        await opa.close_connection()


async def load_module(opa_url: str, module_id: str, rego: str) -> None:
    """Create or replace a module. Raises ``RegoError`` with OPA's messages when it does not
    compile, ``PolicyUnavailable`` when OPA cannot be reached."""
    try:
        async with client(opa_url, LOAD_TIMEOUT_SECONDS) as opa:
            await opa.update_policy_from_string(rego, module_id, rego_compat=False)
    except RegoParseError as error:
        raise RegoError(_problems(error)) from error


def _problems(error: RegoParseError) -> list[RegoProblem]:
    problems = []
    for item in error.errors or []:
        location = item.get("location") or {}
        problems.append(
            RegoProblem(
                code=str(item.get("code", "rego_error")),
                message=str(item.get("message", "")),
                row=location.get("row"),
                col=location.get("col"),
            )
        )
    return problems or [RegoProblem(str(error.expression), str(error.message))]


async def ensure_module(opa_url: str, module_id: str, rego: str) -> None:
    """Load the module unless OPA holds exactly this text: reading it costs OPA nothing,
    loading it costs a compile of every module."""
    if await get_module(opa_url, module_id) != rego:
        await load_module(opa_url, module_id, rego)


async def instance(opa_url: str) -> str:
    """The running OPA process's id (``/v1/config``'s ``labels.id``, new at each start
    unless configured): what OPA holds in memory belongs to one process."""
    async with client(opa_url, LOAD_TIMEOUT_SECONDS) as opa:
        found = await opa.get_config()
    return str(found["result"]["labels"]["id"])


class LoadedModules:
    """The modules each OPA process was seen holding (by process id, so a restarted OPA
    is asked again): a thousand Policies of one library module read it back once, not a
    thousand times. Reading a module returns its AST too, 12-34 KB of JSON for OPA to
    write and the operator to parse; asking which process runs is a few bytes."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str, str], str] = {}
        """(OPA URL, process id, module id) -> the text's SHA-256."""

    async def ensure(self, opa_url: str, modules: Sequence[tuple[str, str]]) -> None:
        """Each (module id, Rego) loaded unless this OPA process was seen holding exactly it."""
        process = await instance(opa_url)
        for module_id, rego in modules:
            key, digest = (opa_url, process, module_id), hashlib.sha256(rego.encode()).hexdigest()
            if self._held.get(key) != digest:
                await ensure_module(opa_url, module_id, rego)
                self._held[key] = digest


async def get_module(opa_url: str, module_id: str) -> str | None:
    """The module's source as OPA holds it, or None when it is not loaded."""
    try:
        async with client(opa_url, LOAD_TIMEOUT_SECONDS) as opa:
            found = await opa.get_policy(module_id)
    except PolicyNotFoundError:
        return None
    return str(found["result"]["raw"])


def _unless_absent(error: DeletePolicyError | DeleteDataError, what: str) -> None:
    """Deleting what is already gone counts as deleted; anything else is OPA refusing."""
    if error.expression != "resource_not_found":
        raise PolicyUnavailable(f"OPA refused to delete {what}: {error.message}") from error


async def delete_module(opa_url: str, module_id: str) -> None:
    """Remove a module; one already gone counts as removed."""
    try:
        async with client(opa_url, LOAD_TIMEOUT_SECONDS) as opa:
            await opa.delete_policy(module_id)
    except DeletePolicyError as error:
        _unless_absent(error, f"module {module_id}")


async def put_data(opa_url: str, path: str, value: Mapping[str, Any]) -> None:
    """Create or replace the data document at ``path`` (slash-separated)."""
    try:
        async with client(opa_url, LOAD_TIMEOUT_SECONDS) as opa:
            await opa.update_or_create_data(dict(value), path)
    except RegoParseError as error:  # the client's name for any refused write
        raise PolicyUnavailable(f"OPA refused data at {path}: {error}") from error


async def get_data(opa_url: str, path: str) -> Any:
    """The data document at ``path`` as OPA holds it, or None when there is none."""
    try:
        async with client(opa_url, LOAD_TIMEOUT_SECONDS) as opa:
            found = await opa.get_data(path)
    except PolicyNotFoundError:
        return None
    return found["result"]


async def delete_data(opa_url: str, path: str) -> None:
    """Remove the data document at ``path``; absent counts as removed."""
    try:
        async with client(opa_url, LOAD_TIMEOUT_SECONDS) as opa:
            await opa.delete_data(path)
    except DeleteDataError as error:
        _unless_absent(error, f"data {path}")


async def query(opa_url: str, rule: str, input_: Mapping[str, Any]) -> tuple[Any, str]:
    """Evaluate ``data.aios.system.<rule>``; returns (result or None, decision id)."""
    async with client(opa_url) as opa:
        response = await opa.query_rule(dict(input_), SYSTEM_PACKAGE, rule)
    decision_id = str(response.get("decision_id") or f"aios-{uuid.uuid4()}")
    return response.get("result"), decision_id


async def evaluate(opa_url: str, input_: Mapping[str, Any]) -> PolicyDecision:
    """Ask every applicable Policy about ``input_`` (one of the documents above)."""
    kind = str(input_.get("kind", ""))
    try:
        result, decision_id = await query(opa_url, "decision", input_)
    except PolicyUnavailable:
        DECISIONS.labels(kind, "unavailable").inc()
        raise
    if not isinstance(result, dict):
        DECISIONS.labels(kind, "unavailable").inc()
        raise PolicyUnavailable(
            f"OPA at {opa_url} has no data.aios.system.decision: the aios system policy "
            "is not loaded (is the operator running?)"
        )
    decision = PolicyDecision(
        allowed=bool(result["allowed"]),
        decision_id=decision_id,
        reasons=list(result["denials"]),
        warnings=list(result["warnings"]),
        dryrun=list(result["dryrun"]),
        policies=list(result["policies"]),
    )
    DECISIONS.labels(kind, "allowed" if decision.allowed else "denied").inc()
    for enforcement, found in (
        ("deny", decision.reasons),
        ("warn", decision.warnings),
        ("dryrun", decision.dryrun),
    ):
        if found:
            VIOLATIONS.labels(kind, enforcement).inc(len(found))
    return decision


async def authorize_action(opa_url: str, action_input: Mapping[str, Any]) -> PolicyDecision:
    """Authorise one runtime action just before it executes (input: the Action document
    above). Not allowed, or ``PolicyUnavailable`` raised → the action must not run."""
    if action_input.get("kind") != "Action":
        raise ValueError(f"an action input has kind Action, not {action_input.get('kind')!r}")
    return await evaluate(opa_url, action_input)


async def max_retention_days(
    opa_url: str, namespace: str, labels: Mapping[str, str] | None = None
) -> int | None:
    """The strictest retention (days) the deny-enforced policies allow for personal data of
    AutomationIntents in ``namespace`` (with ``labels``), or None when nothing caps it."""
    review = {
        "kind": "AutomationIntent",
        "namespace": namespace,
        "operation": "RECONCILE",
        "object": {"metadata": {"namespace": namespace, "labels": dict(labels or {})}},
    }
    result, _ = await query(opa_url, "max_retention_days", review)
    return None if result is None else int(result)


async def audit_objects(
    opa_url: str, namespace: str, name: str, reviews: Sequence[Mapping[str, Any]]
) -> list[tuple[int, str]]:
    """Evaluate existing objects against one Policy: (index into ``reviews``, message) per
    violation, in one request."""
    if not reviews:
        return []
    result, _ = await query(
        opa_url,
        "audit",
        {"policy": {"namespace": namespace, "name": name}, "reviews": list(reviews)},
    )
    return sorted((int(i), str(message)) for i, message in result or [])


async def look_back(
    opa_url: str, namespace: str, name: str, reviews: Sequence[Mapping[str, Any]]
) -> tuple[list[int], list[tuple[int, str]]]:
    """Ask one (dry-run) Policy about past runtime actions, in one request: the indexes
    into ``reviews`` its scope covers, and (index, message) per violation."""
    if not reviews:
        return [], []
    result, _ = await query(
        opa_url,
        "look_back",
        {"policy": {"namespace": namespace, "name": name}, "reviews": list(reviews)},
    )
    found = result or {}
    violations = sorted((int(i), str(message)) for i, message in found.get("violations") or [])
    return [int(i) for i in found.get("covered") or []], violations
