"""``aiosctl approve|reject KIND/NAME``: a human decision, with who made it and when.

Who decides is the identity the API server authenticates (``SelfSubjectReview``), with
``--as`` to act as someone else (the API server checks that the caller may impersonate),
so the record names a verified person, not a typed-in name. Each kind says where its
decisions go in ``DECIDERS``; a ModelDeployment's is written to ``status.rollout.approval``
(Kubernetes RBAC on the status subresource governs who may write it), from where the
operator forwards it to the rollout workflow as a signal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import typer
from kubernetes import client, config
from rich.console import Console

from aios.api import GROUP, VERSION, ModelDeployment
from aios.cli.output import Format, Output, emit

app = typer.Typer()
console = Console(stderr=True)


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """One decision as typed on the command line."""

    kind: str
    name: str
    namespace: str
    decision: str  # approved | rejected
    version: str | None
    reason: str = ""


class Refused(Exception):
    """The decision cannot be recorded; the message says why."""


def api(kubeconfig: str | None, as_user: str | None, as_group: str | None) -> client.ApiClient:
    """The kubeconfig's client, impersonating ``as_user`` (in ``as_group``) when given."""
    api_client = config.new_client_from_config(config_file=kubeconfig)
    if as_user:
        api_client.set_default_header("Impersonate-User", as_user)
        if as_group:
            api_client.set_default_header("Impersonate-Group", as_group)
    elif as_group:
        raise typer.BadParameter("--as-group needs --as", param_hint="--as-group")
    return api_client


def whoami(api_client: client.ApiClient) -> Identity:
    """The caller as the API server authenticated (or impersonated) them."""
    review = client.AuthenticationV1Api(api_client).create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    )
    info = review.status.user_info if review.status else None
    if info is None or not info.username:
        raise Refused("the API server did not say who you are (SelfSubjectReview)")
    return Identity(info.username, tuple(info.groups or ()))


def allowed(approvers: list[str], who: Identity) -> bool:
    """``group:NAME`` matches a group, ``user:NAME`` or a bare name the user; no approvers
    listed leaves it to RBAC alone."""
    if not approvers:
        return True
    for entry in approvers:
        kind, _, value = entry.partition(":") if ":" in entry else ("user", "", entry)
        if (kind == "group" and value in who.groups) or (kind == "user" and value == who.user):
            return True
    return False


def model_deployment_decision(
    obj: Mapping[str, Any], request: Request, who: Identity, now: datetime
) -> dict[str, Any]:
    """The status patch recording ``request`` on a ModelDeployment, or ``Refused``."""
    status = obj.get("status") or {}
    rollout = status.get("rollout") or {}
    label = f"modeldeployment/{request.name}"
    if rollout.get("phase") != "AwaitingApproval":
        raise Refused(
            f"{label} is not waiting for a decision (rollout of "
            f"{rollout.get('version', 'nothing')}: {rollout.get('phase', 'none')})"
        )
    if request.version is None:
        raise Refused(f"{label}: say which version you decide on (--version)")
    if request.version != rollout["version"]:
        raise Refused(
            f"{label} waits for a decision on {rollout['version']}, not {request.version}"
        )
    approvers = ((obj.get("spec") or {}).get("approval") or {}).get("approvers") or []
    if not allowed(approvers, who):
        raise Refused(f"{who.user} is not among the approvers of {label}: {', '.join(approvers)}")
    record = {
        "version": rollout["version"],
        "decision": request.decision,
        "by": who.user,
        "at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {"status": {"rollout": {"approval": record}}}


def decide_model_deployment(api_client: client.ApiClient, request: Request, who: Identity) -> str:
    objects = client.CustomObjectsApi(api_client)
    plural = ModelDeployment.crd.plural
    try:
        obj: Any = objects.get_namespaced_custom_object(
            GROUP, VERSION, request.namespace, plural, request.name
        )
    except client.ApiException as error:
        hint = (
            f" ({who.user} needs RBAC: get modeldeployments, patch modeldeployments/status)"
            if error.status == 403
            else ""
        )
        raise Refused(f"modeldeployment/{request.name}: {error.reason}{hint}") from error
    patch = model_deployment_decision(obj, request, who, datetime.now(UTC))
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, request.namespace, plural, request.name, patch
    )
    version = patch["status"]["rollout"]["approval"]["version"]
    return f"{request.decision} modeldeployment/{request.name} version {version} as {who.user}"


def decide_action(api_client: client.ApiClient, request: Request, who: Identity) -> str:
    """Signal the action's workflow (its id is the action id) with the verified reviewer;
    the workflow accepts it only from an approver of the current escalation stage."""
    import asyncio

    from temporalio.client import Client
    from temporalio.service import RPCError

    from aios.workflows.action import Review

    address = os.environ.get("AIOS_TEMPORAL_ADDRESS")
    if not address:
        raise Refused('set AIOS_TEMPORAL_ADDRESS (eval "$(aiosctl env)" does) to reach Temporal')

    async def signal() -> str:
        temporal = await Client.connect(
            address, namespace=os.environ.get("AIOS_TEMPORAL_NAMESPACE", "default")
        )
        handle = temporal.get_workflow_handle(request.name)
        try:
            state = await handle.query("state")
        except RPCError as error:
            raise Refused(f"action/{request.name}: {error.message}") from error
        if state["phase"] != "awaiting-approval":
            raise Refused(f"action/{request.name} is not waiting for approval ({state['phase']})")
        if not allowed(state["allowedApprovers"], who):
            raise Refused(
                f"{who.user} is not among the approvers of action/{request.name}: "
                f"{', '.join(state['allowedApprovers'])}"
            )
        review = Review(
            approver=who.user,
            groups=list(who.groups),
            approved=request.decision == "approved",
            reason=request.reason,
        )
        await handle.signal("review", review)
        return f"{request.decision} action/{request.name} as {who.user}"

    return asyncio.run(signal())


Decider = Callable[[client.ApiClient, Request, Identity], str]
DECIDERS: dict[str, Decider] = {
    "modeldeployment": decide_model_deployment,
    "modeldeployments": decide_model_deployment,
    "md": decide_model_deployment,
    "mdep": decide_model_deployment,
    "action": decide_action,
    "actions": decide_action,
}
"""Kind (as typed: singular, plural or short name) → where its decisions go."""


def parse_target(target: str) -> tuple[str, str]:
    kind, _, name = target.partition("/")
    if not name or kind.lower() not in DECIDERS:
        kinds = ", ".join(sorted({k for k in DECIDERS if k.isalpha()}))
        raise typer.BadParameter(
            f"expected KIND/NAME with KIND one of {kinds}", param_hint="TARGET"
        )
    return kind.lower(), name


Namespace = typer.Option("default", "--namespace", "-n", help="The object's namespace.")
Version = typer.Option(None, "--version", help="The model version decided on (the awaited one).")
Reason = typer.Option("", "--reason", help="Why (recorded with the decision).")
As = typer.Option(None, "--as", help="Decide as this user (impersonation).")
AsGroup = typer.Option(None, "--as-group", help="...and as a member of this group.")
Kubeconfig = typer.Option(None, "--kubeconfig", help="Default: $KUBECONFIG or ~/.kube/config.")


def command(decision: str, doc: str) -> Callable[..., None]:
    """``approve`` and ``reject`` are one command with a different decision."""

    def decide(
        target: str = typer.Argument(
            ..., help="KIND/NAME: modeldeployment/pm25-anomaly or action/ACTION_ID."
        ),
        namespace: str = Namespace,
        version: str | None = Version,
        reason: str = Reason,
        as_user: str | None = As,
        as_group: str | None = AsGroup,
        kubeconfig: str | None = Kubeconfig,
        output: Output = Format,
    ) -> None:
        kind, name = parse_target(target)
        api_client = api(kubeconfig, as_user, as_group)
        try:
            who = whoami(api_client)
            request = Request(kind, name, namespace, decision, version, reason)
            result = DECIDERS[kind](api_client, request, who)
            if output is Output.text:
                print(result)
            else:
                emit({**asdict(request), "by": who.user, "result": result}, output)
        except Refused as error:
            console.print(f"[red]{error}[/]")
            raise typer.Exit(1) from error

    decide.__doc__ = doc
    return decide


app.command("approve")(
    command("approved", "Approve what TARGET waits for (a model version's promotion).")
)
app.command("reject")(
    command("rejected", "Reject what TARGET waits for; a rejected model version is rolled back.")
)
