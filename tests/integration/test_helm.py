"""The Helm chart against a real local site of its own (a second node on this machine,
beside the session's: its releases must not meet the session's operator). In file order:
the rendered chart passes the API server's dry run; ``helm install`` runs two operator
pods as the chart's ServiceAccount, one acting; that operator, with only the chart's RBAC,
makes City B Ready and its admission webhook denies what a Policy forbids; ``helm upgrade``
with changed values rolls it; ``helm uninstall`` keeps the CRDs and leaves nothing else
behind."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Kubectl
from support import running_pod, wait_for
from test_intent_e2e import produce, read_all, reading

from aios.connectors import kafka
from aios.operator.reconcile.automation_intent import RUNNER
from aios.operator.settings import KAFKA_CLIENT_SECRET
from aios.stack import release
from aios.stack.components import ComponentUnavailable
from aios.stack.process import ComponentFailed
from aios.stack.site import Site
from aios.stack.site.probes import UNREACHED_WEBHOOK

REPO = Path(__file__).resolve().parents[2]
CHART = release.CHART
RELEASE, NAMESPACE = release.RELEASE, release.NAMESPACE
OPERATOR = release.OPERATOR_SELECTOR
CITY = "city-b"
CRDS = [
    "automationintents.aios.dev",
    "edgegateways.aios.dev",
    "modeldeployments.aios.dev",
    "policies.aios.dev",
]


class ChartSite(Kubectl):
    """The site's kubectl, its Helm, and the operator pods a release runs on its node."""

    def __init__(self, site: Site, values: Path) -> None:
        super().__init__(site)
        self.values = values
        self.helm = release.Helm(site)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self(*args, stdin=stdin)

    def operators(self, name: str = RELEASE) -> dict[str, dict[str, Any]]:
        """The release's operator pods that run and are not going away, by name."""
        pods = self.json("get", "pods", "-n", NAMESPACE, "-l", OPERATOR + name)["items"]
        return {
            p["metadata"]["name"]: p
            for p in pods
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        }

    def log(self, pod: str) -> str:
        return self("logs", "-n", NAMESPACE, pod, "-c", "operator")

    def leader(self, lease: str = RELEASE) -> str | None:
        """The replica holding the release's Lease."""
        found = self.json("get", "lease", lease, "-n", NAMESPACE)
        return (found.get("spec") or {}).get("holderIdentity")


@pytest.fixture(scope="module")
def chart_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartSite]:
    site = Site(tmp_path_factory.mktemp("chart-site"))
    try:
        site.start(only=["kubernetes", "kafka", "temporal", "opa", "mosquitto"])
    except (ComponentFailed, ComponentUnavailable) as error:
        site.stop()
        pytest.fail(f"the chart's local site did not start: {error}", pytrace=False)
    try:
        with pytest.MonkeyPatch.context() as environment:
            # The test's Kafka clients are this site's admin (each site has its own).
            environment.setenv(kafka.EXTRA_CONFIG_ENV, site.endpoints.kafka_config)
            yield ChartSite(site, release.values_file(site))
    finally:
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
    chart_site.site.wait_established(CRDS)
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


WHOAMI = """\
import json, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
request = urllib.request.Request(
    "https://kubernetes.default.svc/apis/authentication.k8s.io/v1/selfsubjectreviews",
    data=b'{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}',
    headers={"Authorization": "Bearer " + open(sa + "/token").read(),
             "Content-Type": "application/json"},
)
context = ssl.create_default_context(cafile=sa + "/ca.crt")
print(json.load(urllib.request.urlopen(request, context=context))["status"]["userInfo"]["username"])
"""


def test_install_runs_two_replicas_of_which_the_lease_holder_acts(chart_site: ChartSite) -> None:
    chart_site.helm(
        "install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(chart_site.values),
        "--create-namespace", "--wait", "--timeout=180s",
    )  # fmt: skip
    deployment = chart_site.json("get", "deployment", RELEASE, "-n", NAMESPACE)
    available = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
    assert available["Available"] == "True" and deployment["status"]["availableReplicas"] == 2
    processes = wait_for(lambda: len(found := chart_site.operators()) == 2 and found)
    for name, pod in processes.items():
        wait_for(lambda a=pod["status"]["podIP"]: healthy(a), timeout=60)
        who = chart_site(
            "exec", "-n", NAMESPACE, name, "-c", "operator", "--", "python3", "-c", WHOAMI
        )
        assert who.strip() == f"system:serviceaccount:{NAMESPACE}:{RELEASE}", (
            "the operator calls the API server as the chart's ServiceAccount"
        )

    leader = wait_for(lambda: chart_site.leader(), what="a replica to take the Lease")
    assert leader in processes, "the Lease names the leading pod"
    lease = chart_site.json("get", "lease", RELEASE, "-n", NAMESPACE)
    assert lease["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, "the chart's"
    standby = next(name for name in processes if name != leader)
    assert "acquired lease" in chart_site.log(leader)
    assert "acquired lease" not in chart_site.log(standby), "the other replica stands by"


def test_the_charts_operator_makes_a_city_ready_with_the_charts_rbac(
    chart_site: ChartSite,
) -> None:
    applied = chart_site.kubectl("apply", "--server-side", "-k", str(REPO / "examples" / CITY))
    expected = sum(".aios.dev/" in line for line in applied.splitlines())
    assert expected == 5, applied

    def not_ready() -> list[str]:
        """Each object not Ready yet, with its Ready condition (empty: all are)."""
        items = chart_site.json("get", "aios", "-n", CITY)["items"]
        waiting = [f"{len(items)} of {expected} objects listed"] if len(items) != expected else []
        for item in items:
            conditions = (item.get("status") or {}).get("conditions", [])
            ready = next((c for c in conditions if c["type"] == "Ready"), {})
            if ready.get("status") != "True":
                waiting.append(f"{item['kind']}/{item['metadata']['name']}: {ready}")
        return waiting

    pending: list[str] = []

    def all_ready() -> bool:
        pending[:] = not_ready()
        return not pending

    try:
        try:
            wait_for(all_ready, timeout=300, interval=2, what="every object Ready")
        except AssertionError as error:
            raise AssertionError(f"{error}; not Ready: {pending}") from None
    finally:
        assert_no_forbidden(chart_site)
    counts = {
        name: reconciles(pod["status"]["podIP"]) for name, pod in chart_site.operators().items()
    }
    assert sorted(v > 0 for v in counts.values()) == [False, True], (
        f"exactly one replica reconciles: {counts}"
    )
    acting = max(counts, key=lambda n: counts[n])
    assert acting == chart_site.leader(), "the one that reconciles holds the Lease"

    assert_kafka_users_by_reference(chart_site)

    denied = chart_site.run("apply", "-f", "-", stdin=yaml.safe_dump(unapproved_actuation()))
    assert denied.returncode != 0
    assert "actuation-needs-approval" in denied.stderr and "human approval" in denied.stderr
    secret = chart_site.json("get", "secret", "aios-webhook-ca", "-n", NAMESPACE)
    webhooks = chart_site.json("get", "validatingwebhookconfiguration", "aios.dev")["webhooks"]
    assert webhooks, "the operator filled in the chart's configuration"
    for webhook in webhooks:
        assert webhook["clientConfig"]["caBundle"] == secret["data"]["tls.crt"]


def test_the_operator_runs_the_built_image_and_a_deleted_runner_resumes_where_it_stopped(
    chart_site: ChartSite,
) -> None:
    """The chart's pods run exactly the image built here; a runner pod deleted mid-stream is
    recreated by its StatefulSet and goes on from its committed offsets: every reading is
    decided once, none twice."""
    digest = chart_site.site.images["aios"].digest
    for pod in chart_site.operators().values():
        assert pod["status"]["containerStatuses"][0]["imageID"].endswith(digest)
    bootstrap = chart_site.site.endpoints.kafka_bootstrap
    intent = chart_site.json("get", "automationintent", "pm25-alerting", "-n", CITY)
    source = intent["status"]["topics"]["source"].split(", ")[0]
    decisions = intent["status"]["topics"]["decisions"]

    def batch(start: int) -> list[tuple[str, bytes]]:
        return [
            (f"helm-{i % 40}", reading(f"helm-{i % 40}", 15.0, i))
            for i in range(start, start + 300)
        ]

    def decided() -> list[str]:
        found = [json.loads(m.value())["decisionId"] for m in read_all(bootstrap, decisions, 0, 5)]
        return [d for d in found if "/helm-" in d]

    produce(bootstrap, source, batch(0))
    wait_for(lambda: len(decided()) >= 300, what="the first readings decided")
    selector = f"app.kubernetes.io/instance=pm25-alerting,app.kubernetes.io/name={RUNNER}"
    (before,) = chart_site.json("get", "pods", "-n", CITY, "-l", selector)["items"]
    chart_site("delete", "pod", "-n", CITY, before["metadata"]["name"], "--wait=false")
    produce(bootstrap, source, batch(300))
    wait_for(
        lambda: (
            (p := running_pod(chart_site, CITY, selector)) is not None
            and p["metadata"]["uid"] != before["metadata"]["uid"]
        ),
        what="the StatefulSet's new runner pod ready",
    )
    ids = wait_for(lambda: len(found := decided()) >= 600 and found, what="every reading decided")
    assert len(ids) == len(set(ids)) == 600, "each reading decided once, none twice"


def assert_kafka_users_by_reference(chart_site: ChartSite) -> None:
    """Each of the city's workloads is its own Kafka user, its settings in its own Secret
    (written by the operator with the chart's RBAC); no workload spells them out."""
    users = {
        "aios-worker": ("aios-worker-kafka", f"aios-worker.{CITY}"),
        "pm25-alerting-runner": ("pm25-alerting-runner-kafka", f"aios-runner.{CITY}.pm25-alerting"),
    }
    workloads = chart_site.json("get", "deployments,statefulsets", "-n", CITY)["items"]
    for workload in workloads:
        name = workload["metadata"]["name"]
        if name not in users:
            continue
        secret, user = users.pop(name)
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        (reference,) = [e for e in container["env"] if e["name"] == "AIOS_KAFKA_CONFIG"]
        assert reference["valueFrom"]["secretKeyRef"]["name"] == secret, name
        data = chart_site.json("get", "secret", secret, "-n", CITY)["data"]
        assert json.loads(base64.b64decode(data["config.json"]))["sasl.username"] == user
    assert not users, f"not rendered: {users}"
    assert chart_site.run("get", "secret", KAFKA_CLIENT_SECRET, "-n", CITY).returncode != 0, (
        "no shared copy of the operator's own user"
    )


def assert_no_forbidden(chart_site: ChartSite, name: str = RELEASE) -> None:
    """No API call of the operator was refused: the chart's RBAC was enough."""
    pods = chart_site.operators(name)
    assert pods
    for pod in pods:
        lines = chart_site.log(pod).splitlines()
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
    old = chart_site.operators()
    chart_site.helm(
        "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(chart_site.values),
        "--set", "operator.policyAuditIntervalSeconds=17", "--wait", "--timeout=180s",
    )  # fmt: skip
    wait_for(lambda: template_hashes() - before == template_hashes())
    assert template_hashes().isdisjoint(before), "a new ReplicaSet replaced the old one"

    def new_pods() -> dict[str, dict[str, Any]]:
        found = chart_site.operators()
        return found if len(found) == 2 and not set(found) & set(old) else {}

    for name, pod in wait_for(new_pods).items():
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["AIOS_POLICY_AUDIT_INTERVAL"] == "17", name
        wait_for(lambda a=pod["status"]["podIP"]: healthy(a), timeout=60)
    wait_for(lambda: not set(chart_site.operators()) & set(old), what="the old pods gone")
    history = chart_site.helm("history", RELEASE, "-n", NAMESPACE, "-o", "json")
    assert [r["status"] for r in json.loads(history)][-1] == "deployed"


@pytest.mark.fault("admission webhook down")
def test_with_the_webhook_down_no_aios_object_is_admitted_and_the_refusal_says_why(
    chart_site: ChartSite,
) -> None:
    """No operator answers the webhook: an aios object is refused (``failurePolicy: Fail``)
    naming the webhook, none is stored, and the same apply goes through once it is back."""
    scale = ("scale", "deployment", "-n", NAMESPACE, "-l", OPERATOR + RELEASE)
    chart_site(*scale, "--replicas=0")
    wait_for(
        lambda: (
            not chart_site.json("get", "pods", "-n", NAMESPACE, "-l", OPERATOR + RELEASE)["items"]
        ),
        what="the operator's pods gone",
    )
    gateway = {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "EdgeGateway",
        "metadata": {"name": "while-down", "namespace": CITY},
        "spec": {"site": "district-7", "sink": {"kafkaTopic": "aios.city-b.while-down"}},
    }
    try:
        refused = chart_site.run("apply", "-f", "-", stdin=json.dumps(gateway))
        assert refused.returncode != 0
        assert UNREACHED_WEBHOOK in refused.stderr, refused.stderr
        assert "policy-edgegateway.aios.dev" in refused.stderr, "it names the webhook"
        assert chart_site.run("get", "edgegateway", "while-down", "-n", CITY).returncode != 0
    finally:
        chart_site(*scale, "--replicas=2")
    release.wait_admitting(chart_site.site, NAMESPACE, 300)
    chart_site("apply", "-f", "-", stdin=json.dumps(gateway))
    chart_site("delete", "edgegateway", "while-down", "-n", CITY)


def test_uninstall_keeps_the_crds_and_leaves_no_orphans(chart_site: ChartSite) -> None:
    assert chart_site.operators()
    chart_site.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=180s")
    for crd in CRDS:
        assert chart_site.run("get", "crd", crd).returncode == 0, f"{crd} is kept (Helm's way)"
    selector = f"app.kubernetes.io/instance={RELEASE}"
    for kinds, scope in [
        ("deployments,replicasets,services,serviceaccounts,secrets,configmaps", "-n"),
        ("networkpolicies,poddisruptionbudgets,roles,rolebindings,leases", "-n"),
        ("clusterroles,clusterrolebindings", ""),
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
        ),
        what="the operator's pods gone",
    )


def test_a_release_for_one_namespace_reconciles_it_with_bindings_there_only(
    chart_site: ChartSite,
) -> None:
    """A shard: the operator watches City B only, its work role bound there by a RoleBinding,
    its replicas electing their leader with the shard's own Lease."""
    chart_site.helm(
        "install", "shard", str(CHART), "-n", NAMESPACE, "-f", str(chart_site.values),
        "--set", f"operator.watchNamespaces={{{CITY}}}", "--set", "webhook.enabled=false",
        "--wait", "--timeout=180s",
    )  # fmt: skip
    try:
        shard = "app.kubernetes.io/instance=shard"
        bindings = chart_site.json("get", "rolebindings", "-n", CITY, "-l", shard)
        names = sorted(b["roleRef"]["name"] for b in bindings["items"])
        assert names == ["shard-aios", "shard-aios-console-read"], "the operator's, the console's"
        assert chart_site.run("get", "clusterrolebinding", "shard-aios").returncode != 0
        assert chart_site.run("get", "clusterrolebinding", "shard-aios-console-read").returncode
        chart_site.kubectl(
            "patch", "policy", "actuation-needs-approval", "-n", CITY, "--type=merge",
            "-p", '{"spec": {"enforcement": "warn"}}',
        )  # fmt: skip

        def reconciled() -> bool:
            policy = chart_site.json("get", "policy", "actuation-needs-approval", "-n", CITY)
            status = policy.get("status") or {}
            return status.get("observedGeneration") == policy["metadata"]["generation"]

        wait_for(reconciled, timeout=120, what="the shard's operator to reconcile the change")
        pods = chart_site.operators("shard")
        assert chart_site.leader("shard-aios") in pods
        assert pods and all(
            f"--namespace={CITY}" in p["spec"]["containers"][0]["args"] for p in pods.values()
        )
        assert_no_forbidden(chart_site, "shard")
    finally:
        chart_site.helm("uninstall", "shard", "-n", NAMESPACE, "--wait", "--timeout=180s")
    assert chart_site.run("get", "rolebinding", "shard-aios", "-n", CITY).returncode != 0
