"""The chart's monitors as the site's Prometheus reads them: the scrape jobs select the
pods and Services the monitors select, on the port they name, with the labels they ask
for (checked by relabelling discovered targets as Prometheus does)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart import NAMESPACE, manifests, render

from aios.stack import monitors, release
from aios.stack.site import monitor_sync

KUBECONFIG = "/site/kubeconfig"
ENABLED = (
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.podMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.alertRules.enabled=true",
    "site.name=district-7",
)


def relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus's relabelling (keep, drop, replace) of one target; None: dropped."""
    labels = dict(labels)
    for rule in rules:
        value = ";".join(labels.get(s, "") for s in rule.get("source_labels", []))
        matched = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if (action == "keep" and not matched) or (action == "drop" and matched):
            return None
        if action == "replace" and matched:
            labels[rule["target_label"]] = matched.expand(rule.get("replacement", r"\1"))
    return {k: v for k, v in labels.items() if not k.startswith("__meta_")}


def pod(name: str, app: str, port: str = "metrics", **extra: str) -> dict[str, str]:
    meta = "__meta_kubernetes_pod"
    return {
        "__meta_kubernetes_namespace": "city",
        f"{meta}_name": name,
        f"{meta}_container_name": "main",
        f"{meta}_container_port_name": port,
        f"{meta}_phase": "Running",
        f"{meta}_label_app_kubernetes_io_name": app,
        f"{meta}_label_app_kubernetes_io_part_of": "aios",
        f"{meta}_label_aios_dev_site": "district-7",
        **extra,
    }


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return manifests(render(*ENABLED))


def test_the_pod_monitor_scrapes_runners_workers_and_edge_agents_on_their_metrics_port(
    objects: list[dict[str, Any]],
) -> None:
    [job] = [
        j for j in monitors.scrape_configs(objects, KUBECONFIG) if "podMonitor" in j["job_name"]
    ]
    [discovery] = job["kubernetes_sd_configs"]
    assert discovery == {"role": "pod", "kubeconfig_file": KUBECONFIG}, "every namespace"
    rules = job["relabel_configs"]
    for app in ("aios-intent-runner", "aios-worker", "aios-edge"):
        kept = relabel(rules, pod("p-1", app))
        assert kept == {
            "namespace": "city",
            "pod": "p-1",
            "container": "main",
            "aios_dev_site": "district-7",
            "job": f"{NAMESPACE}/aios-data-plane",
            "endpoint": "metrics",
        }
    assert relabel(rules, pod("p", "aios-worker", port="http")) is None, "another port"
    assert relabel(rules, pod("p", "tritonserver")) is None, "not aios's data plane"
    finished = pod("p", "aios-worker", __meta_kubernetes_pod_phase="Succeeded")
    assert relabel(rules, finished) is None
    assert job["scrape_interval"] == "30s"


def test_the_service_monitor_scrapes_the_operator_service_in_its_namespace(
    objects: list[dict[str, Any]],
) -> None:
    [job] = [
        j for j in monitors.scrape_configs(objects, KUBECONFIG) if "serviceMonitor" in j["job_name"]
    ]
    assert job["kubernetes_sd_configs"][0]["namespaces"] == {"names": [NAMESPACE]}
    assert job["kubernetes_sd_configs"][0]["role"] == "endpointslice"
    service = "__meta_kubernetes_service"
    target = {
        "__meta_kubernetes_namespace": NAMESPACE,
        f"{service}_name": "aios",
        f"{service}_label_app_kubernetes_io_name": "aios",
        f"{service}_label_app_kubernetes_io_instance": "aios",
        f"{service}_label_app_kubernetes_io_component": "operator",
        f"{service}_label_aios_dev_site": "district-7",
        "__meta_kubernetes_endpointslice_port_name": "metrics",
        "__meta_kubernetes_pod_name": "aios-0",
        "__meta_kubernetes_pod_container_name": "operator",
    }
    kept = relabel(job["relabel_configs"], target)
    assert kept is not None and kept["job"] == "aios" and kept["aios_dev_site"] == "district-7"
    webhook = {**target, "__meta_kubernetes_endpointslice_port_name": "webhook"}
    assert relabel(job["relabel_configs"], webhook) is None
    other = {**target, f"{service}_label_app_kubernetes_io_instance": "another"}
    assert relabel(job["relabel_configs"], other) is None, "another release's Service"


def test_the_rules_are_the_prometheus_rule_groups(objects: list[dict[str, Any]]) -> None:
    groups = monitors.rule_groups(objects)
    assert [g["name"] for g in groups] == ["aios-operator", "aios-data-path", "aios-edge"]
    alerts = [r for g in groups for r in g["rules"]]
    assert all(r["labels"]["severity"] in ("warning", "critical") for r in alerts)
    assert all(r["annotations"]["summary"] and r["annotations"]["description"] for r in alerts)
    named = {r["alert"] for r in alerts}
    assert {"AiosGatewaySilent", "AiosPrivacyBudgetSpent", "AiosAuditChainStalled"} <= named


def test_a_prometheus_without_the_operator_gets_the_same_rules_as_a_file(
    objects: list[dict[str, Any]],
) -> None:
    (config_map,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-rules")
    ]
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    plain = yaml.safe_load(config_map["data"]["aios-alerts.yaml"])
    assert plain == {"groups": rule["spec"]["groups"]} and plain["groups"]


@pytest.mark.parametrize(
    ("operator", "values", "kept"),
    [
        ("NotIn", ["a"], False),
        ("NotIn", ["b"], True),
        ("Exists", [], True),
        ("DoesNotExist", [], False),
    ],
)
def test_selector_operators(operator: str, values: list[str], kept: bool) -> None:
    selector = {"matchExpressions": [{"key": "tier", "operator": operator, "values": values}]}
    rules = monitors.selector_rules("__meta_kubernetes_pod", selector)
    labels = {
        "__meta_kubernetes_pod_label_tier": "a",
        "__meta_kubernetes_pod_labelpresent_tier": "true",
    }
    assert (relabel(rules, labels) is not None) is kept


def test_a_monitor_field_not_translated_is_refused() -> None:
    monitor = {
        "kind": "PodMonitor",
        "metadata": {"namespace": "n", "name": "m"},
        "spec": {"podMetricsEndpoints": [{"port": "metrics", "tlsConfig": {}}], "selector": {}},
    }
    with pytest.raises(ValueError, match="tlsConfig"):
        monitors.scrape_configs([monitor], KUBECONFIG)


def test_the_site_follows_every_monitor_and_leaves_out_one_it_cannot_translate(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """What the site's Prometheus is given for the monitoring objects in the site: every
    monitor's jobs in one file, a rule file per PrometheusRule (two releases' groups may
    share names), and a monitor it cannot read left out with the reason, the rest kept."""
    chart = [o for o in objects if o["kind"] in monitor_sync.PLURALS]
    other = [
        {**o, "metadata": {**o["metadata"], "namespace": "district-8"}}
        for o in chart
        if o["kind"] == "PrometheusRule"
    ]
    broken = {
        "kind": "PodMonitor",
        "metadata": {"namespace": "team", "name": "tls"},
        "spec": {"podMetricsEndpoints": [{"port": "metrics", "tlsConfig": {}}], "selector": {}},
    }
    files, refused = monitor_sync.prometheus_files([broken, *other, *chart], KUBECONFIG)
    assert sorted(files) == [
        f"rules/{NAMESPACE}_aios.yaml",
        "rules/district-8_aios.yaml",
        monitor_sync.SCRAPE_FILE,
    ]
    jobs = yaml.safe_load(files[monitor_sync.SCRAPE_FILE])["scrape_configs"]
    by_name = sorted(monitors.scrape_configs(chart, KUBECONFIG), key=lambda j: j["job_name"])
    assert sorted(jobs, key=lambda j: j["job_name"]) == by_name and jobs
    assert yaml.safe_load(files[f"rules/{NAMESPACE}_aios.yaml"]) == {
        "groups": monitors.rule_groups(chart)
    }
    assert len(refused) == 1 and "PodMonitor team/tls" in refused[0] and "tlsConfig" in refused[0]

    for path, text in files.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(text)
    (tmp_path / "prometheus.yml").write_text("not a monitor's")
    assert monitor_sync.written_files(tmp_path) == files


def test_the_local_site_turns_the_monitors_on_only_with_its_prometheus() -> None:
    def kinds(prometheus_url: str) -> set[str]:
        values = {"monitoring": release.monitoring_values(prometheus_url)}
        return {o["kind"] for o in manifests(render(values=values))} & set(monitor_sync.PLURALS)

    assert kinds("http://10.251.1.2:9090") == set(monitor_sync.PLURALS)
    assert kinds("") == set(), "a site without Prometheus may not serve the kinds"
