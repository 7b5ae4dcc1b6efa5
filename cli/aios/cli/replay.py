"""``aiosctl replay intent/NAME``: what a changed spec, or another version of a model it
calls, would have decided over a window of the readings the intent kept, against what was
decided. It starts no action and writes nothing: the readings and decisions are read with
consumers that never commit. A changed spec is replayed here; a model version where it is
served, by a Job beside the intent's runners (``aios.workflows.replay_gate``).

Exit codes: 0 the replay ran (and stayed within ``--max-change``), 1 more decisions changed
than ``--max-change`` allows (a GitOps repository's CI fails the change), 2 it could not
run (the message names the problem).
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
import yaml
from confluent_kafka import KafkaException
from kubernetes import client
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from aios.api import API_VERSION, GROUP, VERSION, AutomationIntent, IntentReplay, ModelDeployment
from aios.api.automation_intent import AutomationIntentSpec
from aios.api.base import owner_reference
from aios.api.replay import Denial, IntentReplaySpec, ReplayReport
from aios.api.runner import RunnerConfig, runner_name
from aios.cli.approvals import Kubeconfig, Namespace, api
from aios.cli.audit import Bootstrap
from aios.cli.explain import parse_target
from aios.cli.output import Format, Output, emit
from aios.cli.validate.documents import read_documents
from aios.cli.validate.policies import decide_offline
from aios.connectors import opa
from aios.connectors.kube import event
from aios.runner import history
from aios.runner.replay import LISTED_IDS, Replay, ReplayError, candidate_spec
from aios.workflows.action_activities import policy_input
from aios.workflows.replay_gate import (
    Replayed,
    job_log,
    job_result,
    served_target,
    start_job,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True)
DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def moment(text: str, now: datetime, option: str) -> datetime:
    """A time as given on the command line: a duration back from now (``2h``, ``1d12h``,
    ``90m``) or an RFC 3339 time (UTC when it names no zone)."""
    matched = DURATION.match(text)
    if matched and any(matched.groups()):
        days, hours, minutes, seconds = (int(g or 0) for g in matched.groups())
        return now - timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as error:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (2h, 90m, 1d) nor an RFC 3339 time",
            param_hint=option,
        ) from error
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def share(text: str) -> float:
    """``5%`` or ``0.05``."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError as error:
        raise typer.BadParameter(
            f"{text!r} is not a share like 5%", param_hint="--max-change"
        ) from error
    if not 0 <= value <= 1:
        raise typer.BadParameter(f"{text} is not between 0% and 100%", param_hint="--max-change")
    return value


def fail(message: str) -> typer.Exit:
    err.print(f"[red]cannot replay[/]: {message}", soft_wrap=True)
    return typer.Exit(2)


def _read(call: Callable[[], Any], missing: str) -> Any:
    try:
        return call()
    except client.ApiException as error:
        raise fail(missing if error.status == 404 else f"{error.status} {error.reason}") from error


def live_config(
    api_client: client.ApiClient, namespace: str, name: str
) -> tuple[dict[str, Any], RunnerConfig]:
    """The intent, and the configuration its runners decide with (their ConfigMap)."""
    what = f"automationintent {namespace}/{name}"
    intent = _read(
        lambda: client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, AutomationIntent.crd.plural, name
        ),
        f"{what} not found",
    )
    found = _read(
        lambda: client.CoreV1Api(api_client).read_namespaced_config_map(
            runner_name(name), namespace
        ),
        f"{what} has no runner (yet): see `aiosctl explain intent/{name} -n {namespace}`",
    )
    return intent, RunnerConfig.model_validate_json((found.data or {})["config.json"])


def summary(report: ReplayReport) -> str:
    """One sentence of the report, for the intent's Events."""
    actions = "; ".join(
        f"{a.action}: {a.added_count} more, {a.removed_count} fewer"
        for a in report.actions
        if a.added_count or a.removed_count
    )
    return (
        f"Replayed {report.readings} readings from {report.since:%Y-%m-%d %H:%M:%S}Z to "
        f"{report.until:%Y-%m-%d %H:%M:%S}Z with {report.candidate}: {report.changed} of "
        f"{report.compared} decisions ({report.change_ratio:.1%}) would change"
        + (f"; runs of {actions}" if actions else "")
        + (f"; {report.denied_count} denied by {report.policy}" if report.policy else "")
    )


KEPT_REPLAYS = 20
"""IntentReplays kept per intent: the newest; ``aiosctl replay`` removes older ones."""
INTENT_LABEL = "aios.dev/intent"


def replay_record(
    intent: dict[str, Any], report: ReplayReport, limit: float | None, over: bool
) -> dict[str, Any]:
    """The IntentReplay keeping ``report`` with the intent (its owner: it goes with it)."""
    meta = intent["metadata"]
    spec = IntentReplaySpec(**dict(report), max_change=limit, exceeded=over)
    return {
        "apiVersion": API_VERSION,
        "kind": IntentReplay.crd.kind,
        "metadata": {
            "generateName": f"{meta['name'][:200]}-",
            "namespace": meta["namespace"],
            "labels": {INTENT_LABEL: meta["name"]},
            "ownerReferences": [owner_reference(intent)],
        },
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def superseded(records: list[dict[str, Any]], kept: int = KEPT_REPLAYS) -> list[str]:
    """The names of all but the ``kept`` newest records."""
    newest = sorted(
        records,
        key=lambda r: (r["metadata"]["creationTimestamp"], r["metadata"]["name"]),
        reverse=True,
    )
    return [r["metadata"]["name"] for r in newest[kept:]]


def publish(
    api_client: client.ApiClient,
    intent: dict[str, Any],
    report: ReplayReport,
    limit: float | None,
    over: bool,
) -> None:
    """The report kept as an IntentReplay (``kubectl get intentreplays``; the newest
    ``KEPT_REPLAYS`` per intent), and its summary as an Event on the intent (``kubectl
    describe``). A user who may create neither still gets the report."""
    meta = intent["metadata"]
    body: Any = event(
        intent,
        f"{meta['name']}.replay.{uuid.uuid4().hex[:10]}",
        "ReplayExceededMaxChange" if over else "Replayed",
        summary(report),
        "aiosctl",
        socket.gethostname(),
        "Warning" if over else "Normal",
    )
    try:
        client.CoreV1Api(api_client).create_namespaced_event(meta["namespace"], body)
    except client.ApiException as error:
        err.print(
            f"[yellow]the report is not recorded as an Event[/]: {error.status} {error.reason}"
        )
    objects, plural = client.CustomObjectsApi(api_client), IntentReplay.crd.plural
    try:
        created: Any = objects.create_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], plural, replay_record(intent, report, limit, over)
        )
        err.print(f"kept as intentreplay/{created['metadata']['name']}")
        listed: Any = objects.list_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], plural,
            label_selector=f"{INTENT_LABEL}={meta['name']}",
        )  # fmt: skip
        for name in superseded(listed["items"]):
            objects.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], plural, name)
    except client.ApiException as error:
        err.print(
            f"[yellow]the report is not kept as an IntentReplay[/]: {error.status} {error.reason}"
        )


def candidate(live: RunnerConfig, rules: Path | None) -> tuple[AutomationIntentSpec, str]:
    """The spec to decide with, and how the report names it."""
    if rules is None:
        return live.spec, "the live spec"
    try:
        document = yaml.safe_load(rules.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise fail(f"--rules {rules}: {error}") from error
    if not isinstance(document, dict):
        raise fail(f"--rules {rules}: expected a mapping (spec fields, or a manifest)")
    try:
        return candidate_spec(live.spec, document), f"--rules {rules}"
    except ReplayError as error:
        raise fail(f"--rules {rules}: {error}") from error


def run(
    bootstrap: str, live: RunnerConfig, replay: Replay, found: history.Window, label: str
) -> ReplayReport:
    made = history.decisions(bootstrap, live, found)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    ) as bar:
        task = bar.add_task("replaying", total=found.readings)
        for position, value in history.readings(
            bootstrap, found, lambda n: bar.update(task, completed=n)
        ):
            replay.add(position, value, made.get(position))
    return replay.report(found.since, found.until, label)


Rules = typer.Option(
    None,
    "--rules",
    help="YAML: spec fields laid over the live spec (rules, fallback, models, actions, mode…), "
    "or a whole AutomationIntent manifest. Default: the live spec.",
)


PolicyFile = typer.Option(
    None,
    "--policy",
    help="A Policy manifest: report the actions the candidate would start that it denies "
    "(whatever its enforcement; asked offline, in opa eval, as the site's OPA would).",
)


ModelVersion = typer.Option(
    None,
    "--model",
    help="md/NAME@VERSION: decide with the answers of this version of a ModelDeployment the "
    "intent calls, where it is served (stable, canary or shadow), by a Job beside the "
    "intent's runners (removed afterwards). Not with --rules or --policy.",
)


def replay(
    target: str = typer.Argument(..., help="intent/NAME: the AutomationIntent to replay."),
    namespace: str = Namespace,
    since: str = typer.Option(
        ..., "--since", help="Window start: a duration back from now (2h, 90m, 1d) or a time."
    ),
    until: str | None = typer.Option(None, "--until", help="Window end (default: now)."),
    rules: Path | None = Rules,
    policy: Path | None = PolicyFile,
    model: str | None = ModelVersion,
    max_change: str | None = typer.Option(
        None, "--max-change", help="Exit 1 when more than this share of decisions changes: 5%."
    ),
    bootstrap: str | None = Bootstrap,
    kubeconfig: str | None = Kubeconfig,
    output: Output = Format,
) -> None:
    """Decide a window of the intent's readings again with a changed spec or a model version
    and report what would change: decisions per rule, actions that would (not) have run.
    Starts no action."""
    kind, name = parse_target(target)
    if kind != AutomationIntent.crd.kind:
        raise typer.BadParameter("replay takes intent/NAME", param_hint="TARGET")
    limit = None if max_change is None else share(max_change)
    now = datetime.now(UTC)
    start, end = moment(since, now, "--since"), moment(until, now, "--until") if until else now
    api_client = api(kubeconfig, None, None)
    intent, live = live_config(api_client, namespace, name)
    if model is not None:
        if rules is not None or policy is not None:
            raise fail("--model replays one candidate, the model version: drop --rules, --policy")
        replayed = served(api_client, live, model, start, end)
        report = in_cluster(api_client, intent, replayed)
    elif not bootstrap:
        raise fail("no Kafka bootstrap servers: pass --bootstrap or set AIOS_KAFKA_BOOTSTRAP")
    else:
        report = locally(bootstrap, live, rules, policy, start, end)
    if output is Output.text:
        render(report)
    else:
        emit(report.model_dump(mode="json", by_alias=True, exclude_none=True), output)
    over = limit is not None and report.change_ratio > limit
    publish(api_client, intent, report, limit, over)
    if over:
        err.print(
            f"[red]{report.change_ratio:.1%} of decisions changed[/], "
            f"more than --max-change {limit or 0:.1%}"
        )
        raise typer.Exit(1)


def locally(
    bootstrap: str,
    live: RunnerConfig,
    rules: Path | None,
    policy: Path | None,
    start: datetime,
    end: datetime,
) -> ReplayReport:
    """The replay of a changed spec (and Policy), here: the readings and decisions are read
    from Kafka and decided again by the runner's own rules."""
    spec, label = candidate(live, rules)
    try:
        replayer = Replay(live, spec)
        found = history.window(bootstrap, live, start, end)
        report = run(bootstrap, live, replayer, found, label)
        if policy is not None:
            report = judged(report, replayer, policy, live.intent.namespace)
    except (ReplayError, history.WindowError) as error:
        raise fail(str(error)) from error
    except (KafkaException, TimeoutError) as error:
        raise fail(f"Kafka at {bootstrap}: {error}") from error
    return report


def served(
    api_client: client.ApiClient, live: RunnerConfig, text: str, start: datetime, end: datetime
) -> Replayed:
    """``md/NAME@VERSION``: where the ModelDeployment serves that version, or why it cannot
    be replayed."""
    target, _, version = text.partition("@")
    kind, name = parse_target(target)
    if kind != ModelDeployment.crd.kind or not version:
        raise typer.BadParameter(f"{text!r} is not md/NAME@VERSION", param_hint="--model")
    namespace = live.intent.namespace
    if all(call.model_deployment != name for call in live.spec.models):
        raise fail(f"intent {live.intent.name} calls no model of modeldeployment/{name}")
    md = _read(
        lambda: client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, ModelDeployment.crd.plural, name
        ),
        f"modeldeployment {namespace}/{name} not found",
    )
    status = md.get("status") or {}
    found = served_target(status, version)
    if found is None:
        serving = ", ".join(
            f"{track} {status[track]['version']}"
            for track in ("stable", "canary", "shadow")
            if status.get(track)
        )
        raise fail(
            f"modeldeployment/{name} serves no version {version} (it serves "
            f"{serving or 'nothing yet'}): a version is replayed where it is served; roll it "
            "out behind spec.rollout.analysis.replay to replay it before it takes traffic"
        )
    window = (f"--since={start.isoformat()}", f"--until={end.isoformat()}")
    return Replayed(namespace, name, version, found, window)


def in_cluster(
    api_client: client.ApiClient, intent: dict[str, Any], replayed: Replayed
) -> ReplayReport:
    """The replay run by a Job beside the intent's runners, where the version answers; the
    Job is removed once its report is read."""
    meta = intent["metadata"]
    job = f"{meta['name'][:40]}-replay-{uuid.uuid4().hex[:8]}"
    owner = owner_reference({**intent, "kind": AutomationIntent.crd.kind})
    what = f"intent/{meta['name']}"
    if not start_job(api_client, replayed, meta["name"], job, owner):
        raise fail(f"{what} has no runner (yet): see `aiosctl explain {what}`")
    try:
        with err.status(f"replaying {what} with {replayed.deployment}@{replayed.version}"):
            while (found := job_result(api_client, replayed.namespace, meta["name"], job)) is None:
                time.sleep(1)
        if found.failed or found.message:  # it failed, or the window holds no reading
            raise fail(found.message or "the replay failed")
        lines = job_log(api_client, replayed.namespace, job).strip().splitlines()
        return ReplayReport.model_validate_json(lines[-1])
    finally:
        client.BatchV1Api(api_client).delete_namespaced_job(
            job, replayed.namespace, propagation_policy="Background"
        )


def judged(report: ReplayReport, replayer: Replay, path: Path, namespace: str) -> ReplayReport:
    """``report`` with the candidate's actions the Policy in ``path`` denies."""
    try:
        documents = [d for d in read_documents(path, path.read_text()) if d.kind == "Policy"]
    except (OSError, yaml.YAMLError) as error:
        raise fail(f"--policy {path}: {error}") from error
    if len(documents) != 1:
        raise fail(f"--policy {path}: expected one Policy, found {len(documents)}")
    decided = [(r, r.decision) for r in replayer.requests.values() if r.decision is not None]
    inputs = [policy_input(r, None, 0, decision.decided_at) for r, decision in decided]
    try:
        decisions = decide_offline(documents[0], namespace, inputs, opa.library_dir())
    except (ValueError, RuntimeError) as error:
        raise fail(f"--policy {path}: {error}") from error
    denied = [
        Denial(
            action_id=request.action_id,
            action=request.action.name,
            sensor_id=request.sensor_id,
            messages=messages,
        )
        for (request, _), decision in zip(decided, decisions, strict=True)
        if (messages := [*decision["denials"], *decision["warnings"], *decision["dryrun"]])
    ]
    return report.model_copy(
        update={"policy": str(path), "denied_count": len(denied), "denied": denied[:LISTED_IDS]}
    )


def render(report: ReplayReport) -> None:
    window = f"{report.since:%Y-%m-%d %H:%M:%S}Z to {report.until:%Y-%m-%d %H:%M:%S}Z"
    intent = f"{report.namespace}/{report.intent}"
    out.print(f"Replayed [bold]{intent}[/] from {window} with {report.candidate}")
    out.print(
        f"  {report.readings} readings: {report.compared} compared, {report.undecided} not yet "
        f"decided, {report.dead_letters} dead letters"
    )
    out.print(f"  {report.changed} decisions changed ({report.change_ratio:.1%})")
    for change in report.changes:
        out.print(f"  {change.count:>6}  {change.before}  ⇒  {change.after}")
        for e in change.examples:
            out.print(f"          e.g. {e.sensor_id} at {e.time:%Y-%m-%d %H:%M:%S}Z ({e.source})")
    if report.policy is not None:
        out.print(
            f"  {report.denied_count} of the actions it would start are denied by {report.policy}"
        )
        for denial in report.denied:
            out.print(f"          e.g. {denial.action_id}: {'; '.join(denial.messages)}")
    if report.rules:
        rules = Table("rule", "decided", "with the candidate", box=None)
        for tally in report.rules:
            rules.add_row(tally.rule, str(tally.before), str(tally.after))
        out.print(rules)
    if report.actions:
        actions = Table("action", "ran", "would run", "would start", "would not start", box=None)
        for action in report.actions:
            actions.add_row(
                action.action,
                str(action.before),
                str(action.after),
                str(action.added_count),
                str(action.removed_count),
            )
        out.print(actions)
