"""The Helm chart, rendered offline by the pinned Helm: it lints, renders valid manifests
a kubelet can run, gives the operator exactly the access its code needs (every
rule with its reason), rejects bad values, and ships dashboards that plot real metrics."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hang import HANG_SECONDS

from aios.api import CRD_KINDS
from aios.connectors.audit import EVENTS_TOPIC
from aios.connectors.audit_checkpoint import CONFIGMAP
from aios.operator.certificates import WebhookCertificates, load_ca
from aios.operator.handlers.edge_gateway import SIMULATOR_KINDS
from aios.operator.reconcile import automation_intent, model_deployment, worker
from aios.operator.reconcile.kafka_access import worker_principal
from aios.operator.reconcile.model_deployment.kserve import SERVING_RUNTIMES
from aios.operator.reconcile.model_deployment.names import GRPC_PORT, HTTP_PORT
from aios.operator.reconcile.model_deployment.server import DRAIN_SECONDS
from aios.operator.runtime.children import DEFINITIONS, HELD_KINDS
from aios.stack.components import HELM
from aios.stack.images import BuiltImage
from aios.stack.node import MODEL_MIRROR
from aios.stack.release import local_site_values
from aios.stack.site import Endpoints

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "aios"
NAMESPACE = "aios-system"

WORKER_USER = worker_principal("ns", [], EVENTS_TOPIC)


def helm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM.binary()), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key twice in one mapping (the API server would keep one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        duplicated = {k for k in keys if keys.count(k) > 1}
        assert not duplicated, f"duplicate keys {duplicated} at line {node.start_mark.line + 1}"
        return super().construct_mapping(node, deep=deep)


def render(
    *sets: str, values: dict[str, Any] | None = None, api_versions: tuple[str, ...] = ()
) -> str:
    """``helm template`` of the chart; ``api_versions``: kinds the cluster is said to serve."""
    args = ["template", "aios", str(CHART), "-n", NAMESPACE]
    for served in api_versions:
        args += ["--api-versions", served]
    for item in sets:
        args += ["--set", item]
    result = helm(*args, "--values", "-", stdin=yaml.safe_dump(values or {}))
    assert result.returncode == 0, result.stderr
    return result.stdout


def manifests(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "Deployment", "aios")["spec"]["template"]["spec"]["containers"][0]


def env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return manifests(render())


def test_helm_lint_is_clean_in_strict_mode() -> None:
    result = helm("lint", str(CHART), "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_the_default_render_has_every_piece_of_a_site(default: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in default)
    for kind in [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "MutatingWebhookConfiguration",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "ValidatingWebhookConfiguration",
    ]:
        assert kind in kinds, kind
    assert kinds.count("ConfigMap") == 3, "a dashboard each: operator, data path, edge fleet"
    for doc in default:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "aios" and labels["aios.dev/site"]


def test_the_operator_runs_two_replicas_electing_a_leader_with_explicit_commands(
    default: list[dict[str, Any]],
) -> None:
    deployment = find(default, "Deployment", "aios")
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aios"
    operator = container(default)
    assert operator["command"] == ["aios-operator"]
    args = operator["args"]
    assert "--lease=aios" in args
    assert "--liveness-host=$(POD_IP)" in args, "each replica binds its own address"
    role = next(d for d in default if d["kind"] == "Role" and "leader" in d["metadata"]["name"])
    assert role["metadata"]["namespace"] == NAMESPACE, "the Lease lives with the release"
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["aios"],
            "verbs": ["get", "update"],
        }
    ], "a replica renews this release's Lease and no other"
    names = [e["name"] for e in operator["env"]]
    assert names.index("POD_IP") < names.index("AIOS_WEBHOOK_ADDR"), "$(POD_IP) defined first"
    variables = env(default)
    assert variables["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert variables["AIOS_WEBHOOK_SERVICE"] == f"{NAMESPACE}/aios"
    assert variables["AIOS_WEBHOOK_CERT_SECONDS"] == "2592000", "an integer, not 2.592e+06"
    pdb = find(default, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_one_replica_has_no_disruption_budget() -> None:
    kinds = [d["kind"] for d in manifests(render("operator.replicas=1"))]
    assert "PodDisruptionBudget" not in kinds


def rule_blocks(text: str) -> Iterator[tuple[str, list[str], dict[str, Any]]]:
    """(role name, comment lines just above, rule) for every rule of every rendered role."""
    for document in text.split("\n---\n"):
        parsed = yaml.safe_load(document)
        if not parsed or parsed.get("kind") not in ("ClusterRole", "Role"):
            continue
        lines = document.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("  - apiGroups:")]
        assert len(starts) == len(parsed["rules"]), "one `- apiGroups:` line starts each rule"
        for index, start in enumerate(starts):
            comments = []
            j = start - 1
            while j >= 0 and lines[j].strip().startswith("#"):
                comments.insert(0, lines[j].strip())
                j -= 1
            yield parsed["metadata"]["name"], comments, parsed["rules"][index]


def test_every_rbac_rule_says_why() -> None:
    for sets in [(), ("operator.watchNamespaces={city-a,city-b}",), ("webhook.enabled=false",)]:
        blocks = list(rule_blocks(render(*sets)))
        assert len(blocks) >= 15
        for role, comments, rule in blocks:
            assert comments, f"{role}: rule {rule} has no comment saying why"


def permissions(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the operator holds, ignoring resourceNames-limited rules."""
    held = set()
    for doc in docs:
        if doc["kind"] != "ClusterRole":
            continue
        for rule in doc["rules"]:
            if rule.get("resourceNames"):
                continue
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    held |= {(group, resource, verb) for verb in rule["verbs"]}
    return held


def group_of(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def plural(kind: str) -> str:
    return {"HorizontalPodAutoscaler": "horizontalpodautoscalers", "Policy": "policies"}.get(
        kind, kind.lower() + "s"
    )


def test_the_operator_may_apply_and_prune_every_child_kind_it_renders(
    default: list[dict[str, Any]],
) -> None:
    """Derived from the renderers: a new child kind without RBAC fails here, not in a city."""
    held = permissions(default)
    children = {
        *automation_intent.RUNNER_KINDS,
        *model_deployment.CHILD_KINDS,
        *model_deployment.KSERVE_KINDS,
        *SIMULATOR_KINDS,
        *{(o["apiVersion"], o["kind"]) for o in worker.render_worker(WORKER_USER, settings())},
    }
    for api_version, kind in children:
        for verb in ("create", "patch", "list", "delete"):
            assert (group_of(api_version), plural(kind), verb) in held, (kind, verb)


def test_the_operator_may_watch_every_child_kind_it_holds(default: list[dict[str, Any]]) -> None:
    """A held kind the operator may not list and watch is never synced: its informer retries
    for ever and every read falls back to a GET, which no functional test would notice."""
    held = permissions(default)
    for api_version, _, resource in (*HELD_KINDS, DEFINITIONS):
        for verb in ("list", "watch"):
            assert (group_of(api_version), resource, verb) in held, (resource, verb)


def test_the_operator_may_write_the_kafka_secrets_and_read_no_secret(
    default: list[dict[str, Any]],
) -> None:
    """The data plane's Kafka Secrets (the shared copy, or each workload's own user's) are
    applied: create, then patch; the operator never needs to read a Secret, so it may not."""
    scram = json.dumps({"sasl.mechanism": "SCRAM-SHA-512", "security.protocol": "SASL_SSL"})
    site = replace(settings(), kafka_config=scram, kafka_principal_key="k")
    (shared,) = replace(settings(), kafka_config="{}").component_secrets("ns")
    (own,) = site.component_secrets("ns", WORKER_USER)
    assert own["metadata"]["name"] != shared["metadata"]["name"]
    secret_rules = [
        rule
        for doc in default
        if doc["kind"] == "ClusterRole"
        for rule in doc["rules"]
        if "secrets" in rule["resources"]
    ]
    held = permissions(default)
    assert ("", "secrets", "create") in held and ("", "secrets", "patch") in held
    granted = {verb for rule in secret_rules for verb in rule["verbs"]}
    assert granted == {"create", "patch"}, "no get, list, watch or delete of Secrets"


def test_the_operator_holds_every_permission_it_grants_onwards(
    default: list[dict[str, Any]],
) -> None:
    """The API server refuses a Role with rules its creator does not hold."""
    held = permissions(default)
    runner = next(
        c for c in automation_intent.render_runner(*runner_inputs()) if c["kind"] == "Role"
    )
    for rule in [*worker.WORKER_RULES, *runner["rules"]]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert (group, resource, verb) in held, (group, resource, verb)


def settings() -> Any:
    from aios.operator.settings import OperatorSettings

    return OperatorSettings(kafka_bootstrap="kafka:9092", temporal_address="temporal:7233")


def runner_inputs() -> tuple[Any, ...]:
    from aios.api import AutomationIntent

    path = REPO / "examples" / "city-air-quality" / "pm25-alerting.yaml"
    body = yaml.safe_load(path.read_text())
    body["metadata"].update(namespace="city", uid="0000")
    intent = AutomationIntent.model_validate(body)
    return intent, settings(), ["aios.district-7.readings"]


def test_watching_listed_namespaces_binds_the_work_role_only_there() -> None:
    docs = manifests(render("operator.watchNamespaces={city-a,city-b}"))
    bindings = [
        d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["kind"] == "ClusterRole"
    ]
    for role in ("aios", "aios-console-read"):
        bound = [b["metadata"]["namespace"] for b in bindings if b["roleRef"]["name"] == role]
        assert sorted(bound) == ["city-a", "city-b"], role
    assert {b["roleRef"]["name"] for b in bindings} == {"aios", "aios-console-read"}
    cluster_bindings = [d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert sorted(cluster_bindings) == ["aios-cluster", "aios-console"], (
        "cluster-wide only what exists cluster-wide (the console: token and access reviews)"
    )
    console = find(docs, "Deployment", "aios-console")["spec"]["template"]["spec"]
    assert {"name": "AIOS_CONSOLE_NAMESPACES", "value": "city-a,city-b"} in (
        console["containers"][0]["env"]
    )
    leases = [d for d in docs if d["kind"] == "Role" and "leader" in d["metadata"]["name"]]
    assert [r["metadata"]["namespace"] for r in leases] == [NAMESPACE], "one Lease per release"
    args = container(docs)["args"]
    assert "--namespace=city-a" in args and "--namespace=city-b" in args


def test_without_the_webhook_nothing_of_it_is_rendered() -> None:
    docs = manifests(render("webhook.enabled=false"))
    kinds = [d["kind"] for d in docs]
    assert "ValidatingWebhookConfiguration" not in kinds
    assert not [d for d in docs if d["kind"] == "Secret" and "webhook" in d["metadata"]["name"]]
    assert not [k for k in env(docs) if k.startswith("AIOS_WEBHOOK")]
    held = {(g, r) for g, r, _ in permissions(docs)}
    assert ("admissionregistration.k8s.io", "validatingwebhookconfigurations") not in held


def test_kafka_security_settings_reach_the_operator_through_a_secret() -> None:
    config = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}
    docs = manifests(render(values={"kafka": {"bootstrap": "k1:9093,k2:9093", "config": config}}))
    secret = find(docs, "Secret", "aios-kafka")
    assert json.loads(secret["stringData"]["config.json"]) == config
    variables = env(docs)
    assert variables["AIOS_KAFKA_CONFIG"] == {
        "secretKeyRef": {"name": "aios-kafka", "key": "config.json"}
    }
    assert variables["AIOS_KAFKA_BOOTSTRAP"] == "k1:9093,k2:9093"
    mine = manifests(render("kafka.existingSecret=city-kafka"))
    assert not [d for d in mine if d["kind"] == "Secret" and d["metadata"]["name"] == "aios-kafka"]
    assert env(mine)["AIOS_KAFKA_CONFIG"]["secretKeyRef"]["name"] == "city-kafka"


def test_a_changed_kafka_configuration_rolls_the_operator() -> None:
    def checksum(text: str) -> str:
        annotations = find(manifests(text), "Deployment", "aios")["spec"]["template"]["metadata"]
        return str(annotations["annotations"]["checksum/kafka"])

    assert checksum(render()) == checksum(render())
    assert checksum(render()) != checksum(render("kafka.config.security\\.protocol=SSL"))


@pytest.mark.parametrize(
    "bad",
    [
        "operator.replica=2",  # a typo
        "webhook.failurePolicy=Maybe",
        "kafka.bootstrap=kafka",  # no port
        "opa.url=opa:8181",  # no scheme
        "site.name=City_A",  # not a label value
        "operator.watchNamespaces={Not-A-Namespace}",
        "dataPlane.nodeselector.pool=gpu",  # a typo
        "dataPlane.modelServers.tolerations=none",
        "operator.statusRefreshSeconds=0",
    ],
)
def test_the_schema_rejects_bad_values(bad: str) -> None:
    result = helm("template", "aios", str(CHART), "--set", bad)
    assert result.returncode != 0 and "values don't meet the specifications" in result.stderr, bad


def test_data_plane_values_reach_the_operator_and_default_to_its_own_defaults(
    default: list[dict[str, Any]],
) -> None:
    """The chart shows the operator's defaults (a test keeps them equal) and passes
    dataPlane on whole, in the shape the operator reads."""
    from aios.operator.settings import DataPlane

    assert DataPlane.model_validate_json(env(default)["AIOS_DATA_PLANE"]) == DataPlane()
    gpu = {"modelServers": {"nodeSelector": {"accelerator": "l4"}}, "priorityClassName": "city"}
    docs = manifests(render(values={"dataPlane": gpu}))
    placed = DataPlane.model_validate_json(env(docs)["AIOS_DATA_PLANE"])
    assert placed.model_server_placement().pod_fields() == {
        "nodeSelector": {"accelerator": "l4"},
        "priorityClassName": "city",
    }
    assert placed.resources == DataPlane().resources, "values merge with the chart's defaults"


def test_the_operators_intervals_default_to_its_own_and_follow_the_values(
    default: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aios.operator.settings import OperatorSettings

    def read(docs: list[dict[str, Any]]) -> OperatorSettings:
        for name, value in env(docs).items():
            if isinstance(value, str):
                monkeypatch.setenv(name, value)
        return OperatorSettings.from_env()

    chart, own = read(default), OperatorSettings(kafka_bootstrap="", temporal_address="")
    assert chart.policy_audit_interval == own.policy_audit_interval
    assert chart.status_refresh_interval == own.status_refresh_interval
    assert read(manifests(render("operator.statusRefreshSeconds=5"))).status_refresh_interval == 5


def built(name: str, repository: str, tag: str) -> BuiltImage:
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    return BuiltImage(name, f"{repository}:{tag}", digest, Path(f"/cache/{name}.tar"), 1, 2)


def test_the_local_site_values_pin_every_image_by_digest() -> None:
    """The local site installs the images built here: pods name them by digest, so what runs
    is exactly what was built, whatever a tag points at."""
    endpoints = Endpoints(
        kafka_bootstrap="10.251.1.2:9092",
        temporal_address="10.251.1.2:7233",
        opa_url="http://10.251.1.2:8181",
        mqtt_url="mqtt://10.251.1.2:1883",
    )
    images = {
        "aios": built("aios", "ghcr.io/aios-dev/aios", "0.1.0"),
        "aios-edge": built("aios-edge", "ghcr.io/aios-dev/aios-edge", "0.1.0"),
        "tritonserver": built("tritonserver", "ghcr.io/aios-dev/tritonserver", "2.51.0"),
    }
    docs = manifests(render(values=local_site_values(endpoints, images)))
    variables = env(docs)
    aios = f"ghcr.io/aios-dev/aios@{images['aios'].digest}"
    assert container(docs)["image"] == variables["AIOS_IMAGE"] == aios
    assert (
        variables["AIOS_EDGE_IMAGE"] == f"ghcr.io/aios-dev/aios-edge@{images['aios-edge'].digest}"
    )
    assert variables["AIOS_TRITON_IMAGE"].endswith("@" + images["tritonserver"].digest)
    assert variables["AIOS_WEBHOOK_SERVICE"] == "aios-system/aios", "through the Service"
    assert variables["AIOS_KAFKA_BOOTSTRAP"] == "10.251.1.2:9092"
    assert variables["AIOS_MODEL_MIRROR"] == str(MODEL_MIRROR), "the node's copy of the buckets"


def test_without_a_digest_images_follow_the_tag() -> None:
    variables = env(manifests(render("edgeImage.tag=1.2.3")))
    assert variables["AIOS_IMAGE"] == "ghcr.io/aios-dev/aios:0.1.0"
    assert variables["AIOS_EDGE_IMAGE"] == "ghcr.io/aios-dev/aios-edge:1.2.3"
    assert variables["AIOS_TRITON_IMAGE"] == "nvcr.io/nvidia/tritonserver:24.10-py3"


SERVING_RUNTIME = "serving.kserve.io/v1alpha1/ClusterServingRuntime"


def test_on_a_cluster_with_kserve_the_runtimes_run_the_images_of_raw_mode() -> None:
    """ModelDeployments on KServe (``SERVING_RUNTIMES``) run what raw mode runs, on its ports."""
    docs = manifests(render(api_versions=(SERVING_RUNTIME,)))
    variables = env(docs)
    for runtime, model_format in SERVING_RUNTIMES.values():
        found = find(docs, "ClusterServingRuntime", runtime)["spec"]
        assert found["supportedModelFormats"][0]["name"] == model_format
        (server,) = found["containers"]
        ports = {p["name"]: p["containerPort"] for p in server["ports"]}
        assert (ports["http"], ports["grpc"]) == (HTTP_PORT, GRPC_PORT)
        assert server["ports"][0]["name"] == "http", "KServe's Service sends port 80 to the first"
        assert server["lifecycle"]["preStop"]["sleep"]["seconds"] == DRAIN_SECONDS
        image = (
            variables["AIOS_TRITON_IMAGE"] if model_format == "triton" else container(docs)["image"]
        )
        assert server["image"] == image
    assert "ClusterServingRuntime" not in {d["kind"] for d in manifests(render())}
    off = render("kserve.servingRuntimes=false", api_versions=(SERVING_RUNTIME,))
    assert "ClusterServingRuntime" not in {d["kind"] for d in manifests(off)}


def test_replicas_trust_each_other_through_the_charts_webhook_ca(
    default: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Each replica issues its own serving certificate under the Secret's CA, so the
    caBundle any replica writes verifies whichever replica the Service picks."""
    import base64
    import datetime

    secret = find(default, "Secret", "aios-webhook-ca")
    assert secret["type"] == "kubernetes.io/tls"
    ca = load_ca(*(base64.b64decode(secret["data"][k]) for k in ("tls.crt", "tls.key")))
    now = datetime.datetime.now(datetime.UTC)
    replicas = [
        WebhookCertificates(tmp_path / str(i), ["aios.aios-system.svc"], 86400, ca=ca)
        for i in range(2)
    ]
    for replica in replicas:
        replica.ensure(now)
    bundles = {r.bundle_path.read_bytes() for r in replicas}
    assert len(bundles) == 1, "one bundle for every replica"
    (authority,) = x509.load_pem_x509_certificates(bundles.pop())
    for replica in replicas:
        serving = x509.load_pem_x509_certificate(replica.cert_path.read_bytes())
        serving.verify_directly_issued_by(authority)
    later = replicas[0].ensure(now + datetime.timedelta(days=3650))
    assert not later.ca, "a shared CA is never replaced by one replica"


def test_a_ca_whose_key_does_not_match_is_refused(default: list[dict[str, Any]]) -> None:
    import base64

    other = manifests(render())
    first = find(default, "Secret", "aios-webhook-ca")["data"]
    second = find(other, "Secret", "aios-webhook-ca")["data"]
    with pytest.raises(ValueError, match="does not match"):
        load_ca(base64.b64decode(first["tls.crt"]), base64.b64decode(second["tls.key"]))


METRIC = re.compile(r"\b(aios_[a-z0-9_]+)")


def defined_metrics() -> set[str]:
    """Every aios_* metric name written in the code."""
    names: set[str] = set()
    for folder in ("operator", "runner", "edge-agent", "connectors", "workflows"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r"[\"'](aios_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def test_dashboards_plot_metrics_the_code_exposes() -> None:
    known = defined_metrics()
    assert "aios_operator_reconcile_duration_seconds" in known
    dashboards = sorted((CHART / "dashboards").glob("*.json"))
    assert [d.stem for d in dashboards] == ["data-path", "edge-fleet", "operator"]
    for path in dashboards:
        board = json.loads(path.read_text())
        assert board["uid"] and board["panels"]
        for panel in board["panels"]:
            assert panel["targets"], f"{path.name}: {panel['title']} plots nothing"
            for target in panel["targets"]:
                for used in METRIC.findall(target["expr"]):
                    base = re.sub(r"_(bucket|sum|count|total)$", "", used)
                    assert used in known or base in known or f"{base}_total" in known, (
                        f"{path.name}: {panel['title']} uses {used}, which no code exposes"
                    )


def test_the_chart_ships_exactly_the_generated_crds() -> None:
    names = set()
    for path in (CHART / "crds").glob("*.yaml"):
        names |= {d["metadata"]["name"] for d in yaml.safe_load_all(path.read_text()) if d}
    assert names == {f"{model.crd.plural}.aios.dev" for model in CRD_KINDS}, (
        "no kopf peering CRDs: replicas elect their leader with a Lease"
    )


def test_only_the_operator_mounts_the_audit_signing_key_and_checkpoints_one_configmap(
    default: list[dict[str, Any]],
) -> None:
    """The key is an Ed25519 key the chart generates (or the user's Secret); the operator
    reads it from a mount, and may patch only the checkpoints' ConfigMap in its namespace."""
    secret = find(default, "Secret", "aios-audit-signing")
    pem = base64.b64decode(secret["data"]["private.pem"])
    assert isinstance(serialization.load_pem_private_key(pem, None), Ed25519PrivateKey)
    pod = find(default, "Deployment", "aios")["spec"]["template"]["spec"]
    (volume,) = [
        v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "aios-audit-signing"
    ]
    (mount,) = [m for m in container(default)["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert env(default)["AIOS_AUDIT_SIGNING_KEY"] == f"{mount['mountPath']}/private.pem"
    role = find(default, "Role", "aios-audit-checkpoints")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert {
        "resources": ["configmaps"],
        "apiGroups": [""],
        "resourceNames": [CONFIGMAP],
        "verbs": ["patch"],
    } in role["rules"]
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"create", "patch"}

    mine = manifests(render("audit.signingKey.existingSecret=city-audit-key"))
    assert not [d for d in mine if d["kind"] == "Secret" and "audit" in d["metadata"]["name"]]
    volumes = find(mine, "Deployment", "aios")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "audit-signing", "secret": {"secretName": "city-audit-key"}} in volumes


def test_the_site_name_reaches_the_operator_and_labels_every_scraped_series() -> None:
    docs = manifests(
        render(
            "site.name=city-b",
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.podMonitor.enabled=true",
        )
    )
    assert env(docs)["AIOS_SITE"] == "city-b"
    assert find(docs, "ServiceMonitor")["spec"]["targetLabels"] == ["aios.dev/site"]
    assert find(docs, "PodMonitor")["spec"]["podTargetLabels"] == ["aios.dev/site"]
    assert find(docs, "Deployment", "aios")["metadata"]["labels"]["aios.dev/site"] == "city-b"
