"""Canary rollouts driven by the Temporal workflow: a good version is promoted step by
step; a version that errors or is slow is rolled back on its own while the stable version
keeps answering; ``kubectl describe`` tells the story."""

from __future__ import annotations

from typing import Any

import pytest
from model_support import (
    ENDED,
    NEXT,
    STABLE,
    Traffic,
    apply,
    broken_repository,
    canary_steps,
    condition,
    eventually,
    phase,
    rolled_out,
    wait_for,
)
from support import record_history
from test_prometheus import api, dashboard_queries

from aios.api.model_deployment import Analysis
from aios.connectors.audit import read_log
from aios.workflows.rollout_activities import DRIFT_METRIC


def canary(version: str, steps: list[tuple[int, int]], uri: str = "", **gates: Any) -> dict:
    analysis = {"minRequests": 20, **gates}
    rollout = {"strategy": "canary", "steps": canary_steps(steps), "analysis": analysis}
    return rolled_out(version, rollout, uri=uri)


def audited(site, kind: str, subject: str):
    """The audit record of ``kind`` about ``subject`` (the appender chains within seconds)."""
    return wait_for(
        lambda: next(
            (
                r
                for r in read_log(site.endpoints.kafka_bootstrap)
                if r.kind == kind and r.subject == subject
            ),
            None,
        ),
        timeout=30,
    )


async def test_a_good_version_is_promoted_step_by_step(kubectl, stable_served, namespace, site):
    steps = [(25, 2), (50, 2), (100, 0)]
    stable_served(lambda version: canary(version, steps))
    traffic = Traffic(kubectl, namespace).start()

    apply(kubectl, namespace, canary(NEXT, steps))
    found = await eventually(lambda: phase(kubectl, namespace, *ENDED), timeout=240)
    await traffic.stop()

    rollout = found["rollout"]
    assert rollout["phase"] == "Promoted", rollout["message"]
    assert [s["weight"] for s in rollout["steps"]] == [0, 25, 50, 100]
    assert all(s["analysis"]["passed"] for s in rollout["steps"][1:])
    assert found["activeVersion"] == NEXT and found["stable"]["version"] == NEXT
    assert "canary" not in found and found.get("canaryWeight", 0) == 0
    assert found["history"][-1]["version"] == NEXT
    assert found["history"][-1]["outcome"] == "promoted"
    assert found["history"][-1]["modelCard"]["owner"] == "team-air-quality"
    assert traffic.answers.get(f"canary:{NEXT}", 0) > 0, traffic.answers
    assert traffic.answers.get(f"stable:{STABLE}", 0) > 0, traffic.answers
    assert not traffic.failures, traffic.failures

    described = kubectl("describe", "modeldeployment", "pm25-anomaly", "-n", namespace)
    for text in ("CanaryStep", "step 2/3: 50% of traffic", "AnalysisPassed", "Promoted"):
        assert text in described
    old = ("get", "deployment", "pm25-anomaly-2024-11-2", "-n", namespace)
    wait_for(lambda: kubectl.run(*old).returncode != 0, timeout=30)  # pruned after promotion
    promotion = audited(site, "promotion", f"modeldeployment/{namespace}/pm25-anomaly")
    assert promotion.details["model"] == {"name": "pm25-anomaly", "version": NEXT, "canary": True}
    await record_history(
        site.endpoints.temporal_address, rollout["workflowId"], "rollout-canary-promoted"
    )
    published_by_the_workflow_alone(kubectl, namespace, rollout)
    drift_exported(site, namespace, rollout)


def drift_exported(site, namespace: str, rollout: dict) -> None:
    """The site's Prometheus has the last analysis's score drift, scraped from the
    namespace's worker, which ran the analyses, with the site's label."""
    drifts = [
        s["analysis"]["driftPsi"]
        for s in rollout["steps"]
        if (s.get("analysis") or {}).get("driftPsi") is not None
    ]
    assert drifts, f"no analysis measured drift: {rollout['steps']}"
    query = f'{DRIFT_METRIC}{{model="{namespace}/pm25-anomaly",version="{NEXT}"}}'
    (series,) = wait_for(lambda: api(site, "query", query=query)["result"], what=f"{query} scraped")
    assert float(series["value"][1]) == pytest.approx(drifts[-1])
    assert series["metric"]["aios_dev_site"] and series["metric"]["namespace"] == namespace
    (panel,) = [expr for expr in dashboard_queries().values() if DRIFT_METRIC in expr]
    plotted = {
        (s["metric"]["model"], s["metric"]["version"]): float(s["value"][1])
        for s in api(site, "query", query=panel)["result"]
    }
    assert plotted[(f"{namespace}/pm25-anomaly", NEXT)] == pytest.approx(drifts[-1]), plotted


def published_by_the_workflow_alone(kubectl, namespace: str, rollout: dict) -> None:
    """The workflow published into a ModelRollout (``kubectl get`` lists it), which the
    ModelDeployment's status mirrors; its worker cannot write that status itself."""
    md = kubectl.json("get", "md", "pm25-anomaly", "-n", namespace)
    (published,) = kubectl.json("get", "modelrollouts", "-n", namespace)["items"]
    assert published["spec"] == {
        "modelDeployment": "pm25-anomaly",
        "version": NEXT,
        "workflowId": rollout["workflowId"],
    }
    assert published["status"]["rollout"] == rollout, "the status mirrors it, whole"
    assert [o["uid"] for o in published["metadata"]["ownerReferences"]] == [md["metadata"]["uid"]]
    listed = kubectl("get", "mro", "-n", namespace)
    assert all(word in listed for word in ("pm25-anomaly", NEXT, "Promoted")), listed
    worker = f"system:serviceaccount:{namespace}:aios-worker"
    for verb in ("patch", "update"):
        asked = kubectl.run(
            "auth", "can-i", verb, "modeldeployments/status", "-n", namespace, "--as", worker
        )
        assert asked.stdout.strip() == "no", f"the worker may {verb} the status: {asked.stdout}"


@pytest.mark.parametrize(
    ("fault", "why"), [("error", "error rate 100.0% above 1.0%"), ("slow", "p99 latency")]
)
async def test_a_broken_canary_is_rolled_back_while_the_stable_answers(
    kubectl, stable_served, namespace, model_dir, fault, why, site
):
    steps = [(50, 2), (100, 2)]
    stable_served(lambda version: canary(version, steps))
    traffic = Traffic(kubectl, namespace).start()

    broken = broken_repository(model_dir, fault)
    # the product's default latency gate: the slow version's 400 ms per request fail it
    default_gate = Analysis.model_fields["max_p99_latency_ms"].default
    apply(kubectl, namespace, canary("2024.12.0", steps, broken, maxP99LatencyMs=default_gate))
    found = await eventually(lambda: phase(kubectl, namespace, *ENDED), timeout=240)
    await traffic.stop()

    rollout = found["rollout"]
    assert rollout["phase"] == "RolledBack"
    assert why in rollout["message"]
    assert [s["weight"] for s in rollout["steps"]] == [0, 50], "no step after the failed one"
    assert not rollout["steps"][1]["analysis"]["passed"]
    assert found["activeVersion"] == STABLE and "canary" not in found
    assert condition(found, "RolledBack")["status"] == "True"
    degraded = condition(found, "Degraded")
    assert degraded["status"] == "True" and "2024.12.0 is not served" in degraded["message"]
    assert condition(found, "Ready")["status"] == "True", "the stable version still serves"
    assert found["history"][-1]["outcome"] == "rolledBack"

    stable_key = f"stable:{STABLE}"
    assert traffic.answers.get(stable_key, 0) > 0
    assert stable_key not in traffic.failures, "the stable version answered every request"
    described = kubectl("describe", "modeldeployment", "pm25-anomaly", "-n", namespace)
    assert "AnalysisFailed" in described and why in described and "RolledBack" in described
    rollback = audited(site, "rollback", f"modeldeployment/{namespace}/pm25-anomaly")
    assert rollback.details["model"]["version"] == "2024.12.0" and why in rollback.details["reason"]
    wait_for(
        lambda: (
            kubectl.run("get", "deployment", "pm25-anomaly-2024-12-0", "-n", namespace).returncode
        ),
        timeout=30,
    )
