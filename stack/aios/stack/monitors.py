"""The chart's monitoring objects as a Prometheus reads them: what the Prometheus Operator
makes of a ServiceMonitor, PodMonitor or PrometheusRule — scrape jobs that find their
targets through Kubernetes service discovery, and rule groups.

The local site has no Prometheus Operator; its Prometheus gets these, so it scrapes what a
city's Prometheus would scrape with the chart's monitors enabled, and nothing the chart
does not ask for. Only the fields the chart uses are read; any other is refused, so a
monitor that grows one is not silently scraped differently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

SERVICE_MONITOR, POD_MONITOR, PROMETHEUS_RULE = "ServiceMonitor", "PodMonitor", "PrometheusRule"
KNOWN_SPEC = {
    SERVICE_MONITOR: {"selector", "namespaceSelector", "endpoints", "targetLabels", "jobLabel"},
    POD_MONITOR: {"selector", "namespaceSelector", "podMetricsEndpoints", "podTargetLabels"},
}
KNOWN_ENDPOINT = {"port", "interval", "path", "scheme"}


def label_name(key: str) -> str:
    """A Kubernetes label key as a Prometheus label name (``aios.dev/site`` → ``aios_dev_site``)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _alternatives(values: Iterable[str]) -> str:
    return "(" + "|".join(re.escape(v) for v in values) + ")"


def selector_rules(meta: str, selector: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Relabelling that keeps the targets whose object's labels match a label selector;
    ``meta``: the role's prefix (``__meta_kubernetes_pod``, ``…_service``)."""
    rules: list[dict[str, Any]] = [
        {
            "action": "keep",
            "source_labels": [f"{meta}_label_{label_name(k)}"],
            "regex": re.escape(v),
        }
        for k, v in selector.get("matchLabels", {}).items()
    ]
    for expression in selector.get("matchExpressions", []):
        key, operator = label_name(expression["key"]), expression["operator"]
        if operator in ("In", "NotIn"):
            rules.append(
                {
                    "action": "keep" if operator == "In" else "drop",
                    "source_labels": [f"{meta}_label_{key}"],
                    "regex": _alternatives(expression["values"]),
                }
            )
        elif operator in ("Exists", "DoesNotExist"):
            rules.append(
                {
                    "action": "keep" if operator == "Exists" else "drop",
                    "source_labels": [f"{meta}_labelpresent_{key}"],
                    "regex": "true",
                }
            )
        else:
            raise ValueError(f"selector operator {operator!r} is not a Kubernetes one")
    return rules


def discovery(
    role: str, namespace: str, namespace_selector: Mapping[str, Any], kubeconfig: str
) -> dict[str, Any]:
    """The ``kubernetes_sd_configs`` entry: the monitor's own namespace unless it says
    ``any`` or names others."""
    config: dict[str, Any] = {"role": role, "kubeconfig_file": kubeconfig}
    if not namespace_selector.get("any"):
        config["namespaces"] = {"names": namespace_selector.get("matchNames") or [namespace]}
    return config


def _copy(source: str, target: str) -> dict[str, Any]:
    return {"source_labels": [source], "target_label": target}


def _checked(kind: str, spec: Mapping[str, Any], endpoints: list[Mapping[str, Any]]) -> None:
    unknown = set(spec) - KNOWN_SPEC[kind]
    unknown |= {f"endpoint {k}" for e in endpoints for k in set(e) - KNOWN_ENDPOINT}
    if unknown:
        raise ValueError(f"{kind} fields the site's Prometheus does not translate: {unknown}")


def _endpoint(endpoint: Mapping[str, Any]) -> dict[str, Any]:
    job = {
        "metrics_path": endpoint.get("path", "/metrics"),
        "scheme": endpoint.get("scheme", "http"),
    }
    if "interval" in endpoint:
        job["scrape_interval"] = endpoint["interval"]
    return job


def _jobs(
    monitor: Mapping[str, Any],
    endpoints: list[Mapping[str, Any]],
    kubeconfig: str,
    role: str,
    selected: str,
    port: str,
    labels: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One scrape job per endpoint of a monitor: ``role`` discovery, its targets those whose
    ``selected`` object's labels match the selector and whose ``port`` label names the
    endpoint's port; ``labels``: the rules between the namespace and the job label."""
    kind, meta = monitor["kind"], monitor["metadata"]
    namespace, spec = meta["namespace"], monitor["spec"]
    return [
        {
            "job_name": f"{kind[0].lower()}{kind[1:]}/{namespace}/{meta['name']}/{i}",
            **_endpoint(endpoint),
            "kubernetes_sd_configs": [
                discovery(role, namespace, spec.get("namespaceSelector", {}), kubeconfig)
            ],
            "relabel_configs": [
                *selector_rules(selected, spec.get("selector", {})),
                {"action": "keep", "source_labels": [port], "regex": endpoint["port"]},
                *labels,
                {"target_label": "endpoint", "replacement": endpoint["port"]},
            ],
        }
        for i, endpoint in enumerate(endpoints)
    ]


def _targeted(meta: str, keys: Iterable[str]) -> list[dict[str, Any]]:
    """Copies of the object's labels ``keys`` onto its series (``targetLabels``)."""
    return [_copy(f"{meta}_label_{label_name(k)}", label_name(k)) for k in keys]


def pod_monitor_jobs(monitor: Mapping[str, Any], kubeconfig: str) -> list[dict[str, Any]]:
    """One job per metrics endpoint, its targets the selected pods' named container port."""
    spec, meta = monitor["spec"], monitor["metadata"]
    endpoints = spec["podMetricsEndpoints"]
    _checked(POD_MONITOR, spec, endpoints)
    pod = "__meta_kubernetes_pod"
    labels = [
        {"action": "drop", "source_labels": [f"{pod}_phase"], "regex": "(Failed|Succeeded)"},
        _copy("__meta_kubernetes_namespace", "namespace"),
        _copy(f"{pod}_name", "pod"),
        _copy(f"{pod}_container_name", "container"),
        *_targeted(pod, spec.get("podTargetLabels", [])),
        {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
    ]
    port = f"{pod}_container_port_name"
    return _jobs(monitor, endpoints, kubeconfig, "pod", pod, port, labels)


def service_monitor_jobs(monitor: Mapping[str, Any], kubeconfig: str) -> list[dict[str, Any]]:
    """One job per endpoint, its targets the named port of the selected Services'
    EndpointSlices (the Endpoints API is deprecated); the job label is the Service's name
    (or its ``jobLabel`` label)."""
    spec = monitor["spec"]
    endpoints = spec["endpoints"]
    _checked(SERVICE_MONITOR, spec, endpoints)
    service = "__meta_kubernetes_service"
    job = (
        f"{service}_label_{label_name(spec['jobLabel'])}"
        if "jobLabel" in spec
        else f"{service}_name"
    )
    labels = [
        _copy("__meta_kubernetes_namespace", "namespace"),
        _copy(f"{service}_name", "service"),
        _copy("__meta_kubernetes_pod_name", "pod"),
        _copy("__meta_kubernetes_pod_container_name", "container"),
        *_targeted(service, spec.get("targetLabels", [])),
        _copy(job, "job"),
    ]
    port = "__meta_kubernetes_endpointslice_port_name"
    return _jobs(monitor, endpoints, kubeconfig, "endpointslice", service, port, labels)


def scrape_configs(objects: Iterable[Mapping[str, Any]], kubeconfig: str) -> list[dict[str, Any]]:
    """The scrape jobs of every ServiceMonitor and PodMonitor among ``objects``."""
    jobs: list[dict[str, Any]] = []
    for item in objects:
        if item.get("kind") == SERVICE_MONITOR:
            jobs += service_monitor_jobs(item, kubeconfig)
        elif item.get("kind") == POD_MONITOR:
            jobs += pod_monitor_jobs(item, kubeconfig)
    return jobs


def rule_groups(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rule groups of every PrometheusRule among ``objects`` (a rule file's ``groups``)."""
    return [
        g for item in objects if item.get("kind") == PROMETHEUS_RULE for g in item["spec"]["groups"]
    ]
