"""The Helm chart against a real local site of its own (no session operator in it: the
chart's operator is the only one). In file order: the rendered chart passes the API
server's dry run; ``helm install`` runs two operator replicas as the chart's
ServiceAccount, one acting; that operator, with only the chart's RBAC, makes City B Ready
and its admission webhook denies what a Policy forbids; ``helm upgrade`` with changed
values rolls it; ``helm uninstall`` keeps the CRDs and leaves nothing else behind."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Kubectl
from support import wait_for

from aios.cli.site_values import local_site_values
from aios.operator.settings import KAFKA_CLIENT_KEY, KAFKA_CLIENT_SECRET
from aios.stack.components import HELM, ComponentUnavailable
from aios.stack.pods import PodSupervisor
from aios.stack.process import ComponentFailed, ManagedProcess
from aios.stack.site import Site

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "aios"
RELEASE, NAMESPACE = "aios", "aios-system"
OPERATOR = "app.kubernetes.io/component=operator,app.kubernetes.io/instance="
CITY = "city-b"
CRDS = [
    "automationintents.aios.dev",
    "edgegateways.aios.dev",
    "modeldeployments.aios.dev",
    "policies.aios.dev",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
]


class ChartSite(Kubectl):
    """The site's kubectl, Helm, and the operator processes its local kubelet runs."""

    def __init__(self, site: Site, pods: PodSupervisor, values: Path, helm_home: Path) -> None:
        super().__init__(site)
        self.pods, self.values, self.helm_home = pods, values, helm_home

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self(*args, stdin=stdin)

    def helm(self, *args: str) -> str:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.helm_home),
            "HELM_CACHE_HOME": str(self.helm_home / "cache"),
            "HELM_CONFIG_HOME": str(self.helm_home / "config"),
            "HELM_DATA_HOME": str(self.helm_home / "data"),
            "KUBECONFIG": self.site.endpoints.kubeconfig,
        }
        result = subprocess.run(
            [str(HELM.binary()), *args], capture_output=True, text=True, timeout=300, env=env
        )
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def operator_processes(self, release: str = RELEASE) -> dict[str, tuple[ManagedProcess, str]]:
        """Operator pods the local kubelet runs: pod name → (process, pod address)."""
        pods = self.json("get", "pods", "-n", NAMESPACE, "-l", OPERATOR + release)["items"]
        found = {}
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if uid in self.pods.running and pod["metadata"].get("deletionTimestamp") is None:
                process = self.pods.running[uid]["operator"]
                found[pod["metadata"]["name"]] = (process, self.pods.addresses[uid][2])
        return found


@pytest.fixture(scope="module")
def chart_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartSite]:
    root = tmp_path_factory.mktemp("chart-site")
    site = Site(root / "site")
    try:
        site.start(only=["kubernetes", "kafka", "temporal", "opa", "mosquitto"])
    except (ComponentFailed, ComponentUnavailable) as error:
        site.stop()
        pytest.fail(f"the chart's local site did not start: {error}", pytrace=False)
    pods = PodSupervisor(site.endpoints.kubeconfig, site.directory / "pods").start()
    values = root / "values.yaml"
    values.write_text(yaml.safe_dump(local_site_values(site.endpoints)))
    try:
        yield ChartSite(site, pods, values, root / "helm")
    finally:
        pods.stop()
        site.stop()


def healthy(address: str, port: int = 8080) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def reconciles(address: str) -> float:
    """How many reconciles this replica has run (its /metrics)."""
    with urllib.request.urlopen(f"http://{address}:9090/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aios_operator_reconcile_duration_seconds_count")
    )


def test_the_rendered_chart_passes_the_api_servers_dry_run(chart_site: ChartSite) -> None:
    for path in sorted((CHART / "crds").glob("*.yaml")):
        chart_site.kubectl("apply", "--server-side", "-f", str(path))
    chart_site.kubectl("wait", "--for=condition=Established", *[f"crd/{c}" for c in CRDS])
    chart_site.kubectl("create", "namespace", NAMESPACE)
    rendered = chart_site.helm(
        "template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(chart_site.values)
    )
    result = chart_site.run("apply", "--dry-run=server", "-f", "-", stdin=rendered)
    assert result.returncode == 0, result.stderr
    kinds = {line.split("/")[0] for line in result.stdout.splitlines()}
    assert {"deployment.apps", "clusterrole.rbac.authorization.k8s.io"} <= kinds
    assert "validatingwebhookconfiguration.admissionregistration.k8s.io" in kinds
    assert chart_site.run("get", "deployment", RELEASE, "-n", NAMESPACE).returncode != 0, (
        "a dry run creates nothing"
    )


def test_install_runs_two_peered_replicas_of_which_one_acts(chart_site: ChartSite) -> None:
    chart_site.helm(
        "install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(chart_site.values),
        "--create-namespace", "--wait", "--timeout=180s",
    )  # fmt: skip
    deployment = chart_site.json("get", "deployment", RELEASE, "-n", NAMESPACE)
    available = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
    assert available["Available"] == "True" and deployment["status"]["availableReplicas"] == 2
    wait_for(lambda: len(chart_site.operator_processes()) == 2)
    processes = chart_site.operator_processes()
    for process, address in processes.values():
        wait_for(lambda a=address: healthy(a), timeout=60)
        assert process.running()
        assert process.env["KUBECONFIG"].endswith("serviceaccount/kubeconfig"), (
            "the operator runs with its ServiceAccount's token, not the admin's"
        )

    def peers() -> dict[str, Any]:
        peering = chart_site.json("get", "clusterkopfpeering", RELEASE)
        return {k: v for k, v in (peering.get("status") or {}).items() if v}

    found = wait_for(lambda: len(peers()) == 2 and peers())
    assert set(found) == set(processes), "kopf identities are the pod names (POD_ID)"
    priorities = {p["priority"] for p in found.values()}
    assert len(priorities) == 2, "random priorities: replicas never tie (a tie pauses both)"

    def active() -> list[str]:
        """Replicas whose last peering decision was to act: kopf starts a peered replica
        paused and logs each change, so one that never resumed is still waiting."""
        acting = []
        for name, (process, _) in processes.items():
            text = process.log.read_text()
            resumed = text.rfind("Resuming operations")
            if resumed >= 0 and resumed > text.rfind("Pausing operations"):
                acting.append(name)
        return acting

    highest = max(found, key=lambda n: found[n]["priority"])
    wait_for(lambda: highest in active())
    assert active() == [highest], "the other replica waits (it acts once this one is gone)"


def test_the_charts_operator_makes_a_city_ready_with_the_charts_rbac(
    chart_site: ChartSite,
) -> None:
    applied = chart_site.kubectl("apply", "--server-side", "-k", str(REPO / "examples" / CITY))
    expected = sum(".aios.dev/" in line for line in applied.splitlines())
    assert expected == 5, applied

    def all_ready() -> bool:
        items = chart_site.json("get", "aios", "-n", CITY)["items"]
        ready = [
            i
            for i in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (i.get("status") or {}).get("conditions", [])
            )
        ]
        return len(items) == len(ready) == expected

    try:
        wait_for(all_ready, timeout=300, interval=2)
    finally:
        assert_no_forbidden(chart_site.operator_processes())
    counts = {
        name: reconciles(address) for name, (_, address) in chart_site.operator_processes().items()
    }
    assert sorted(v > 0 for v in counts.values()) == [False, True], (
        f"exactly one replica reconciles: {counts}"
    )
    peering = chart_site.json("get", "clusterkopfpeering", RELEASE)["status"]
    acting = max(counts, key=lambda n: counts[n])
    assert acting == max(peering, key=lambda n: (peering[n] or {}).get("priority", -1))

    assert_kafka_settings_by_reference(chart_site)

    denied = chart_site.run("apply", "-f", "-", stdin=yaml.safe_dump(unapproved_actuation()))
    assert denied.returncode != 0
    assert "actuation-needs-approval" in denied.stderr and "human approval" in denied.stderr
    secret = chart_site.json("get", "secret", "aios-webhook-ca", "-n", NAMESPACE)
    webhooks = chart_site.json("get", "validatingwebhookconfiguration", "aios.dev")["webhooks"]
    assert webhooks, "the operator filled in the chart's configuration"
    for webhook in webhooks:
        assert webhook["clientConfig"]["caBundle"] == secret["data"]["tls.crt"]


def assert_kafka_settings_by_reference(chart_site: ChartSite) -> None:
    """The city's data plane reads the site's Kafka client settings from its own Secret,
    which the operator wrote with the chart's RBAC; no Deployment spells them out."""
    secret = chart_site.json("get", "secret", KAFKA_CLIENT_SECRET, "-n", CITY)
    assert json.loads(base64.b64decode(secret["data"][KAFKA_CLIENT_KEY])) == {}, "chart default"
    deployments = chart_site.json("get", "deployments", "-n", CITY)["items"]
    readers = [
        d["metadata"]["name"]
        for d in deployments
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if e["name"] == "AIOS_KAFKA_CONFIG"
        and e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == KAFKA_CLIENT_SECRET
    ]
    assert {"aios-worker", "pm25-alerting-runner"} <= set(readers), readers


def assert_no_forbidden(processes: dict[str, tuple[ManagedProcess, str]]) -> None:
    """No API call of the operator was refused: the chart's RBAC was enough."""
    assert processes
    for name, (process, _) in processes.items():
        lines = process.log.read_text().splitlines()
        forbidden = [line for line in lines if "forbidden" in line.lower()]
        assert not forbidden, f"{name} lacked RBAC:\n" + "\n".join(forbidden[:5])


def unapproved_actuation() -> dict[str, Any]:
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "AutomationIntent",
        "metadata": {"name": "unapproved", "namespace": CITY},
        "spec": {
            "sources": [{"name": "readings", "kafkaTopic": "aios.city-b.district-7.readings"}],
            "rules": [{"name": "always", "when": "reading.pm25 > 1", "action": "move"}],
            "actions": [{"name": "move", "type": "mqtt", "target": "city-b/district-7/barrier"}],
        },
    }


def test_upgrade_with_changed_values_rolls_the_operator(chart_site: ChartSite) -> None:
    def template_hashes() -> set[str]:
        pods = chart_site.json("get", "pods", "-n", NAMESPACE, "-l", OPERATOR + RELEASE)["items"]
        return {p["metadata"]["labels"]["pod-template-hash"] for p in pods}

    before = template_hashes()
    old = chart_site.operator_processes()
    chart_site.helm(
        "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(chart_site.values),
        "--set", "operator.policyAuditIntervalSeconds=17", "--wait", "--timeout=180s",
    )  # fmt: skip
    wait_for(lambda: template_hashes() - before == template_hashes())
    assert template_hashes().isdisjoint(before), "a new ReplicaSet replaced the old one"

    def new_processes() -> dict[str, tuple[ManagedProcess, str]]:
        found = chart_site.operator_processes()
        return found if len(found) == 2 and not set(found) & set(old) else {}

    for name, (process, address) in wait_for(new_processes).items():
        assert process.env["AIOS_POLICY_AUDIT_INTERVAL"] == "17", name
        wait_for(lambda a=address: healthy(a), timeout=60)
    wait_for(lambda: not any(p.running() for p, _ in old.values()))
    history = chart_site.helm("history", RELEASE, "-n", NAMESPACE, "-o", "json")
    assert [r["status"] for r in json.loads(history)][-1] == "deployed"


def test_uninstall_keeps_the_crds_and_leaves_no_orphans(chart_site: ChartSite) -> None:
    processes = [process for process, _ in chart_site.operator_processes().values()]
    assert processes
    chart_site.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=180s")
    for crd in CRDS:
        assert chart_site.run("get", "crd", crd).returncode == 0, f"{crd} is kept (Helm's way)"
    selector = f"app.kubernetes.io/instance={RELEASE}"
    for kinds, scope in [
        ("deployments,replicasets,services,serviceaccounts,secrets,configmaps", "-n"),
        ("networkpolicies,poddisruptionbudgets,roles,rolebindings", "-n"),
        ("clusterroles,clusterrolebindings,clusterkopfpeerings", ""),
        ("validatingwebhookconfigurations,mutatingwebhookconfigurations", ""),
    ]:
        args = ["get", kinds, "-l", selector, "-o", "name"]
        if scope:
            args += ["-n", NAMESPACE]
        assert chart_site.kubectl(*args).strip() == "", f"left behind: {kinds}"
    webhooks = chart_site.kubectl(
        "get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o", "name"
    )
    assert "aios.dev" not in webhooks, "no webhook left to block aios objects"
    wait_for(
        lambda: (
            not chart_site.json("get", "pods", "-n", NAMESPACE, "-l", OPERATOR + RELEASE)["items"]
            and not any(p.running() for p in processes)
        ),
    )


def test_a_release_for_one_namespace_reconciles_it_with_bindings_there_only(
    chart_site: ChartSite,
) -> None:
    """A shard: the operator watches City B only, its work role bound there by a RoleBinding,
    its replicas meeting in a KopfPeering in that namespace."""
    chart_site.helm(
        "install", "shard", str(CHART), "-n", NAMESPACE, "-f", str(chart_site.values),
        "--set", f"operator.watchNamespaces={{{CITY}}}", "--set", "webhook.enabled=false",
        "--wait", "--timeout=180s",
    )  # fmt: skip
    try:
        shard = "app.kubernetes.io/instance=shard"
        bindings = chart_site.json("get", "rolebindings", "-n", CITY, "-l", shard)
        assert [b["roleRef"]["name"] for b in bindings["items"]] == ["shard-aios"]
        assert chart_site.run("get", "clusterrolebinding", "shard-aios").returncode != 0
        chart_site.kubectl(
            "patch", "policy", "actuation-needs-approval", "-n", CITY, "--type=merge",
            "-p", '{"spec": {"enforcement": "warn"}}',
        )  # fmt: skip

        def reconciled() -> bool:
            policy = chart_site.json("get", "policy", "actuation-needs-approval", "-n", CITY)
            status = policy.get("status") or {}
            return status.get("observedGeneration") == policy["metadata"]["generation"]

        wait_for(reconciled, timeout=120, what="the shard's operator to reconcile the change")
        peering = chart_site.json("get", "kopfpeering", "shard-aios", "-n", CITY)
        assert len([p for p in (peering.get("status") or {}).values() if p]) == 2
        processes = chart_site.operator_processes("shard")
        assert all(f"--namespace={CITY}" in p.argv for p, _ in processes.values())
        assert_no_forbidden(processes)
    finally:
        chart_site.helm("uninstall", "shard", "-n", NAMESPACE, "--wait", "--timeout=180s")
    assert chart_site.run("get", "rolebinding", "shard-aios", "-n", CITY).returncode != 0
