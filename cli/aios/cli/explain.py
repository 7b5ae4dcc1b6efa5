"""``aiosctl explain KIND/NAME``: why an aios object is not Ready.

It reads what the cluster knows, in the order a person would look: the object's conditions
(the odd ones first) and whether the operator has seen its current generation, the Events
about it, then its children (what the operator rendered, found by the owner label, and the
namespace's workflow worker) down to their pods' container states and warnings. The
findings come first, as sentences; the details after them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import typer
from kubernetes import client
from rich.console import Console

from aios.api import GROUP, KINDS, VERSION
from aios.cli.approvals import Kubeconfig, Namespace, api
from aios.cli.output import Format, Output, emit
from aios.cli.status import is_odd, row

OWNER_UID = "aios.dev/owner-uid"  # set by the operator on every child it renders
WORKER = "aios-worker"  # the namespace's workflow worker (rollouts, actions)
ALIASES = {
    alias: model
    for model in KINDS
    for alias in (
        model.crd.kind.lower(),
        model.crd.singular,
        model.crd.plural,
        *model.crd.short_names,
    )
}
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True)


@dataclass
class Explanation:
    """What ``explain`` found: sentences first, then the evidence."""

    kind: str
    namespace: str
    name: str
    ready: str
    findings: list[str] = field(default_factory=list)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    children: list[dict[str, Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "ready": self.ready,
            "findings": self.findings,
            "conditions": self.conditions,
            "events": self.events,
            "children": self.children,
        }


def parse_target(target: str) -> tuple[str, str]:
    """``KIND/NAME`` with KIND as kubectl accepts it (kind, singular, plural, short name)."""
    kind, _, name = target.partition("/")
    model = ALIASES.get(kind.lower())
    if model is None or not name:
        kinds = ", ".join(sorted(m.crd.singular for m in KINDS))
        raise typer.BadParameter(
            f"expected KIND/NAME with KIND one of {kinds}", param_hint="TARGET"
        )
    return model.crd.kind, name


# -- pure: from what was read to what it means ---------------------------------------------


def condition_findings(obj: Mapping[str, Any]) -> list[str]:
    status = obj.get("status") or {}
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    observed = status.get("observedGeneration")
    findings = []
    if not status:
        findings.append("The operator has not reported on it at all: is the operator running?")
    elif observed != generation:
        findings.append(
            f"The operator has not reconciled generation {generation} yet (it last saw "
            f"{observed}): it is busy, failing, or not watching this namespace."
        )
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") != "True":
            findings.append(
                f"Ready is {condition.get('status')} ({condition.get('reason')}): "
                f"{condition.get('message')}"
            )
        elif condition.get("type") != "Ready" and is_odd(condition):
            findings.append(
                f"{condition.get('type')} is {condition.get('status')} "
                f"({condition.get('reason')}): {condition.get('message')}"
            )
    return findings


def workload_summary(
    workload: Mapping[str, Any], kind: str = "Deployment"
) -> tuple[dict[str, Any], list[str]]:
    """A Deployment's or StatefulSet's availability, and a finding when it falls short."""
    meta, spec = workload["metadata"], workload.get("spec") or {}
    status = workload.get("status") or {}
    desired = int(spec.get("replicas", 1))
    available = int(status.get("availableReplicas") or 0)
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    summary = {
        "kind": kind,
        "name": meta["name"],
        "available": available,
        "desired": desired,
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in conditions.values()
        ],
    }
    findings = []
    if available < desired:
        reason = next(
            (
                f"{c.get('reason')}: {c.get('message')}"
                for t in ("ReplicaFailure", "Progressing", "Available")
                if (c := conditions.get(t)) is not None and c.get("status") != "True"
            ),
            "",
        )
        findings.append(
            f"{kind} {meta['name']}: {available}/{desired} available"
            + (f" ({reason})" if reason else "")
        )
    return summary, findings


def inference_service_summary(isvc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A KServe InferenceService's readiness and URL, and a finding per condition of its
    that is not True (KServe's own words: the predictor's, the ingress's)."""
    name, status = isvc["metadata"]["name"], isvc.get("status") or {}
    conditions = status.get("conditions") or []
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), "Unknown")
    summary = {"kind": "InferenceService", "name": name, "ready": ready, "url": status.get("url")}
    findings = [
        f"InferenceService {name}: {c.get('type')} is {c.get('status')} "
        f"({c.get('reason')}): {c.get('message')}"
        for c in conditions
        if c.get("status") != "True"
    ]
    return summary, findings


def pod_findings(pod: Mapping[str, Any]) -> list[str]:
    """Containers that wait, crash or restart, and unschedulable pods."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    findings = []
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            findings.append(f"Pod {name} is not scheduled: {condition.get('message')}")
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
            findings.append(
                f"Pod {name} container {container['name']} waits: {waiting.get('reason')}"
                + (f" ({waiting['message']})" if waiting.get("message") else "")
            )
        elif terminated:
            findings.append(
                f"Pod {name} container {container['name']} terminated: "
                f"{terminated.get('reason')} (exit {terminated.get('exitCode')})"
            )
        if int(container.get("restartCount") or 0) > 0:
            findings.append(
                f"Pod {name} container {container['name']} restarted "
                f"{container['restartCount']} time(s)"
            )
    return findings


def event_line(event: Mapping[str, Any]) -> dict[str, Any]:
    involved = event.get("involvedObject") or {}
    return {
        "type": event.get("type"),
        "reason": event.get("reason"),
        "message": event.get("message"),
        "count": event.get("count") or 1,
        "last": event.get("lastTimestamp") or event.get("eventTime"),
        "object": f"{involved.get('kind')}/{involved.get('name')}",
    }


def warning_findings(events: list[dict[str, Any]]) -> list[str]:
    return [
        f"Warning {e['reason']} on {e['object']}: {e['message']}"
        for e in events
        if e.get("type") == "Warning"
    ]


# -- reading the cluster --------------------------------------------------------------------


def _events(core: client.CoreV1Api, namespace: str, uid: str) -> list[dict[str, Any]]:
    sanitize = core.api_client.sanitize_for_serialization
    listed = sanitize(
        core.list_namespaced_event(namespace, field_selector=f"involvedObject.uid={uid}")
    )
    lines = [event_line(e) for e in listed["items"]]
    return sorted(lines, key=lambda e: str(e["last"] or ""))[-10:]


def _children(
    api_client: client.ApiClient, namespace: str, uid: str, kind: str
) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """The owner's Deployments and StatefulSets (and the namespace's worker), their pods
    and events; Services and ConfigMaps by name."""
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    sanitize: Callable[[Any], Any] = api_client.sanitize_for_serialization
    selector = f"{OWNER_UID}={uid}"
    workloads = [
        ("Deployment", d)
        for d in sanitize(apps.list_namespaced_deployment(namespace, label_selector=selector))[
            "items"
        ]
    ]
    workloads += [
        ("StatefulSet", s)
        for s in sanitize(apps.list_namespaced_stateful_set(namespace, label_selector=selector))[
            "items"
        ]
    ]
    if kind in ("ModelDeployment", "AutomationIntent"):
        workers = sanitize(
            apps.list_namespaced_deployment(namespace, field_selector=f"metadata.name={WORKER}")
        )["items"]
        workloads += [("Deployment", w) for w in workers]
    children: list[dict[str, Any]] = []
    findings: list[str] = []
    events: list[dict[str, Any]] = []
    if kind == "ModelDeployment":  # with KServe: its InferenceServices, then their predictors
        for isvc in _inference_services(api_client, namespace, selector):
            summary, found = inference_service_summary(isvc)
            children.append(summary)
            findings += found
            events += _events(core, namespace, isvc["metadata"]["uid"])
            predictor = f"{KSERVE_ISVC_LABEL}={isvc['metadata']['name']}"
            listed = apps.list_namespaced_deployment(namespace, label_selector=predictor)
            seen = {w["metadata"]["uid"] for _, w in workloads}
            workloads += [
                ("Deployment", d)
                for d in sanitize(listed)["items"]
                if d["metadata"]["uid"] not in seen
            ]
    for workload_kind, workload in workloads:
        summary, found = workload_summary(workload, workload_kind)
        findings += found
        labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        pods = sanitize(
            core.list_namespaced_pod(
                namespace, label_selector=",".join(f"{k}={v}" for k, v in labels.items())
            )
        )["items"]
        summary["pods"] = [
            {"name": p["metadata"]["name"], "phase": (p.get("status") or {}).get("phase")}
            for p in pods
        ]
        for pod in pods:
            findings += pod_findings(pod)
            events += _events(core, namespace, pod["metadata"]["uid"])
        events += _events(core, namespace, workload["metadata"]["uid"])
        children.append(summary)
    for other, lister in (
        ("Service", core.list_namespaced_service),
        ("ConfigMap", core.list_namespaced_config_map),
    ):
        for item in sanitize(lister(namespace, label_selector=selector))["items"]:
            children.append({"kind": other, "name": item["metadata"]["name"]})
    return children, findings, events


KSERVE_ISVC_LABEL = "serving.kserve.io/inferenceservice"
"""The label KServe puts on an InferenceService's Deployments and pods."""


def _inference_services(
    api_client: client.ApiClient, namespace: str, selector: str
) -> list[dict[str, Any]]:
    """The owner's InferenceServices; none where KServe's kinds are not served."""
    objects = client.CustomObjectsApi(api_client)
    try:
        listed: Any = objects.list_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", namespace, "inferenceservices", label_selector=selector
        )
    except client.ApiException as error:
        if error.status == 404:
            return []
        raise
    return list(listed["items"])


def explain_object(
    api_client: client.ApiClient, kind: str, name: str, namespace: str
) -> Explanation:
    model = next(m for m in KINDS if m.crd.kind == kind)
    objects = client.CustomObjectsApi(api_client)
    obj: Any = objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, model.crd.plural, name
    )
    summary = row(kind, obj)
    result = Explanation(kind, namespace, name, summary.ready)
    result.conditions = sorted(
        summary.conditions, key=lambda c: (not is_odd(c) and c.get("type") != "Ready", c["type"])
    )
    result.findings = condition_findings(obj)
    core = client.CoreV1Api(api_client)
    own_events = _events(core, namespace, obj["metadata"]["uid"])
    children, child_findings, child_events = _children(
        api_client, namespace, obj["metadata"]["uid"], kind
    )
    result.children = children
    result.events = sorted(own_events + child_events, key=lambda e: str(e["last"] or ""))
    result.findings += child_findings + warning_findings(result.events)
    if not result.findings:
        result.findings.append("Nothing is wrong: Ready, reconciled, no warnings.")
    return result


def render(explanation: Explanation) -> None:
    colour = "green" if explanation.ready == "True" else "red"
    out.print(
        f"[bold]{explanation.kind} {explanation.namespace}/{explanation.name}[/]  "
        f"Ready=[{colour}]{explanation.ready}[/]"
    )
    for finding in explanation.findings:
        out.print(f"  • {finding}")
    out.print("[bold]Conditions[/]")
    for c in explanation.conditions:
        style = "red" if is_odd(c) or (c["type"] == "Ready" and c["status"] != "True") else "dim"
        out.print(f"  [{style}]{c['type']}={c['status']}[/] {c.get('reason')}: {c.get('message')}")
    if explanation.children:
        out.print("[bold]Children[/]")
        for child in explanation.children:
            if child["kind"] == "Deployment":
                pods = ", ".join(f"{p['name']} {p['phase']}" for p in child["pods"]) or "no pods"
                out.print(
                    f"  Deployment {child['name']}: {child['available']}/{child['desired']} "
                    f"available; {pods}"
                )
            elif child["kind"] == "InferenceService":
                out.print(
                    f"  InferenceService {child['name']}: Ready={child['ready']} {child['url']}"
                )
            else:
                out.print(f"  {child['kind']} {child['name']}")
    if explanation.events:
        out.print("[bold]Events[/]")
        for e in explanation.events:
            style = "yellow" if e["type"] == "Warning" else "dim"
            out.print(
                f"  [{style}]{e['type']}[/] {e['last']} {e['object']} {e['reason']}: "
                f"{e['message']}" + (f" ({e['count']} times)" if e["count"] > 1 else "")
            )


def explain(
    target: str = typer.Argument(
        ..., help="KIND/NAME, e.g. intent/pm25-alerting or md/pm25-anomaly."
    ),
    namespace: str = Namespace,
    kubeconfig: str | None = Kubeconfig,
    output: Output = Format,
) -> None:
    """Why an aios object is not Ready: conditions, events and children."""
    kind, name = parse_target(target)
    api_client = api(kubeconfig, None, None)
    try:
        explanation = explain_object(api_client, kind, name, namespace)
    except client.ApiException as error:
        err.print(f"[red]{kind} {namespace}/{name}[/]: {error.status} {error.reason}")
        raise typer.Exit(1 if error.status == 404 else 2) from error
    if output is Output.text:
        render(explanation)
    else:
        emit(explanation.document(), output)
