"""The console's rules, stated once in ``aios.console.views``, its sealed sessions and its
pages: who is asked and by when, what a row shows, what a forged cookie or form gets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from aiohttp.test_utils import TestClient, TestServer

from aios.api.events import ActionRequest, ActionState
from aios.console import pages, views
from aios.console.server import CONSOLE, Console, ConsoleSettings, application
from aios.console.sessions import COOKIE, REVIEW_SECONDS, Sealer, Session, new_session
from aios.stack.platform import EXAMPLES

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def request(**action: Any) -> ActionRequest:
    ref = {"namespace": "city", "name": "pm25-alerting", "generation": 1}
    return ActionRequest.model_validate(
        {
            "actionId": "city.pm25-alerting.r-1",
            "intent": ref,
            "action": {
                "name": "dispatch-street-cleaning",
                "type": "mqtt",
                "target": "city/<d7>/dispatch",
                "approval": {
                    "required": True,
                    "approvers": ["group:street-cleaning-supervisors"],
                    "timeoutSeconds": 3600,
                    "escalation": [{"approvers": ["group:duty"], "afterSeconds": 900}],
                },
                **action,
            },
            "decision": {
                "decisionId": "city/pm25-alerting/r-1",
                "intent": ref,
                "eventId": "r-1",
                "sensorId": "aq-d7-001",
                "time": NOW.isoformat(),
                "decidedAt": NOW.isoformat(),
                "outcome": "act",
                "rule": "pm25-sustained",
                "action": "dispatch-street-cleaning",
                "model": {"call": "anomaly", "deployment": "pm25-anomaly", "version": "2"},
                "score": 0.94,
                "confidence": 0.88,
                "outputs": {"anomaly": {"score": 0.94}},
                "lineage": {"topic": "t", "partition": 0, "offset": 7, "gateway": "district-7"},
                "traceparent": f"00-{'a' * 32}-{'b' * 16}-01",
                "site": "city-a",
            },
        }
    )


WAITING = ActionState(
    phase="awaiting-approval",
    allowed_approvers=["group:street-cleaning-supervisors"],
    refused=[],
    policy_decision_id="opa-1",
    policy_warnings=["night-time dispatch"],
)


def test_a_waiting_action_escalates_first_then_expires() -> None:
    since = NOW - timedelta(minutes=10)
    first = views.deadline(request(), since, NOW)
    assert (first.what, first.at) == ("escalates", since + timedelta(seconds=900))
    later = views.deadline(request(), since, NOW + timedelta(minutes=6))
    assert (later.what, later.at) == ("expires", since + timedelta(seconds=3600))
    assert views.left(first.at, NOW) == "in 5m 0s"


def test_the_lineage_names_reading_gateway_model_rule_trace_and_policy() -> None:
    rows = dict(views.lineage(request(), WAITING))
    assert rows["Reading"].startswith("r-1 from sensor aq-d7-001 via gateway district-7")
    assert rows["Model"] == "pm25-anomaly@2: score 0.94, confidence 0.88"
    assert rows["Rule"] == "pm25-sustained"
    assert rows["Trace"] == "a" * 32
    assert rows["Policy"] == "allowed (OPA decision opa-1); warnings: night-time dispatch"


def test_an_action_waits_for_its_approvers_groups_only() -> None:
    item = views.pending_action(request(), WAITING, NOW, NOW)
    assert item.waits_for("sam", ["street-cleaning-supervisors"])
    assert not item.waits_for("mallory", ["duty"])


def test_a_row_shows_the_approver_and_is_revertible_only_when_executed_and_compensated() -> None:
    row = views.action_row(request(compensation="recall"), "sam", "executed", NOW)
    assert (row.decided_by, row.trace_id, row.site, row.revertible) == (
        "sam",
        "a" * 32,
        "city-a",
        True,
    )
    assert not views.action_row(request(compensation="recall"), "sam", "denied", NOW).revertible
    assert not views.action_row(request(), "sam", "executed", NOW).revertible
    assert views.action_row(request(), "", None, NOW).outcome == "running"


def test_filters_keep_by_intent_site_and_outcome() -> None:
    row = views.action_row(request(), "", "executed", NOW)
    assert views.Filters(intent="city/pm25-alerting", site="city-a", outcome="executed").keep(row)
    assert views.Filters(intent="pm25-alerting").keep(row)
    assert not views.Filters(site="city-b").keep(row)
    assert not views.Filters(outcome="denied").keep(row)


def test_filters_go_to_temporal_where_they_are_search_attributes_and_never_unquoted() -> None:
    assert views.Filters().visibility_query() == ""
    query = views.Filters(intent="city/pm25-alerting", site="city-a", outcome="executed")
    assert query.visibility_query() == (
        "AiosIntent = 'city/pm25-alerting' AND AiosOutcome = 'executed'"
    )
    assert views.Filters(outcome="running").visibility_query() == "ExecutionStatus = 'Running'"
    assert views.Filters(intent="x' OR 1=1 --", outcome="e'").visibility_query() == ""


def test_rates_are_per_minute_between_reads_and_none_after_a_reset() -> None:
    assert views.per_minute(None, views.Counted(10, NOW)) is None
    before = views.Counted(10, NOW)
    assert views.per_minute(before, views.Counted(40, NOW + timedelta(seconds=30))) == 60
    assert views.per_minute(before, views.Counted(3, NOW + timedelta(seconds=30))) is None
    rates = views.Rates()
    row = views.IntentRow("city", "i", "True (Ready)", "active", 10, 1, ())
    assert rates.add(row, NOW).decisions_per_minute is None
    later = views.IntentRow("city", "i", "True (Ready)", "active", 20, 1, ())
    assert rates.add(later, NOW + timedelta(seconds=60)).decisions_per_minute == 10


def test_a_sealed_session_opens_only_with_its_key_untouched_and_unexpired() -> None:
    sealer = Sealer(b"k" * 32)
    session = new_session("token-1", "sam", ["street-cleaning-supervisors"])
    sealed = sealer.seal(session)
    assert "token-1" not in sealed, "the token is encrypted, not only signed"
    assert sealer.open(sealed) == session
    assert Sealer(b"x" * 32).open(sealed) is None
    assert sealer.open(sealed[:-4] + "AAAA") is None
    expired = Session("token-1", "sam", (), NOW.timestamp(), NOW.timestamp())
    assert sealer.open(sealer.seal(expired)) is None
    other = new_session("token-2", "sam", [])
    assert sealer.form_token_valid(session, sealer.form_token(session))
    assert not sealer.form_token_valid(session, sealer.form_token(other))


def test_the_clusters_word_on_a_token_is_asked_again_after_a_few_minutes() -> None:
    session = new_session("token-1", "sam", ["street-cleaning"])
    assert not session.stale
    old = replace(session, reviewed=session.reviewed - REVIEW_SECONDS)
    assert old.stale
    again = old.reviewed_again(("duty",))
    assert (again.groups, again.stale, again.expires) == (("duty",), False, session.expires)


def test_pages_escape_what_they_show_and_offer_buttons_only_to_approvers() -> None:
    frame = pages.Frame("sam", "t0ken")
    item = views.pending_action(request(), WAITING, NOW - timedelta(minutes=1), NOW)
    offered = pages.inbox(frame, [(item, True)], [], NOW)
    assert "city/&lt;d7&gt;/dispatch" in offered and "<d7>" not in offered
    assert 'value="approved"' in offered and 'name="csrf" value="t0ken"' in offered
    assert '<label for="reason-city.pm25-alerting.r-1">Comment</label>' in offered
    withheld = pages.inbox(frame, [(item, False)], [], NOW)
    assert 'value="approved"' not in withheld and "not among its approvers" in withheld
    assert "Nothing waits" in pages.inbox(frame, [], [], NOW)


async def test_without_a_session_pages_send_to_sign_in_and_forged_forms_are_refused() -> None:
    settings = ConsoleSettings(8080, "temporal:7233", "default", b"k" * 32, False)
    sealer = Sealer(settings.session_key)
    console = Console(settings, sealer, access=None, actions=None, rates=views.Rates())  # type: ignore[arg-type]
    app = application(console)
    assert app[CONSOLE] is console
    async with TestClient(TestServer(app)) as http:
        response = await http.get("/inbox", allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (303, "/signin")
        assert (await http.post("/decide", allow_redirects=False)).status == 401
        session = new_session("token-1", "sam", [])
        http.session.cookie_jar.update_cookies({COOKIE: sealer.seal(session)})
        forged = await http.post("/decide", data={"csrf": "guess", "decision": "approved"})
        assert forged.status == 403
        assert "did not come from your console session" in await forged.text()
        wrong = await http.post(
            "/decide", data={"csrf": sealer.form_token(session), "decision": "maybe"}
        )
        assert wrong.status == 400
        page = await http.get("/signin")
        assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert (await http.get("/assets/console.js")).status == 200


def example(name: str, namespace: str = "city") -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    body["metadata"]["namespace"] = namespace
    return body


def test_a_model_version_waits_in_the_inbox_only_while_its_rollout_awaits_approval() -> None:
    model = example("pm25-anomaly")
    assert views.pending_version(model) is None
    model["status"] = {
        "rollout": {
            "version": "2024.11.3",
            "strategy": "canary",
            "source": model["spec"]["model"],
            "workflowId": "rollout-1",
            "phase": "AwaitingApproval",
            "weight": 50,
            "message": "all analyses passed",
            "steps": [{"step": 2, "weight": 50, "startedAt": NOW.isoformat()}],
        }
    }
    waiting = views.pending_version(model)
    assert waiting is not None
    assert (waiting.version, waiting.weight) == ("2024.11.3", 50)
    assert waiting.approvers == tuple(model["spec"]["approval"]["approvers"])
    assert waiting.waits_for("lee", [model["spec"]["approval"]["approvers"][0].partition(":")[2]])
    assert views.model_row(model).rollout == "2024.11.3 AwaitingApproval, step 2 at 50%"
    model["status"]["rollout"]["phase"] = "Promoted"
    assert views.pending_version(model) is None


def test_overview_rows_read_ready_counts_last_seen_and_buffer() -> None:
    intent = example("pm25-alerting")
    ready = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "",
             "lastTransitionTime": NOW.isoformat()}  # fmt: skip
    intent["status"] = {"conditions": [ready], "counts": {"decisions": 12, "actions": 2}}
    row = views.intent_row(intent)
    assert (row.ready, row.decisions, row.actions) == ("True (Reconciled)", 12, 2)
    assert "dispatch-street-cleaning" in row.actions_declared
    gateway = example("district-7")
    assert views.gateway_row(gateway).last_seen is None
    gateway["status"] = {"lastSeen": (NOW - timedelta(seconds=75)).isoformat(),
                         "bufferFillRatio": 0.25}  # fmt: skip
    seen = views.gateway_row(gateway)
    assert (views.ago(seen.last_seen, NOW), seen.buffer_fill) == ("1m 15s ago", 0.25)
    html = pages.overview_body(pages.Frame("sam", "t"), [(row, True)], [], [seen], NOW)
    assert "Run now" in html and "25%" in html and "1m 15s ago" in html
    assert "Run now" not in pages.overview_body(
        pages.Frame("sam", "t"), [(row, False)], [], [], NOW
    )
