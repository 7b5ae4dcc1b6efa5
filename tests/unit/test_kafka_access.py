"""Each workload's Kafka user: exactly its own topics, group and transactional ids, and a
password in a Secret only it mounts."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from aios.api.runner import HEARTBEAT_TOPIC
from aios.connectors.audit import EVENTS_TOPIC
from aios.edge.protocol import CONFIG_TOPIC, STATUS_TOPIC
from aios.operator.reconcile.automation_intent import action_topics, render_runner, runner_config
from aios.operator.reconcile.kafka_access import (
    Grant,
    edge_principal,
    iterations,
    password,
    runner_principal,
    uses_scram,
    worker_principal,
)
from aios.operator.settings import KAFKA_CLIENT_SECRET, OperatorSettings

SCRAM = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512"}
SITE = OperatorSettings(
    kafka_bootstrap="kafka:9092",
    temporal_address="temporal:7233",
    kafka_config=json.dumps({**SCRAM, "sasl.username": "aios-operator", "sasl.password": "op"}),
    kafka_principal_key="the-key",
)


def granted(principal, resource: str, operation: str) -> set[str]:
    return {g.name for g in principal.grants if g.resource == resource and g.operation == operation}


def test_a_runner_reads_only_its_sources_and_writes_only_its_own_topics(automation_intent) -> None:
    config = runner_config(automation_intent("pm25"), ["readings.pm25"])
    runner = runner_principal(config)
    assert runner.user == "aios-runner.city.pm25"
    assert granted(runner, "topic", "read") == {
        "readings.pm25",
        "aios.city.pm25.state",
        "aios.city.pm25.decisions",  # read back by a replay
    }
    assert granted(runner, "topic", "describe-configs") == {"readings.pm25"}
    assert granted(runner, "topic", "write") == {
        "aios.city.pm25.decisions",
        "aios.city.pm25.dead-letters",
        "aios.city.pm25.state",
        HEARTBEAT_TOPIC,
    }
    assert granted(runner, "group", "read") == {config.consumer_group}
    (transactional,) = {g for g in runner.grants if g.resource == "transactional-id"}
    assert transactional == Grant("transactional-id", "aios-runner.city/pm25/", "write", True)
    assert not runner_config(automation_intent("pm25.b"), []).transactional_id_prefix.startswith(
        config.transactional_id_prefix
    ), "no intent's prefix covers another's ids"


def test_a_gateway_reads_its_config_and_writes_only_its_sink_and_heartbeats() -> None:
    gateway = edge_principal("city", "gw-1", "readings.north")
    assert granted(gateway, "topic", "read") == {CONFIG_TOPIC}
    assert granted(gateway, "topic", "write") == {STATUS_TOPIC, "readings.north"}
    assert granted(gateway, "group", "read") == {
        "aios-edge.city/gw-1",
        "aios-edge.city/gw-1.forwarded",
    }
    assert granted(gateway, "transactional-id", "write") == {"aios-edge.city/gw-1"}
    assert gateway.secret == "gw-1-edge-kafka"


def test_the_worker_writes_its_intents_action_topics_and_the_audit_events(
    automation_intent,
) -> None:
    bodies = [
        automation_intent("a").model_dump(by_alias=True),
        automation_intent("b", [{"name": "k", "type": "kafka", "target": "dispatch"}]).model_dump(
            by_alias=True
        ),
    ]
    topics = [t for body in bodies for t in action_topics(body)]
    worker = worker_principal("city", topics, EVENTS_TOPIC)
    assert granted(worker, "topic", "write") == {
        EVENTS_TOPIC,
        "aios.city.a.actions",
        "aios.city.b.actions",
        "dispatch",
    }
    assert not granted(worker, "topic", "read")
    assert worker.digest() != worker_principal("city", topics[:1], EVENTS_TOPIC).digest(), (
        "grants changed"
    )
    assert worker.digest() == worker_principal("city", reversed(topics), EVENTS_TOPIC).digest()


def test_passwords_are_per_user_and_per_key_and_their_iterations_name_the_key() -> None:
    a, b = edge_principal("city", "a", "t"), edge_principal("city", "b", "t")
    assert password("k", a) == password("k", a)
    assert len({password("k", a), password("k", b), password("other", a)}) == 3
    assert iterations("k") == iterations("k") != iterations("other")
    assert all(4096 <= iterations(str(k)) < 8192 for k in range(100)), "Kafka's bounds"


def test_a_runner_mounts_its_own_users_secret_and_rolls_when_the_key_changes(
    automation_intent,
) -> None:
    intent = automation_intent("pm25")
    config = runner_config(intent, ["readings.pm25"])
    children = render_runner(intent, SITE, ["readings.pm25"])
    secret = next(c for c in children if c["kind"] == "Secret")
    settings = json.loads(base64.b64decode(secret["data"]["config.json"]))
    assert settings["sasl.username"] == "aios-runner.city.pm25"
    assert settings["sasl.password"] == password("the-key", runner_principal(config))
    assert settings["sasl.mechanism"] == "SCRAM-SHA-512", "the site's settings are kept"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1", "it goes with the intent"

    def env(site: OperatorSettings) -> dict:
        rendered = render_runner(intent, site, ["readings.pm25"])
        workload = next(c for c in rendered if c["kind"] == "StatefulSet")
        container = workload["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}

    variables = env(SITE)
    assert variables["AIOS_KAFKA_CONFIG"] == {
        "secretKeyRef": {"name": secret["metadata"]["name"], "key": "config.json"}
    }
    rotated = env(replace(SITE, kafka_principal_key="a-new-key"))
    assert rotated["AIOS_KAFKA_CONFIG_DIGEST"] != variables["AIOS_KAFKA_CONFIG_DIGEST"]


@pytest.mark.parametrize(
    ("config", "key", "own"),
    [
        (SCRAM, "k", True),
        (SCRAM, "", False),  # no key: the chart's users are off
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}, "k", False),
        ({}, "k", False),
    ],
)
def test_workloads_get_users_only_on_a_scram_site_with_a_key(
    config: dict, key: str, own: bool
) -> None:
    site = replace(SITE, kafka_config=json.dumps(config), kafka_principal_key=key)
    assert uses_scram(config) == (config == SCRAM)
    assert site.kafka_principals == own
    secrets = site.component_secrets("city", edge_principal("city", "gw", "t"))
    names = [s["metadata"]["name"] for s in secrets]
    assert names == (["gw-edge-kafka"] if own else [KAFKA_CLIENT_SECRET])
