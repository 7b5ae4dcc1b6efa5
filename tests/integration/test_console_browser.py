"""The console as a supervisor uses it, in a real headless browser (Debian's Chromium through
Selenium): the chart's console pod on the real node, signed in with a token the cluster
accepts. A street-cleaning dispatch waits for approval with its lineage; someone outside
its approvers sees no Approve button and a forged decision is refused; the supervisor
approves it and the command reaches the street once. (The README's screenshots are taken in
the running example city, by its walkthrough: ``test_readme``.)"""

from __future__ import annotations

import asyncio
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from console_support import card, headless_chromium, live_text, sign_in
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select
from support import wait_for
from test_audit_trace import dispatch_request
from test_intent_e2e import audited_steps, deploy
from test_manual_actions import smoke_intent, taken

from aios.api.events import ActionRequest
from aios.connectors.temporal import connect
from aios.operator.settings import task_queue
from aios.stack import release
from aios.stack.platform import EXAMPLES
from aios.workflows.action import ActionWorkflow

TRACE = uuid.uuid4().hex


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with headless_chromium() as driver:
        yield driver


def console_url(kubectl) -> str:
    """The chart's console Service, reached as the cluster's network routes it; once it serves."""
    service = kubectl.json("get", "service", f"{release.RELEASE}-console", "-n", release.NAMESPACE)
    url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"

    def serving() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    logs = ("logs", "-n", release.NAMESPACE, f"deployment/{release.RELEASE}-console", "--tail=30")
    wait_for(serving, what=lambda: kubectl(*logs))
    return url


def person(kubectl, namespace: str, name: str, role_name: str = "approver") -> str:
    """A ServiceAccount bound to one of the chart's roles for people here; its token."""
    kubectl("create", "serviceaccount", name, "-n", namespace)
    role = f"--clusterrole={release.RELEASE}-{role_name}"
    kubectl(
        "create", "rolebinding", name, "-n", namespace, role, f"--serviceaccount={namespace}:{name}"
    )
    return kubectl("create", "token", name, "-n", namespace).strip()


def street_intent(namespace: str, topic: str, supervisor: str) -> dict[str, Any]:
    """The example's street-cleaning dispatch, on its own topic, approved by ``supervisor``;
    paused (its worker runs, no runner reads)."""
    example = yaml.safe_load((EXAMPLES / "pm25-alerting.yaml").read_text())
    action = next(a for a in example["spec"]["actions"] if a["name"] == "dispatch-street-cleaning")
    action["target"] = topic
    action["approval"]["approvers"].append(f"user:{supervisor}")
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "AutomationIntent",
        "metadata": {"name": "pm25-alerting"},
        "spec": {
            "sources": [{"name": "readings", "kafkaTopic": f"street-{uuid.uuid4().hex[:8]}"}],
            "topics": {"partitions": 1, "deletePolicy": "Delete"},
            "actions": [action],
            "mode": "paused",
        },
    }


def labelled(driver: WebDriver) -> list[str]:
    """The visible controls of the page without a label naming them."""
    unlabelled = []
    for control in driver.find_elements(
        By.CSS_SELECTOR, "input:not([type=hidden]), select, textarea"
    ):
        ident = control.get_attribute("id")
        if not ident or not driver.find_elements(By.CSS_SELECTOR, f'label[for="{ident}"]'):
            unlabelled.append(control.get_attribute("name") or "?")
    return unlabelled


def result_of(driver: WebDriver) -> str:
    """What the page says happened (or was refused) once the form it sent was answered
    (a click returns before the next page has loaded)."""

    def shown() -> str | None:
        try:
            found = driver.find_elements(By.CSS_SELECTOR, "p.done, p.refused")
            return found[0].text if found else None
        except StaleElementReferenceException:  # the page changed while read
            return None

    text: str = wait_for(shown, 30, 0.2, lambda: driver.page_source[-2000:])
    return text


def forged_decision(driver: WebDriver, action_id: str) -> str:
    """An approval posted with this session's own form token, past the missing button."""
    script = """
      const done = arguments[arguments.length - 1];
      const body = new URLSearchParams({
        csrf: document.querySelector('input[name=csrf]').value,
        kind: 'action', name: arguments[0], decision: 'approved', reason: 'forged'});
      fetch('/decide', {method: 'POST', body, credentials: 'same-origin'})
        .then(r => done(r.url), e => done(String(e)));
    """
    landed: str = driver.execute_async_script(script, action_id)
    return urllib.parse.parse_qs(urllib.parse.urlparse(landed).query).get("refused", [""])[0]


async def test_a_supervisor_approves_a_dispatch_in_the_browser_and_it_runs_once(
    site, operator, kubectl, namespace: str, browser: WebDriver
) -> None:
    url = await asyncio.to_thread(console_url, kubectl)
    supervisor = f"system:serviceaccount:{namespace}:supervisor"
    supervisor_token = person(kubectl, namespace, "supervisor")
    visitor_token = person(kubectl, namespace, "visitor")
    topic = f"city/district-7/street-cleaning/{uuid.uuid4().hex[:6]}/dispatch"
    await asyncio.to_thread(deploy, kubectl, namespace, street_intent(namespace, topic, supervisor))

    host, port = site.endpoints.mqtt_url.removeprefix("mqtt://").split(":")
    arrived: list[bytes] = []
    subscribed = threading.Event()
    street = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    street.on_message = lambda _c, _u, message: arrived.append(message.payload)
    street.on_subscribe = lambda *_: subscribed.set()
    street.connect(host, int(port))
    street.subscribe(topic, qos=2)
    street.loop_start()
    try:
        assert await asyncio.to_thread(subscribed.wait, 30), "subscribed to the street's topic"
        reading = f"r-{uuid.uuid4().hex[:8]}"
        lineage = {"topic": "aios.district-7.readings", "partition": 0, "offset": 42,
                   "eventIds": [reading], "gateway": "district-7"}  # fmt: skip
        payload = dispatch_request(namespace, topic, reading, lineage)
        payload["action"]["approval"]["approvers"].append(f"user:{supervisor}")
        payload["decision"]["traceparent"] = f"00-{TRACE}-{'1' * 16}-01"
        payload["decision"]["site"] = "local"
        request = ActionRequest.model_validate(payload)
        temporal = await connect(site.endpoints.temporal_address)
        handle = await temporal.start_workflow(
            ActionWorkflow.run, request, id=request.action_id, task_queue=task_queue(namespace)
        )

        # Someone outside the approvers sees the dispatch, and no button to decide it.
        await asyncio.to_thread(sign_in, browser, url, visitor_token)
        seen = await asyncio.to_thread(card, browser, url, request.action_id)
        assert not seen.find_elements(By.CSS_SELECTOR, "button.approve")
        assert "not among its approvers" in seen.text
        refused = await asyncio.to_thread(forged_decision, browser, request.action_id)
        assert f"is not among the approvers of action/{request.action_id}" in refused, refused
        assert (await handle.query("state"))["phase"] == "awaiting-approval"

        # The supervisor sees it with its lineage, and approves it.
        await asyncio.to_thread(sign_in, browser, url, supervisor_token)
        mine = await asyncio.to_thread(card, browser, url, request.action_id)
        text = mine.text
        for shown in (
            f"{reading} from sensor aq-d7-001 via gateway district-7",
            "pm25-anomaly@2024.11.2 (canary): score 0.94, confidence 0.88",
            *("pm25-sustained", TRACE, "allowed (OPA decision", "escalates in"),
        ):
            assert shown in text, f"{shown!r} not in the card:\n{text}"
        assert labelled(browser) == [], "every control of the inbox has a label"
        mine.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys("crew available")
        mine.find_element(By.CSS_SELECTOR, "button.approve").click()
        done = await asyncio.to_thread(result_of, browser)
        assert done == f"approved action/{request.action_id} as {supervisor}"

        result = await handle.result()
        assert result.status == "executed", result
        await asyncio.to_thread(wait_for, lambda: arrived, what="the command reached the street")
        assert len(arrived) == 1, arrived
    finally:
        street.loop_stop()
        street.disconnect()
    steps = await asyncio.to_thread(audited_steps, site, request.action_id)
    assert steps == ["requested", "authorized", "approved", "executed"], steps

    # The timeline shows it executed, with its approver and trace id. The approver is the
    # worker's answer to a query, which a busy worker may miss (the console asks again
    # ASK_AGAIN later): the row is read until it is whole.
    def executed_row() -> str:
        browser.get(f"{url}/actions?intent={namespace}/pm25-alerting")
        rows = browser.find_elements(By.CSS_SELECTOR, f'tr[data-action-id="{request.action_id}"]')
        text = rows[0].text if rows else ""
        return text if "executed" in text and supervisor in text else ""

    row = await asyncio.to_thread(wait_for, executed_row, what="the executed row with its approver")
    assert TRACE in row

    # The overview lists the intent and refreshes without a reload.
    browser.get(f"{url}/overview")
    intent_row = await asyncio.to_thread(
        live_text, browser, f'tr[data-intent="{namespace}/pm25-alerting"]'
    )
    assert "paused" in intent_row
    first = await asyncio.to_thread(live_text, browser, "#live p.note time")

    def refreshed() -> bool:
        return live_text(browser, "#live p.note time") != first

    await asyncio.to_thread(wait_for, refreshed, 60, 1.0, "the overview refreshed in place")


def test_a_duty_officer_runs_an_action_and_reverts_it_once_from_the_console(
    site, operator, kubectl, namespace: str, browser: WebDriver, receiver
) -> None:
    url = console_url(kubectl)
    officer = f"system:serviceaccount:{namespace}:officer"
    token = person(kubectl, namespace, "officer", "actor")
    deploy(kubectl, namespace, smoke_intent(receiver.url))
    sign_in(browser, url, token)

    def run_now() -> bool:
        """Fill in the overview's form and send it; a refresh that swaps the row before the
        form is sent (it pauses once a control there has focus) means starting again."""
        browser.get(f"{url}/overview")
        try:
            row = browser.find_element(By.CSS_SELECTOR, f'tr[data-intent="{namespace}/smoke"]')
            Select(row.find_element(By.TAG_NAME, "select")).select_by_value("dispatch")
            row.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys("smoke")
            row.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(run_now)
    sent = result_of(browser)
    assert sent.endswith(f"created as {officer}"), sent

    def dispatched() -> str | None:
        return next((k for path, k in receiver.taken if path == "/dispatch"), None)

    action_id: str = wait_for(dispatched, what="the dispatch reached its target")
    assert action_id.startswith(f"{namespace}.smoke.dispatch.")

    def revertible() -> WebElement | None:
        browser.get(f"{url}/actions?intent={namespace}/smoke&outcome=executed")
        rows = browser.find_elements(By.CSS_SELECTOR, f'tr[data-action-id="{action_id}"]')
        return rows[0] if rows and rows[0].find_elements(By.TAG_NAME, "button") else None

    def revert() -> str:
        found: WebElement = wait_for(revertible, what=lambda: browser.page_source[-2000:])
        assert officer in found.text, "asked by the officer"
        found.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys("false alarm")
        found.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        return result_of(browser)

    assert revert().endswith(f"created as {officer}")
    taken(receiver, "/recall", f"{action_id}.revert")
    wait_for(lambda: "executed" in audited_steps(site, f"{action_id}.revert"))
    again = revert()
    assert f"action/{action_id} was already reverted" in again, again
    assert [k for _, k in receiver.taken].count(f"{action_id}.revert") == 1, "reverted once"
    assert [k for _, k in receiver.taken].count(action_id) == 1, "dispatched once"
