"""``aios-console``: the web console's HTTP server (aiohttp). Handlers are thin: read through
the sources, filter by what SubjectAccessReview allows, render with the pages; what a
user decides is created with their own token (an Approval, a ManualAction), so the API
server authenticates them and the admission webhooks judge it, exactly as for aiosctl."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

from aiohttp import web
from kubernetes import client

from aios.api import GROUP, VERSION, Approval, ManualAction
from aios.api.approval import User, approval_manifest
from aios.api.manual_action import manual_action_manifest
from aios.connectors.kube import api_client, refusal_message
from aios.connectors.temporal import connect
from aios.console import pages, sources, views
from aios.console.access import Access, Ask, Identity
from aios.console.assets import CSS, JS
from aios.console.sessions import COOKIE, Sealer, Session, new_session

log = logging.getLogger("aios.console")


@dataclass(frozen=True)
class ConsoleSettings:
    """Read once at start-up."""

    port: int
    temporal_address: str
    temporal_namespace: str
    session_key: bytes
    secure_cookie: bool
    namespaces: tuple[str, ...] = ()  # the operator's; empty: every namespace

    @classmethod
    def from_env(cls, port: int) -> ConsoleSettings:
        key_file = os.environ.get("AIOS_CONSOLE_SESSION_KEY_FILE")
        if key_file:
            key = Path(key_file).read_bytes()
        else:  # sessions then last as long as this process, on this replica only
            log.warning("no AIOS_CONSOLE_SESSION_KEY_FILE: a random session key")
            key = secrets.token_bytes(32)
        return cls(
            port=port,
            temporal_address=os.environ["AIOS_TEMPORAL_ADDRESS"],
            temporal_namespace=os.environ.get("AIOS_TEMPORAL_NAMESPACE", "default"),
            session_key=key,
            secure_cookie=os.environ.get("AIOS_CONSOLE_SECURE_COOKIE", "true") == "true",
            namespaces=tuple(
                n for n in os.environ.get("AIOS_CONSOLE_NAMESPACES", "").split(",") if n
            ),
        )


@dataclass
class Console:
    settings: ConsoleSettings
    sealer: Sealer
    access: Access
    actions: sources.Actions
    rates: views.Rates

    def identity(self, session: Session) -> Identity:
        return Identity(session.user, session.groups)

    async def reviewed_again(self, session: Session) -> Session | None:
        """The session with the groups the cluster gives its token now; None once the
        cluster no longer accepts the token (revoked, expired, deleted account)."""
        who = await asyncio.to_thread(self.access.review, session.token)
        if who is None or who.user != session.user:
            return None
        return session.reviewed_again(who.groups)

    async def may(self, session: Session, verb: str, resource: str, namespace: str) -> bool:
        ask = Ask(verb, resource, namespace)
        return await asyncio.to_thread(self.access.allowed, self.identity(session), ask)

    async def listed(self, plural: str) -> list[dict[str, Any]]:
        namespaces = self.settings.namespaces
        return await asyncio.to_thread(sources.listed, self.access.api_client, plural, namespaces)


CONSOLE = web.AppKey("console", Console)
Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def signed_in(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Pages for a signed-in user whose token the cluster still accepts (reviewed again
    every few minutes); a form post must carry the session's form token."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]
        session = console.sealer.open(request.cookies.get(COOKIE))
        if session is not None and session.stale:
            session = await console.reviewed_again(session)
            renewed = session
        else:
            renewed = None
        if session is None:
            refused: web.HTTPException = (
                web.HTTPSeeOther("/signin")
                if request.method == "GET"
                else web.HTTPUnauthorized(text="sign in first")
            )
            refused.del_cookie(COOKIE, path="/")
            raise refused
        if request.method == "POST":
            form = await request.post()
            if not console.sealer.form_token_valid(session, str(form.get("csrf", ""))):
                raise web.HTTPForbidden(text="this form did not come from your console session")
        try:
            response = await handler(request, session)
        except web.HTTPException as answered:  # a redirect after a form: keeps the renewal
            if renewed is not None:
                keep_session(answered, console, renewed)
            raise
        if renewed is not None:
            keep_session(response, console, renewed)
        return response

    return wrapped


def keep_session(response: web.StreamResponse, console: Console, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        console.sealer.seal(session),
        max_age=max(int(session.expires - time.time()), 0),
        httponly=True,
        samesite="Strict",
        secure=console.settings.secure_cookie,
        path="/",
    )


def frame(request: web.Request, session: Session) -> pages.Frame:
    console = request.app[CONSOLE]
    return pages.Frame(
        session.user,
        console.sealer.form_token(session),
        done=request.query.get("done", ""),
        refused=request.query.get("refused", ""),
    )


def html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", headers=SECURITY_HEADERS)


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def signin_page(request: web.Request) -> web.Response:
    return html(pages.signin())


async def signin(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    token = str((await request.post()).get("token", "")).strip()
    who = await asyncio.to_thread(console.access.review, token) if token else None
    if who is None:
        return web.Response(
            text=pages.signin("The cluster did not accept this token."),
            content_type="text/html",
            status=401,
            headers=SECURITY_HEADERS,
        )
    log.info("signed in: %s", who.user)
    response = web.HTTPSeeOther("/inbox")
    keep_session(response, console, new_session(token, who.user, list(who.groups)))
    return response


@signed_in
async def signout(request: web.Request, session: Session) -> web.StreamResponse:
    response = web.HTTPSeeOther("/signin")
    response.del_cookie(COOKIE, path="/")
    return response


async def visible(
    console: Console, session: Session, resource: str, namespaces: set[str]
) -> set[str]:
    """The namespaces among ``namespaces`` where the user may read ``resource``."""
    ordered = sorted(namespaces)
    allowed = await asyncio.gather(*(console.may(session, "get", resource, ns) for ns in ordered))
    return {ns for ns, ok in zip(ordered, allowed, strict=True) if ok}


@signed_in
async def inbox(request: web.Request, session: Session) -> web.StreamResponse:
    console = request.app[CONSOLE]
    now = datetime.now(UTC)
    runs = await console.actions.pending()
    items = [views.pending_action(r.request, r.state, r.started, now) for r in runs if r.state]
    seen = await visible(console, session, "automationintents", {i.namespace for i in items})
    actions = []
    for item in (i for i in items if i.namespace in seen):
        may = item.waits_for(session.user, session.groups) and await console.may(
            session, "create", Approval.crd.plural, item.namespace
        )
        actions.append((item, may))
    found = [views.pending_version(m) for m in await console.listed("modeldeployments")]
    waiting = [v for v in found if v is not None]
    models_seen = await visible(
        console, session, "modeldeployments", {v.namespace for v in waiting}
    )
    versions = []
    for version in (v for v in waiting if v.namespace in models_seen):
        may = version.waits_for(session.user, session.groups) and await console.may(
            session, "create", Approval.crd.plural, version.namespace
        )
        versions.append((version, may))
    return html(pages.inbox(frame(request, session), actions, versions, now))


@signed_in
async def actions(request: web.Request, session: Session) -> web.StreamResponse:
    console = request.app[CONSOLE]
    filters = views.Filters(
        intent=request.query.get("intent", ""),
        site=request.query.get("site", ""),
        outcome=request.query.get("outcome", ""),
    )
    runs = await console.actions.recent(filters.visibility_query())
    rows = [views.action_row(r.request, r.approver, r.outcome, r.started) for r in runs]
    seen = await visible(console, session, "automationintents", {r.namespace for r in rows})
    rows = [r for r in rows if r.namespace in seen]
    shown = []
    for row in (r for r in rows if filters.keep(r)):
        may = row.revertible and await console.may(
            session, "create", ManualAction.crd.plural, row.namespace
        )
        shown.append((row, may))
    intents = sorted({f"{r.namespace}/{r.intent}" for r in rows})
    sites = sorted({r.site for r in rows if r.site})
    return html(pages.timeline(frame(request, session), shown, filters, intents, sites))


async def overview_body(request: web.Request, session: Session) -> str:
    console = request.app[CONSOLE]
    now = datetime.now(UTC)
    intents_raw, models_raw, gateways_raw = await asyncio.gather(
        console.listed("automationintents"),
        console.listed("modeldeployments"),
        console.listed("edgegateways"),
    )
    intents = [console.rates.add(views.intent_row(i), now) for i in intents_raw]
    models = [views.model_row(m) for m in models_raw]
    gateways = [views.gateway_row(g) for g in gateways_raw]
    seen_intents = await visible(
        console, session, "automationintents", {i.namespace for i in intents}
    )
    seen_models = await visible(console, session, "modeldeployments", {m.namespace for m in models})
    seen_gateways = await visible(console, session, "edgegateways", {g.namespace for g in gateways})
    acting = []
    for row in (i for i in intents if i.namespace in seen_intents):
        may = await console.may(session, "create", ManualAction.crd.plural, row.namespace)
        acting.append((row, may))
    return pages.overview_body(
        frame(request, session),
        acting,
        [m for m in models if m.namespace in seen_models],
        [g for g in gateways if g.namespace in seen_gateways],
        now,
    )


@signed_in
async def overview(request: web.Request, session: Session) -> web.StreamResponse:
    return html(pages.overview(frame(request, session), await overview_body(request, session)))


@signed_in
async def overview_live(request: web.Request, session: Session) -> web.StreamResponse:
    return html(await overview_body(request, session))


def user_of(session: Session) -> User:
    """The requester as the objects record them (the API server checks it is the caller)."""
    return User.authenticated(session.user, session.groups)


async def create_as_user(
    console: Console, session: Session, namespace: str, plural: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Create ``body`` with the user's own token: the API server and its webhooks judge."""

    def create() -> dict[str, Any]:
        with console.access.as_user(session.token) as own:  # closes its connections
            objects = client.CustomObjectsApi(own)
            created = objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body
            )
            return cast(dict[str, Any], created)

    return await asyncio.to_thread(create)


def back(to: str, **message: str) -> web.HTTPSeeOther:
    """Back to the page, saying what happened."""
    return web.HTTPSeeOther(f"{to}?{urlencode(message)}")


@signed_in
async def decide(request: web.Request, session: Session) -> web.StreamResponse:
    form = await request.post()
    kind, name = str(form.get("kind", "")), str(form.get("name", ""))
    decision = str(form.get("decision", ""))
    if decision not in ("approved", "rejected") or kind not in ("action", "modeldeployment"):
        raise web.HTTPBadRequest(
            text="decision must be approved or rejected, of an action or a modeldeployment"
        )
    target: dict[str, Any] = {"kind": "Action", "name": name}
    namespace = name.partition(".")[0]  # an action's Approval lives with its intent
    if kind == "modeldeployment":
        namespace = str(form.get("namespace", ""))
        target = {"kind": "ModelDeployment", "name": name, "version": str(form.get("version", ""))}
    reason = str(form.get("reason", ""))[:1024]
    body = approval_manifest(namespace, target, decision, user_of(session), reason)
    console = request.app[CONSOLE]
    try:
        await create_as_user(console, session, namespace, Approval.crd.plural, body)
    except client.ApiException as error:
        raise back("/inbox", refused=refusal_message(error, Approval.crd.plural)) from error
    raise back("/inbox", done=f"{decision} {kind}/{name} as {session.user}")


async def request_action(
    request: web.Request, session: Session, namespace: str, body: dict[str, Any], to: str
) -> web.StreamResponse:
    try:
        created = await create_as_user(
            request.app[CONSOLE], session, namespace, ManualAction.crd.plural, body
        )
    except client.ApiException as error:
        raise back(to, refused=refusal_message(error, ManualAction.crd.plural)) from error
    raise back(to, done=f"manualaction/{created['metadata']['name']} created as {session.user}")


@signed_in
async def act(request: web.Request, session: Session) -> web.StreamResponse:
    form = await request.post()
    intent = str(form.get("intent", ""))
    namespace = str(form.get("namespace", ""))
    chosen = str(form.get(f"action-{namespace}-{intent}", ""))
    body = manual_action_manifest(
        namespace,
        user_of(session),
        str(form.get("reason", "")),
        intent=intent,
        action=chosen,
        sensor=str(form.get("sensor", "")) or None,
    )
    return await request_action(request, session, namespace, body, "/overview")


@signed_in
async def revert(request: web.Request, session: Session) -> web.StreamResponse:
    form = await request.post()
    action_id = str(form.get("action_id", ""))
    namespace = action_id.partition(".")[0]
    reason = str(form.get("reason", ""))
    body = manual_action_manifest(namespace, user_of(session), reason, reverts=action_id)
    return await request_action(request, session, namespace, body, "/actions")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def asset(body: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"}
        return web.Response(text=body, content_type=content_type, headers=headers)

    return serve


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/inbox")


def application(console: Console) -> web.Application:
    app = web.Application()
    app[CONSOLE] = console
    app.add_routes(
        [
            web.get("/", home),
            web.get("/healthz", healthz),
            web.get("/assets/console.css", asset(CSS, "text/css")),
            web.get("/assets/console.js", asset(JS, "text/javascript")),
            web.get("/signin", signin_page),
            web.post("/signin", signin),
            web.post("/signout", signout),
            web.get("/inbox", inbox),
            web.get("/actions", actions),
            web.get("/overview", overview),
            web.get("/overview/live", overview_live),
            web.post("/decide", decide),
            web.post("/act", act),
            web.post("/revert", revert),
        ]
    )
    return app


async def serve(settings: ConsoleSettings) -> None:
    temporal = await connect(settings.temporal_address, settings.temporal_namespace, lazy=True)
    console = Console(
        settings=settings,
        sealer=Sealer(settings.session_key),
        access=Access(api_client()),
        actions=sources.Actions(temporal),
        rates=views.Rates(),
    )
    runner = web.AppRunner(application(console), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host="0.0.0.0", port=settings.port).start()
    log.info("serving on :%d", settings.port)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aios-console", description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(ConsoleSettings.from_env(args.port)))


if __name__ == "__main__":
    main()
