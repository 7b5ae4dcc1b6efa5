"""The console's pages as plain server-rendered HTML: every value escaped, every control
labelled and reachable by keyboard, no asset from elsewhere."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from aios.console.views import (
    ActionRow,
    Filters,
    GatewayRow,
    IntentRow,
    ModelRow,
    PendingAction,
    PendingVersion,
    ago,
    left,
)

OUTCOMES = (
    "running", "executed", "denied", "rejected", "expired", "policy-unavailable",
    "rate-limited", "failed",
)  # fmt: skip
CURRENT = ' aria-current="page"'
NAV = (("/inbox", "Approvals"), ("/actions", "Actions"), ("/overview", "Overview"))


@dataclass(frozen=True)
class Frame:
    """What every signed-in page carries: who, their form token, and the last result."""

    user: str
    form_token: str
    done: str = ""
    refused: str = ""


def page(title: str, body: str, frame: Frame | None = None, current: str = "") -> str:
    nav = ""
    if frame is not None:
        links = "".join(
            f'<li><a href="{href}"{CURRENT if href == current else ""}>{label}</a></li>'
            for href, label in NAV
        )
        nav = (
            f'<nav aria-label="Sections"><ul>{links}</ul></nav>'
            f'<form method="post" action="/signout" class="who">'
            f"<span>Signed in as <strong>{escape(frame.user)}</strong></span> "
            f'<input type="hidden" name="csrf" value="{escape(frame.form_token)}">'
            f'<button type="submit">Sign out</button></form>'
        )
    notice = ""
    if frame is not None and frame.done:
        notice = f'<p class="done" role="status">{escape(frame.done)}</p>'
    if frame is not None and frame.refused:
        notice = f'<p class="refused" role="alert">{escape(frame.refused)}</p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · aios</title>"
        '<link rel="stylesheet" href="/assets/console.css">'
        '<script src="/assets/console.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><span class="brand">aios</span>{nav}</header>'
        f'<main id="main"><h1>{escape(title)}</h1>{notice}{body}</main></body></html>'
    )


def signin(error: str = "") -> str:
    alert = f'<p class="refused" role="alert">{escape(error)}</p>' if error else ""
    body = (
        f"{alert}<p>Sign in with a token the cluster accepts: a ServiceAccount token "
        "(<code>kubectl create token NAME</code>) or your OIDC ID token.</p>"
        '<form method="post" action="/signin" class="signin">'
        '<label for="token">Token</label>'
        '<textarea id="token" name="token" rows="6" required autocomplete="off"></textarea>'
        '<button type="submit">Sign in</button></form>'
    )
    return page("Sign in", body)


def hidden(frame: Frame, **fields: str) -> str:
    pairs = {"csrf": frame.form_token, **fields}
    return "".join(
        f'<input type="hidden" name="{name}" value="{escape(value)}">'
        for name, value in pairs.items()
    )


def decide_form(frame: Frame, key: str, **target: str) -> str:
    """Approve or Reject, with a comment that is recorded as the reason."""
    return (
        f'<form method="post" action="/decide" class="decide">{hidden(frame, **target)}'
        f'<label for="reason-{key}">Comment</label>'
        f'<input id="reason-{key}" name="reason" type="text" maxlength="1024">'
        '<button type="submit" name="decision" value="approved" class="approve">Approve</button>'
        '<button type="submit" name="decision" value="rejected" class="reject">Reject</button>'
        "</form>"
    )


def facts(rows: Iterable[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    return f'<dl class="lineage">{items}</dl>'


def inbox(
    frame: Frame,
    actions: Sequence[tuple[PendingAction, bool]],
    versions: Sequence[tuple[PendingVersion, bool]],
    now: datetime,
) -> str:
    """What waits for a decision, oldest first; the buttons only where the user decides."""
    cards = []
    for item, may in actions:
        buttons = (
            decide_form(frame, item.action_id, kind="action", name=item.action_id)
            if may
            else '<p class="note">You are not among its approvers.</p>'
        )
        cards.append(
            f'<article class="card" data-action-id="{escape(item.action_id)}">'
            f"<h2>{escape(item.action)} <small>{escape(item.namespace)}/"
            f"{escape(item.intent)}</small></h2>"
            f"<p>Target <code>{escape(item.target)}</code>; waiting since "
            f'<time datetime="{item.since.isoformat()}">{ago(item.since, now)}</time>; '
            f"{item.deadline.what} {left(item.deadline.at, now)}.</p>"
            f"{facts([('Action id', item.action_id), *item.lineage])}"
            f"<p>Approvers: {escape(', '.join(item.approvers) or 'anyone RBAC allows')}</p>"
            f"{buttons}</article>"
        )
    for version, may in versions:
        key = f"{version.namespace}-{version.name}-{version.version}"
        buttons = (
            decide_form(
                frame,
                key,
                kind="modeldeployment",
                name=version.name,
                namespace=version.namespace,
                version=version.version,
            )
            if may
            else '<p class="note">You are not among its approvers.</p>'
        )
        cards.append(
            f'<article class="card" data-model="{escape(key)}">'
            f"<h2>Promote {escape(version.name)}@{escape(version.version)} "
            f"<small>{escape(version.namespace)}</small></h2>"
            f"<p>Canary at {version.weight}%. {escape(version.message)}</p>{buttons}</article>"
        )
    body = "".join(cards) or '<p class="empty">Nothing waits for a decision.</p>'
    return page("Approvals", body, frame, "/inbox")


def select(name: str, label: str, options: Iterable[str], chosen: str) -> str:
    opts = "".join(
        f'<option value="{escape(o)}"{" selected" if o == chosen else ""}>{escape(o or "any")}'
        "</option>"
        for o in ("", *options)
    )
    return (
        f'<label for="f-{name}">{label}</label><select id="f-{name}" name="{name}">{opts}</select>'
    )


def timeline(
    frame: Frame,
    rows: Sequence[tuple[ActionRow, bool]],
    filters: Filters,
    intents: Sequence[str],
    sites: Sequence[str],
) -> str:
    form = (
        '<form method="get" action="/actions" class="filters">'
        f"{select('intent', 'Intent', intents, filters.intent)}"
        f"{select('site', 'Site', sites, filters.site)}"
        f"{select('outcome', 'Outcome', OUTCOMES, filters.outcome)}"
        '<button type="submit">Filter</button></form>'
    )
    lines = []
    for row, may_revert in rows:
        revert = ""
        if row.revertible and may_revert:
            revert = (
                f'<form method="post" action="/revert">{hidden(frame, action_id=row.action_id)}'
                f'<label for="why-{escape(row.action_id)}">Reason</label>'
                f'<input id="why-{escape(row.action_id)}" name="reason" required maxlength="1024">'
                f'<button type="submit">Revert ({escape(row.compensation or "")})</button></form>'
            )
        lines.append(
            f'<tr data-action-id="{escape(row.action_id)}">'
            f'<td><time datetime="{row.started.isoformat()}">'
            f"{row.started.strftime('%Y-%m-%d %H:%M:%S')}</time></td>"
            f"<td>{escape(row.namespace)}/{escape(row.intent)}</td><td>{escape(row.action)}</td>"
            f'<td class="outcome-{escape(row.outcome)}">{escape(row.outcome)}</td>'
            f"<td>{escape(row.decided_by)}</td><td><code>{escape(row.trace_id)}</code></td>"
            f"<td>{escape(row.site)}</td><td>{revert}</td></tr>"
        )
    table = (
        "<table><caption>Latest actions, newest first</caption><thead><tr>"
        '<th scope="col">Started</th><th scope="col">Intent</th><th scope="col">Action</th>'
        '<th scope="col">Outcome</th><th scope="col">Approved or asked by</th>'
        '<th scope="col">Trace id</th><th scope="col">Site</th><th scope="col">Revert</th>'
        f"</tr></thead><tbody>{''.join(lines)}</tbody></table>"
    )
    return page("Actions", form + table, frame, "/actions")


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}/min"


def overview_body(
    frame: Frame,
    intents: Sequence[tuple[IntentRow, bool]],
    models: Sequence[ModelRow],
    gateways: Sequence[GatewayRow],
    now: datetime,
) -> str:
    """The live part of the overview (the page swaps it in on every refresh)."""
    intent_rows = []
    for row, may_act in intents:
        act = ""
        if may_act and row.actions_declared:
            key = f"{row.namespace}-{row.name}"
            act = (
                f'<form method="post" action="/act">'
                f"{hidden(frame, namespace=row.namespace, intent=row.name)}"
                f"{select('action-' + key, 'Action', row.actions_declared, '')}"
                f'<label for="sensor-{key}">Sensor</label><input id="sensor-{key}" name="sensor">'
                f'<label for="why-{key}">Reason</label>'
                f'<input id="why-{key}" name="reason" required maxlength="1024">'
                '<button type="submit">Run now</button></form>'
            )
        intent_rows.append(
            f'<tr data-intent="{escape(row.namespace)}/{escape(row.name)}">'
            f"<td>{escape(row.namespace)}/{escape(row.name)}</td><td>{escape(row.ready)}</td>"
            f"<td>{escape(row.mode)}</td><td>{row.decisions}</td>"
            f"<td>{rate(row.decisions_per_minute)}</td><td>{row.actions}</td>"
            f"<td>{rate(row.actions_per_minute)}</td><td>{act}</td></tr>"
        )
    model_rows = "".join(
        f'<tr data-model="{escape(m.namespace)}/{escape(m.name)}">'
        f"<td>{escape(m.namespace)}/{escape(m.name)}</td><td>{escape(m.ready)}</td>"
        f"<td>{escape(m.active)}</td><td>{escape(m.rollout)}</td></tr>"
        for m in models
    )
    gateway_rows = "".join(
        f'<tr data-gateway="{escape(g.namespace)}/{escape(g.name)}">'
        f"<td>{escape(g.namespace)}/{escape(g.name)}</td><td>{escape(g.ready)}</td>"
        f"<td>{ago(g.last_seen, now)}</td>"
        f"<td>{'—' if g.buffer_fill is None else f'{g.buffer_fill:.0%}'}</td></tr>"
        for g in gateways
    )

    def table(caption: str, heads: Sequence[str], rows: str) -> str:
        th = "".join(f'<th scope="col">{h}</th>' for h in heads)
        head = f"<caption>{caption}</caption><thead><tr>{th}</tr></thead>"
        return f"<table>{head}<tbody>{rows}</tbody></table>"

    return (
        table(
            "Intents",
            ("Intent", "Ready", "Mode", "Decisions", "Rate", "Actions", "Rate", "Act by hand"),
            "".join(intent_rows),
        )
        + table("Models", ("Model", "Ready", "Stable version", "Rollout"), model_rows)
        + table("Gateways", ("Gateway", "Ready", "Last seen", "Buffer"), gateway_rows)
        + f'<p class="note">Updated <time datetime="{now.isoformat()}">'
        f"{now.strftime('%H:%M:%S')} UTC</time></p>"
    )


def overview(frame: Frame, body: str) -> str:
    live = f'<div id="live" data-refresh="/overview/live" aria-live="polite">{body}</div>'
    return page("Overview", live, frame, "/overview")
