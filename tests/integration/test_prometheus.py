"""The site's Prometheus watches aios the way a city's would: it finds the operator, the
intent runners, the action workers and the edge agents through Kubernetes service
discovery, as the chart's ServiceMonitor and PodMonitor describe them; every metric the
chart's dashboards plot and its alerts evaluate is one those components expose, and
every alert rule evaluates. A gateway that stops reporting fires its alert, and the alert
resolves when the gateway is back."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from model_support import serve_example_model
from support import wait_for
from test_intent_e2e import deploy, produce, reading
from test_intent_models import model_intent

from aios.operator.reconcile.edge_gateway import SIMULATE_ANNOTATION
from aios.stack.release import CHART, NAMESPACE, RELEASE
from aios.workflows.rollout_activities import DRIFT_METRIC

REPO = Path(__file__).resolve().parents[2]
SUFFIXES = re.compile(r"_(bucket|sum|count|total)$")


def api(site: Any, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"{site.endpoints.prometheus_url}/api/v1/{path}{query}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["data"]


def selector_nodes(node: Any) -> list[dict[str, Any]]:
    """The series selectors of a parsed PromQL expression (Prometheus's own AST)."""
    if isinstance(node, list):
        return [n for item in node for n in selector_nodes(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if node.get("type") in ("vectorSelector", "matrixSelector") else []
    return found + [n for value in node.values() for n in selector_nodes(value)]


def every_value(expr: str) -> str:
    """``expr`` with the dashboards' variables ($intent, …) matching all."""
    return re.sub(r"\$\w+", ".*", expr)


def queried(site: Any, expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    return {n["name"] for n in selector_nodes(api(site, "parse_query", query=every_value(expr)))}


def answers(site: Any, expr: str) -> bool:
    return bool(api(site, "query", query=every_value(expr))["result"])


def blank_panels(site: Any, queries: dict[str, str]) -> tuple[set[str], set[str]]:
    """The queries whose every series selector finds series, and those of them that still
    answer nothing: a label, a grouping or a join that matches nothing."""
    checked, blank = set(), set()
    for use, expr in queries.items():
        nodes = selector_nodes(api(site, "parse_query", query=every_value(expr)))
        series = [
            "{"
            + ",".join(f"{m['name']}{m['type']}{json.dumps(m['value'])}" for m in n["matchers"])
            + "}"
            for n in nodes
        ]
        if all(answers(site, s) for s in series):
            checked.add(use)
            if not answers(site, expr):
                blank.add(use)
    return checked, blank


def dashboard_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted((CHART / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                queries[f"{path.stem}: {panel['title']} ({target['refId']})"] = target["expr"]
    return queries


def exposed(site: Any) -> set[str]:
    """The metrics the scraped targets expose: series names, and the families they
    describe (a labelled metric with no sample yet is described, not stored)."""
    names = set(api(site, "label/__name__/values"))
    return names | set(api(site, "metadata"))


def missing(site: Any, names: set[str]) -> set[str]:
    found = exposed(site)
    return {n for n in names if n not in found and SUFFIXES.sub("", n) not in found}


def up(site: Any, selector: str) -> list[dict[str, Any]]:
    return [
        r for r in api(site, "query", query=f"up{{{selector}}}")["result"] if r["value"][1] == "1"
    ]


def example_gateway(namespace: str) -> dict[str, Any]:
    """District 7 as the example declares it (three simulated sensors), sending to a topic
    of the test's own."""
    gateway = yaml.safe_load((REPO / "examples/city-air-quality/district-7.yaml").read_text())
    gateway["spec"]["sink"]["kafkaTopic"] = f"aios.{namespace}.readings"
    return gateway


def alert(site: Any, name: str, **labels: str) -> dict[str, Any] | None:
    """The active alert ``name`` whose labels include ``labels``, if any."""
    return next(
        (
            a
            for a in api(site, "alerts")["alerts"]
            if a["labels"].get("alertname") == name and labels.items() <= a["labels"].items()
        ),
        None,
    )


def test_prometheus_scrapes_every_component_and_the_dashboards_and_alerts_use_what_exists(
    site, operator, kubectl, namespace, receiver
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    serve_example_model(kubectl, namespace)
    gateway = example_gateway(namespace)
    topic = gateway["spec"]["sink"]["kafkaTopic"]
    receiver.failures["/alert"] = 1  # the action's first call fails: a failed step is counted
    deploy(kubectl, namespace, model_intent(topic, f"{receiver.url}/alert"))
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(gateway))
    produce(bootstrap, topic, [("aq-prom", reading("aq-prom", 80.0, 1))])
    wait_for(lambda: ("/alert", 200) in receiver.answered, what="the action done on its retry")

    targets = {
        "the operator": f'job="{RELEASE}",namespace="{NAMESPACE}"',
        "the intent runner": f'namespace="{namespace}",pod=~"with-model-runner-.*"',
        "the action worker": f'namespace="{namespace}",pod=~"aios-worker-.*"',
        "the edge agent": f'namespace="{namespace}",pod=~"district-7-edge-sim-.*"',
    }
    for what, selector in targets.items():
        found = wait_for(
            lambda s=selector: up(site, s),
            what=lambda w=what: f"{w} scraped: {api(site, 'targets', state='active')}",
        )
        assert all(r["metric"]["aios_dev_site"] for r in found), f"{what}'s series name the site"

    groups = api(site, "rules")["groups"]
    alerts = {r["name"]: r for g in groups for r in g["rules"]}
    assert {"AiosOperatorDown", "AiosIntentPaused", "AiosEdgeDroppingReadings"} <= set(alerts)
    uses = {f"alert {name}": rule["query"] for name, rule in alerts.items()}
    uses |= dashboard_queries()
    names = {use: queried(site, expr) for use, expr in uses.items()}
    # A rollout's analysis sets the drift gauge: test_rollout_canary reads it through its panel.
    every = {n for found in names.values() for n in found} - {"up", DRIFT_METRIC}
    assert "temporal_activity_execution_failed_total" in every, "the workers are watched"
    wait_for(
        lambda: not missing(site, every),
        what=lambda: "; ".join(
            f"{use} uses {sorted(missing(site, found))}"
            for use, found in names.items()
            if missing(site, found)
        ),
    )
    # Every panel whose series exist draws them (a rate needs two scrapes: waited for).
    # These three draw what the test did; their series appear a scrape after it is done
    # (a labelled counter's family is described before its first sample).
    drawn = {
        "data-path: Readings per second by outcome (A)",
        "edge-fleet: Buffer fill per agent (A)",
        "data-path: Models answering / runners paused (B)",
    }
    queries = dashboard_queries()
    wait_for(
        lambda: not (found := blank_panels(site, queries))[1] and drawn <= found[0],
        what=lambda: f"{sorted(drawn)} checked, none blank: {blank_panels(site, queries)}",
    )
    wait_for(
        lambda: all(r["health"] == "ok" for g in api(site, "rules")["groups"] for r in g["rules"]),
        what=lambda: f"every rule evaluated: {api(site, 'rules')}",
    )


def test_a_gateway_that_stops_reporting_fires_an_alert_that_resolves_when_it_is_back(
    site, operator, kubectl, namespace
) -> None:
    gateway = example_gateway(namespace)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(gateway))
    key = f"{namespace}/district-7"
    heartbeats = f'aios_edge_gateway_heartbeat_timestamp_seconds{{gateway="{key}"}}'
    wait_for(
        lambda: api(site, "query", query=heartbeats)["result"],
        what="the operator serves the gateway's heartbeats, scraped",
    )
    silent = {"gateway": key}
    assert alert(site, "AiosGatewaySilent", **silent) is None

    count = gateway["metadata"]["annotations"][SIMULATE_ANNOTATION]
    kubectl("annotate", "edgegateway", "district-7", "-n", namespace, f"{SIMULATE_ANNOTATION}-")
    fired = wait_for(
        lambda: (a := alert(site, "AiosGatewaySilent", **silent)) and a["state"] == "firing" and a,
        what=lambda: f"the alert fires: {api(site, 'alerts')}",
    )
    assert "has not reported for" in fired["annotations"]["summary"]
    assert fired["labels"]["severity"] == "warning"

    kubectl(
        "annotate", "edgegateway", "district-7", "-n", namespace, f"{SIMULATE_ANNOTATION}={count}"
    )
    wait_for(
        lambda: alert(site, "AiosGatewaySilent", **silent) is None,
        what=lambda: f"the alert resolves: {alert(site, 'AiosGatewaySilent', **silent)}",
    )
