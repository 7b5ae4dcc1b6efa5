"""The namespace's Temporal worker, as the operator renders it."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

from aios.api.base import SITE_ENV, SITE_LABEL
from aios.connectors.audit import EVENTS_TOPIC
from aios.operator.reconcile.children import OWNER_UID, PART_OF, sited
from aios.operator.reconcile.kafka_access import worker_principal
from aios.operator.reconcile.worker import WORKER, render_worker
from aios.operator.settings import KAFKA_CLIENT_KEY, KAFKA_CLIENT_SECRET, OperatorSettings

SETTINGS = OperatorSettings(kafka_bootstrap="k:9092", temporal_address="t:7233", image="img:1")

WORKER_USER = worker_principal("city", [], EVENTS_TOPIC)


def test_one_worker_per_namespace_on_its_task_queue_with_its_own_account() -> None:
    account, role, binding, deployment = render_worker(WORKER_USER, SETTINGS)
    assert [o["kind"] for o in (account, role, binding, deployment)] == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
    ]
    assert {o["metadata"]["namespace"] for o in (account, role, binding, deployment)} == {"city"}
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["aios-worker"]
    assert container["args"] == ["--task-queue=aios.city", "--metrics-port=9103"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9103}]
    assert container["image"] == "img:1"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AIOS_TEMPORAL_ADDRESS"] == "t:7233"
    assert pod["spec"]["serviceAccountName"] == WORKER
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": WORKER, "namespace": "city"}]
    assert pod["metadata"]["labels"][PART_OF] == "aios"


def test_the_worker_is_shared_so_no_object_owns_it() -> None:
    for obj in render_worker(WORKER_USER, SETTINGS):
        assert "ownerReferences" not in obj["metadata"]
        assert OWNER_UID not in obj["metadata"]["labels"], "pruning one owner must not remove it"


def test_its_role_can_write_modelrollouts_and_events_only_in_the_namespace() -> None:
    role = render_worker(WORKER_USER, SETTINGS)[1]
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "city"
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("modelrollouts", "create"), ("modelrollouts/status", "patch")} <= granted
    assert ("modelrollouts", "delete") in granted, "the oldest beyond the history go"
    assert ("events", "create") in granted
    assert ("modeldeployments", "patch") not in granted, "the spec belongs to the user"
    written = {r for r, v in granted if v in ("patch", "update")}
    assert "modeldeployments/status" not in written, "the operator alone writes it"


def test_kafka_client_settings_reach_the_worker_by_reference_from_a_namespace_secret() -> None:
    config = json.dumps({"security.protocol": "SASL_SSL", "sasl.password": "s3cret"})
    site = replace(SETTINGS, kafka_config=config)
    secret, *_, deployment = render_worker(WORKER_USER, site)
    assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == "city"
    assert base64.b64decode(secret["data"][KAFKA_CLIENT_KEY]).decode() == config
    assert "ownerReferences" not in secret["metadata"], "shared by the namespace's components"
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AIOS_KAFKA_CONFIG"] == {
        "name": "AIOS_KAFKA_CONFIG",
        "valueFrom": {"secretKeyRef": {"name": KAFKA_CLIENT_SECRET, "key": KAFKA_CLIENT_KEY}},
    }
    assert "s3cret" not in json.dumps(deployment), "no password in a Deployment's spec"
    changed = replace(site, kafka_config=json.dumps({"security.protocol": "SSL"}))
    assert changed.component_env() != site.component_env(), "a new value rolls the pods"


def test_without_kafka_client_settings_there_is_no_secret() -> None:
    assert "Secret" not in {o["kind"] for o in render_worker(WORKER_USER, SETTINGS)}
    names = {e["name"] for e in SETTINGS.component_env()}
    assert "AIOS_KAFKA_CONFIG" not in names


def test_every_child_and_the_pods_it_makes_carry_the_site() -> None:
    """The site label goes on the objects and on their pod templates (Prometheus's
    PodMonitor takes it onto every series), and the site reaches each container."""
    settings = replace(SETTINGS, site="city-b")
    children = [sited(c, settings.site) for c in render_worker(WORKER_USER, settings)]
    assert {c["metadata"]["labels"][SITE_LABEL] for c in children} == {"city-b"}
    deployment = children[-1]
    assert deployment["spec"]["template"]["metadata"]["labels"][SITE_LABEL] == "city-b"
    assert SITE_LABEL not in deployment["spec"]["selector"]["matchLabels"]  # selectors stay
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env[SITE_ENV] == "city-b"
