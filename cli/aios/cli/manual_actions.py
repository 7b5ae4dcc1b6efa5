"""``aiosctl act intent/NAME ACTION`` and ``aiosctl revert action/ID``: a person's action,
as an object the API server vouches for.

The command creates a ManualAction naming the caller as the API server authenticates them
(``--as`` acts as someone else, which only impersonators may). The admission webhook
admits it only when that is so and the intent declares the action (or the action to revert
ran, declares its compensation and was not reverted yet); its refusal is printed as it
came. The operator then starts the action workflow, which checks policy, waits for an
approval when the action requires one, and audits every step with the person and reason.
The command returns once the action has started, with its id.
"""

from __future__ import annotations

import time
from typing import Any

import typer
from kubernetes import client

from aios.api import GROUP, VERSION, AutomationIntent, ManualAction
from aios.api.approval import User
from aios.api.manual_action import manual_action_manifest
from aios.cli.approvals import (
    As,
    AsGroup,
    Identity,
    Kubeconfig,
    Namespace,
    Refused,
    api,
    refusals_exit,
    whoami,
)
from aios.cli.explain import parse_target
from aios.cli.output import Format, Output, emit
from aios.connectors.kube import refusal_message

app = typer.Typer()
START_SECONDS = 60.0
"""How long the command waits for the operator to start the action."""
TRACE_WAIT = 30
"""The ``--wait`` the printed ``audit trace`` command carries: the action's first step
reaches the audit log a moment after the command returns."""


def started(manual: dict[str, Any]) -> tuple[str, str] | None:
    """``(actionId, "")`` once started, ``("", why)`` once refused, None while waiting."""
    status = manual.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or ready.get("reason") == "ReconcileError":
        return None
    if ready.get("status") == "True":
        return str(status.get("actionId") or ""), ""
    return "", f"{ready.get('reason')}: {ready.get('message')}"


def request_action(api_client: client.ApiClient, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the ManualAction and wait until its action started; what it says then."""
    objects = client.CustomObjectsApi(api_client)
    namespace = manifest["metadata"]["namespace"]
    plural = ManualAction.crd.plural
    try:
        created: Any = objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, manifest
        )
    except client.ApiException as error:
        raise Refused(refusal_message(error, plural)) from error
    name = created["metadata"]["name"]
    deadline = time.monotonic() + START_SECONDS
    while (outcome := started(created)) is None:
        if time.monotonic() > deadline:
            raise Refused(
                f"manualaction/{name} in {namespace} was admitted but its action did not "
                f"start within {START_SECONDS:.0f}s: is the operator running?"
            )
        time.sleep(0.5)
        created = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    action_id, why = outcome
    if why:
        raise Refused(f"manualaction/{name} in {namespace}: {why}")
    return {"manualAction": name, "namespace": namespace, "actionId": action_id}


def report(result: dict[str, Any], who: Identity, output: Output) -> None:
    if output is Output.text:
        print(
            f"action/{result['actionId']} started for {who.user} "
            f"(manualaction/{result['manualAction']} in {result['namespace']}); "
            f"follow it with: aiosctl audit trace {result['actionId']} --wait {TRACE_WAIT}"
        )
    else:
        emit({**result, "by": who.user}, output)


Reason = typer.Option(..., "--reason", help="Why (recorded in every audit record).")


@app.command("act")
def act(
    target: str = typer.Argument(..., help="intent/NAME: the intent that declares the action."),
    action: str = typer.Argument(..., help="The declared action to run now."),
    reason: str = Reason,
    sensor: str | None = typer.Option(None, "--sensor", help="The sensor it is about."),
    namespace: str = Namespace,
    as_user: str | None = As,
    as_group: str | None = AsGroup,
    kubeconfig: str | None = Kubeconfig,
    output: Output = Format,
) -> None:
    """Run an intent's declared action now, through its policy, approval and audit."""
    kind, name = parse_target(target)
    if kind != AutomationIntent.crd.kind:
        raise typer.BadParameter("act takes intent/NAME", param_hint="TARGET")
    api_client = api(kubeconfig, as_user, as_group)
    with refusals_exit():
        who = whoami(api_client)
        requester = User.authenticated(who.user, who.groups)
        manifest = manual_action_manifest(namespace, requester, reason, name, action, sensor=sensor)
        report(request_action(api_client, manifest), who, output)


@app.command("revert")
def revert(
    target: str = typer.Argument(..., help="action/ID: the executed action to undo."),
    reason: str = Reason,
    as_user: str | None = As,
    as_group: str | None = AsGroup,
    kubeconfig: str | None = Kubeconfig,
    output: Output = Format,
) -> None:
    """Undo an executed action with its declared compensation, once. (The ManualAction goes
    to the namespace the action's id starts with: the intent's.)"""
    kind, _, action_id = target.partition("/")
    if kind.lower() not in ("action", "actions") or not action_id:
        raise typer.BadParameter("revert takes action/ID", param_hint="TARGET")
    api_client = api(kubeconfig, as_user, as_group)
    with refusals_exit():
        who = whoami(api_client)
        namespace = action_id.partition(".")[0]
        requester = User.authenticated(who.user, who.groups)
        manifest = manual_action_manifest(namespace, requester, reason, reverts=action_id)
        report(request_action(api_client, manifest), who, output)
