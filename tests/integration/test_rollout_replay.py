"""The replay gate of a rollout, on the real node: the example intent decides a window of
readings with the stable model; a new version that would flip its decisions never gets
live traffic (rolled back, the replay's findings in status, the Event and the audit
trail), and one that decides the same goes on to its canary steps. The replays run as Jobs
beside the intent's runners and start no action."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model_support import (
    ENDED,
    STABLE,
    apply,
    canary_steps,
    edited_repository,
    eventually,
    phase,
    rolled_out,
)
from support import wait_for
from test_intent_e2e import decisions_of, deploy, produce
from test_replay import NAME, by_hand, readings, the_example_intent

from aios.connectors import kafka
from aios.connectors.audit import read_log

MODEL = "pm25-anomaly"
INVERTED = "        p = 1.0 / (1.0 + np.exp(-z[:, 0]))\n"


def gated(version: str, uri: str, max_change: float) -> dict[str, Any]:
    """The anomaly model at ``version`` from ``uri``: a canary of one step, behind a replay
    of the last hour allowing ``max_change`` of the decisions to change."""
    rollout = {
        "strategy": "canary",
        "steps": canary_steps([(50, 0)]),
        "analysis": {
            "minRequests": 20,
            "replay": {"windowSeconds": 3600, "maxDecisionChange": max_change},
        },
    }
    return rolled_out(version, rollout, uri=uri)


def inverted(text: str) -> str:
    """The model, scoring each reading the other way round."""
    assert INVERTED in text
    return text.replace(INVERTED, INVERTED.replace("np.exp(-z", "np.exp(z"), 1)


def upside_down(decision: dict[str, Any]) -> dict[str, Any]:
    """The decision as the inverted model would have scored it: same confidence."""
    anomaly = decision.get("outputs", {}).get("anomaly")
    if anomaly is None:
        return decision
    flipped = {**anomaly, "score": 1.0 - anomaly["score"]}
    return {**decision, "outputs": {**decision["outputs"], "anomaly": flipped}}


def events(kubectl, namespace: str) -> dict[str, str]:
    """The ModelDeployment's Events: reason → message (the latest of each)."""
    listed = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={MODEL}"
    )
    return {e["reason"]: e["message"] for e in listed["items"]}


async def test_a_version_that_flips_decisions_never_gets_traffic_and_one_that_agrees_goes_on(
    kubectl, stable_served, operator, namespace, receiver, site, tmp_path: Path
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    stable_served(lambda version: gated(version, "", 0.0))
    source = f"{namespace}.readings"
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(source, 3)])
    obj = deploy(kubectl, namespace, the_example_intent(source, receiver.url))
    sent = readings()
    produce(bootstrap, source, sent)
    made = decisions_of(bootstrap, obj, len(sent))
    assert any(not d["fallback"] for d in made), "the model decided"
    live_actions = {d["actionId"] for d in made if d.get("actionId")}
    wait_for(lambda: live_actions <= set(receiver.idempotency_keys()), what="live actions ran")
    calls = len(receiver.calls)
    pm25 = {json.loads(v)["sensorId"]: json.loads(v)["metrics"]["pm25"] for _, v in sent}
    flips = [
        d
        for d in made
        if by_hand(upside_down(d), pm25[d["sensorId"]], 35) != by_hand(d, pm25[d["sensorId"]], 35)
    ]
    assert flips, "the inverted model decides some readings otherwise"

    flipping = f"{STABLE}-inverted"
    limit = len(flips) / len(sent) / 2
    apply(kubectl, namespace, gated(flipping, edited_repository(tmp_path, "inv", inverted), limit))
    found = await eventually(lambda: phase(kubectl, namespace, *ENDED), timeout=300)
    rollout = found["rollout"]
    assert rollout["version"] == flipping and rollout["phase"] == "RolledBack", rollout
    assert [s["weight"] for s in rollout["steps"]] == [0], "no live traffic ever moved"
    replay = rollout["replay"]
    (intent,) = replay["intents"]
    assert intent["intent"] == NAME and not intent["failed"], intent.get("message")
    assert replay["compared"] == intent["compared"] == len(sent)
    assert replay["changed"] == len(flips) and not replay["passed"]
    assert rollout["message"].startswith("replay gate failed: "), rollout["message"]
    assert "replay gate failed" in events(kubectl, namespace)["RolledBack"]
    logged = kubectl("logs", f"job/{intent['job']}", "-n", namespace).strip().splitlines()
    report = json.loads(logged[-1])  # the report is the last line (a client may log before)
    assert report["candidate"] == f"modeldeployment/{MODEL}@{flipping}"
    assert (report["compared"], report["changed"]) == (intent["compared"], intent["changed"])
    subject = f"modeldeployment/{namespace}/{MODEL}"
    rollback = wait_for(
        lambda: next(
            (r for r in read_log(bootstrap) if r.kind == "rollback" and r.subject == subject),
            None,
        ),
        timeout=30,
    )
    assert rollback.details["replay"]["changed"] == replay["changed"]

    same = f"{STABLE}-copy"
    apply(kubectl, namespace, gated(same, edited_repository(tmp_path, "same", str), 0.0))
    found = await eventually(
        lambda: (f := phase(kubectl, namespace, *ENDED)) and f["rollout"]["version"] == same and f,
        timeout=300,
    )
    rollout = found["rollout"]
    assert rollout["phase"] == "Promoted", rollout["message"]
    assert [s["weight"] for s in rollout["steps"]] == [0, 50]
    assert rollout["replay"]["passed"] and rollout["replay"]["changed"] == 0
    assert rollout["replay"]["compared"] == len(sent)
    assert "ReplayPassed" in events(kubectl, namespace)

    assert len(receiver.calls) == calls, "no replay started an action"
