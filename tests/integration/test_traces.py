"""One trace per reading, in the site's Jaeger: a reading posted to an edge agent with its
sender's trace context is decided by a model and acted on, and the spans of every step —
the edge agent's ingest, filter chain and send, the runner's processing and model call,
the action workflow, its policy check and its webhook — are one trace with intact parent
links, which the action's audit trail names (``aiosctl audit trace``)."""

from __future__ import annotations

import json
import secrets
import urllib.request
from datetime import UTC, datetime
from typing import Any

from model_support import serve_example_model
from support import wait_for
from test_audit_log import aiosctl
from test_edge_agent import PLAIN, agent_factory, configured, unique, wait_applied
from test_intent_e2e import deploy
from test_intent_models import SPIKE, model_intent

from aios.stack.platform import site_environment
from aios.stack.release import LOCAL_SAMPLER_RATIO
from aios.workflows.action_io import AUTHORIZE

__all__ = ["agent_factory", "unique"]  # fixtures this module's tests use

EDGE, RUNNER, WORKER = "aios-edge", "aios-intent-runner", "aios-worker"


def sampled_trace_id() -> str:
    """A new trace id the site's ratio sampler keeps: its low half is under the ratio's
    bound (OpenTelemetry's TraceIdRatioBased compares the low 64 bits)."""
    bound = int(LOCAL_SAMPLER_RATIO * (1 << 64))
    return f"{secrets.randbits(64):016x}{secrets.randbelow(bound):016x}"


def jaeger_trace(url: str, trace_id: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/api/traces/{trace_id}", timeout=5) as response:
            data = json.loads(response.read())["data"]
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    return data[0] if data else None


def spans_by_service(found: dict[str, Any]) -> dict[str, list[str]]:
    services: dict[str, list[str]] = {}
    for span in found["spans"]:
        service = found["processes"][span["processID"]]["serviceName"]
        services.setdefault(service, []).append(span["operationName"])
    return services


def expected_spans(sink: str) -> dict[str, set[str]]:
    """The spans each service adds to a reading's trace (those a test waits for)."""
    return {
        EDGE: {"ingest", "filter chain", f"send {sink}"},
        RUNNER: {f"process {sink}", "infer anomaly", "decide", "StartWorkflow:ActionWorkflow"},
        WORKER: {
            "RunWorkflow:ActionWorkflow",
            f"RunActivity:{AUTHORIZE}",
            "RunActivity:aios.action.execute",
            "POST",
        },
    }


def missing(found: dict[str, Any] | None, expected: dict[str, set[str]]) -> dict[str, set[str]]:
    """What ``expected`` names that the trace does not hold yet (every process exports in
    its own batches, so the spans arrive in any order)."""
    services = spans_by_service(found) if found else {}
    gaps = {s: names - set(services.get(s, [])) for s, names in expected.items()}
    return {s: names for s, names in gaps.items() if names}


def test_one_reading_is_one_trace_from_the_edge_to_the_webhook(
    site, operator, kubectl, namespace, receiver, agent_factory, unique
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    serve_example_model(kubectl, namespace)
    name, sink = configured(bootstrap, "http", unique, PLAIN)
    deploy(kubectl, namespace, model_intent(sink, f"{receiver.url}/traced"))
    agent = agent_factory(
        name,
        bootstrap,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": site.endpoints.otlp_url,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(LOCAL_SAMPLER_RATIO),
        },
    ).start()
    wait_applied(agent, 1)
    trace_id = sampled_trace_id()
    reading = {"sensorId": "aq-traced", "time": datetime.now(UTC).isoformat(), "metrics": SPIKE}
    status, _ = agent.post([reading], {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    assert status == 202

    wait_for(lambda: any(p == "/traced" for p, _, _ in receiver.calls), what="the webhook")
    [(_, headers, _)] = [c for c in receiver.calls if c[0] == "/traced"]
    assert headers["traceparent"].split("-")[1] == trace_id, "the webhook carries the trace"

    expected = expected_spans(sink)
    latest: list[dict[str, Any] | None] = [None]

    def whole() -> dict[str, Any] | None:
        latest[0] = jaeger_trace(site.endpoints.jaeger_url, trace_id)
        return latest[0] if not missing(latest[0], expected) else None

    found = wait_for(
        whole, what=lambda: f"trace {trace_id} in Jaeger, missing {missing(latest[0], expected)}"
    )
    assert sorted(spans_by_service(found)[EDGE]) == sorted(expected[EDGE]), "each edge span once"
    ids = {span["spanID"] for span in found["spans"]}
    roots = [s for s in found["spans"] if not s["references"]]
    assert [r["operationName"] for r in roots] == ["ingest"], "one root: the edge's ingest"
    for span in found["spans"]:
        for reference in span["references"]:
            assert reference["traceID"] == trace_id
            assert reference["spanID"] in ids, f"{span['operationName']}'s parent is missing"
    for span in found["spans"]:
        tags = {t["key"]: t["value"] for t in found["processes"][span["processID"]]["tags"]}
        assert tags.get("aios.site"), f"{span['operationName']} names no site"

    action_id = headers["Idempotency-Key"]
    traced = aiosctl("trace", action_id, "--bootstrap", bootstrap, env=site_environment(site))
    assert traced.returncode == 0, traced.stderr
    [line] = [x for x in traced.stdout.splitlines() if x.startswith("trace ")]
    assert f"{site.endpoints.jaeger_url}/api/traces/{trace_id}" in line
