"""``aiosctl approve|reject KIND/NAME``: a human decision, as an object the API server vouches for.

The command creates an Approval naming the caller as the API server authenticates them
(``SelfSubjectReview``; ``--as`` acts as someone else, which the API server lets only
impersonators do). The admission webhook admits it only when that is so, the target waits
for this decision and the caller is among its approvers; its refusal is printed as it
came. The target's workflow reads the Approval through the API before it acts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import typer
from kubernetes import client, config
from rich.console import Console

from aios.api import GROUP, VERSION, Approval
from aios.api.approval import User
from aios.api.approval import approval_manifest as approval_record
from aios.cli.output import Format, Output, emit
from aios.connectors.kube import refusal_message

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


@contextmanager
def refusals_exit() -> Iterator[None]:
    """A refusal is printed on one line (for scripts too) and exits 1."""
    try:
        yield
    except Refused as error:
        console.print(f"[red]{error}[/]", soft_wrap=True)
        raise typer.Exit(1) from error


def api(kubeconfig: str | None, as_user: str | None, as_group: str | None) -> client.ApiClient:
    """The kubeconfig's client, impersonating ``as_user`` (in ``as_group``) when given."""
    api_client: client.ApiClient = config.new_client_from_config(config_file=kubeconfig)
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


TARGET_KINDS: dict[str, str] = {
    "modeldeployment": "ModelDeployment",
    "modeldeployments": "ModelDeployment",
    "md": "ModelDeployment",
    "mdep": "ModelDeployment",
    "action": "Action",
    "actions": "Action",
}
"""Kind as typed (singular, plural or short name) → the Approval's target kind."""


def approval_manifest(request: Request, who: Identity) -> dict[str, Any]:
    """The Approval recording ``request`` by ``who``. An action's Approval goes to the
    namespace its id starts with (the intent's), whatever ``-n`` says."""
    kind = TARGET_KINDS[request.kind]
    target: dict[str, Any] = {"kind": kind, "name": request.name}
    namespace = request.namespace
    if kind == "ModelDeployment":
        if request.version is None:
            raise Refused(f"modeldeployment/{request.name}: say which version (--version)")
        target["version"] = request.version
    else:
        namespace = request.name.partition(".")[0]
    approver = User.authenticated(who.user, who.groups)
    return approval_record(namespace, target, request.decision, approver, request.reason)


def create_approval(api_client: client.ApiClient, request: Request, who: Identity) -> str:
    manifest = approval_manifest(request, who)
    namespace = manifest["metadata"]["namespace"]
    try:
        created: Any = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            GROUP, VERSION, namespace, Approval.crd.plural, manifest
        )
    except client.ApiException as error:
        raise Refused(refusal_message(error, Approval.crd.plural)) from error
    version = f" version {request.version}" if request.version else ""
    name = created["metadata"]["name"]
    return (
        f"{request.decision} {request.kind}/{request.name}{version} as {who.user} "
        f"(approval/{name} in {namespace})"
    )


def parse_target(target: str) -> tuple[str, str]:
    kind, _, name = target.partition("/")
    if not name or kind.lower() not in TARGET_KINDS:
        kinds = ", ".join(sorted(TARGET_KINDS))
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
        with refusals_exit():
            who = whoami(api_client)
            request = Request(kind, name, namespace, decision, version, reason)
            result = create_approval(api_client, request, who)
            if output is Output.text:
                print(result)
            else:
                emit({**asdict(request), "by": who.user, "result": result}, output)

    decide.__doc__ = doc
    return decide


app.command("approve")(
    command("approved", "Approve what TARGET waits for (a model version's promotion).")
)
app.command("reject")(
    command("rejected", "Reject what TARGET waits for; a rejected model version is rolled back.")
)
