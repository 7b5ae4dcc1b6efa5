"""An intent's runners scaled by KEDA on Kafka lag, purely: what is rendered with and
without KEDA, the credentials KEDA reads, and what ScalingActive says."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from aios.api import AutomationIntent
from aios.operator.reconcile.automation_intent import render_runner, runner_config
from aios.operator.reconcile.autoscaling import (
    KAFKA_PROTOCOL_VERSION,
    may_have_scaler,
    replicas,
    scaling_condition,
    wants_autoscaler,
)
from aios.operator.reconcile.kafka_access import autoscaler_keys, runner_principal
from aios.operator.settings import KAFKA_CLIENT_SECRET, OperatorSettings

SCRAM = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512"}
OPERATOR = {**SCRAM, "sasl.username": "aios-operator", "sasl.password": "op"}
WITH_USERS = OperatorSettings(
    kafka_bootstrap="kafka:9092",
    temporal_address="temporal:7233",
    kafka_config=json.dumps(OPERATOR),
    kafka_principal_key="the-key",
)
PLAIN = OperatorSettings(kafka_bootstrap="kafka:9092", temporal_address="temporal:7233")


def scaled(
    automation_intent: Callable[..., AutomationIntent], low: int, high: int, **more: Any
) -> AutomationIntent:
    intent = automation_intent("pm25")
    raw = intent.model_dump(by_alias=True, exclude_none=True)
    raw["spec"]["scaling"] = {"minReplicas": low, "maxReplicas": high, **more}
    return AutomationIntent.model_validate(raw)


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in children}


def test_with_keda_a_scaled_object_sets_the_runners_and_their_replicas_are_not_applied(
    automation_intent,
) -> None:
    intent = scaled(automation_intent, 1, 3, lagThreshold=50, scaleDownStabilizationSeconds=10)
    children = by_kind(render_runner(intent, WITH_USERS, ["city.readings"], keda=True))
    runners = children["StatefulSet"]
    assert "replicas" not in runners["spec"], "the autoscaler's field, not the operator's"
    scaler = children["ScaledObject"]
    assert scaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": runners["metadata"]["name"],
    }
    assert (scaler["spec"]["minReplicaCount"], scaler["spec"]["maxReplicaCount"]) == (1, 3)
    behavior = scaler["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {"scaleDown": {"stabilizationWindowSeconds": 10}}
    (trigger,) = scaler["spec"]["triggers"]
    config = runner_config(intent, ["city.readings"])
    assert trigger["type"] == "kafka"
    assert trigger["metadata"] == {
        "bootstrapServers": "kafka:9092",
        "consumerGroup": config.consumer_group,
        "topic": "city.readings",
        "lagThreshold": "50",
        "offsetResetPolicy": "earliest",
        "allowIdleConsumers": "false",
        "version": KAFKA_PROTOCOL_VERSION,
    }
    # KEDA reads the runners' own Kafka user, from the Secret their pods mount.
    auth = children["TriggerAuthentication"]
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    secret = children["Secret"]
    refs = auth["spec"]["secretTargetRef"]
    assert {r["name"] for r in refs} == {secret["metadata"]["name"]}
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    values = {r["parameter"]: data[r["key"]] for r in refs}
    principal = runner_principal(config)
    assert values == {
        "sasl": "scram_sha512",
        "username": principal.user,
        "password": json.loads(data["config.json"])["sasl.password"],
    }
    assert all(
        c["metadata"]["ownerReferences"][0]["kind"] == "AutomationIntent" for c in (auth, scaler)
    )


def test_several_sources_are_scaled_on_the_groups_total_lag(automation_intent) -> None:
    intent = scaled(automation_intent, 1, 4)
    children = by_kind(render_runner(intent, WITH_USERS, ["a", "b"], keda=True))
    (trigger,) = children["ScaledObject"]["spec"]["triggers"]
    assert "topic" not in trigger["metadata"], "KEDA sums every topic the group reads"


def test_a_kafka_without_authentication_needs_no_trigger_authentication(automation_intent) -> None:
    children = by_kind(render_runner(scaled(automation_intent, 1, 2), PLAIN, ["s"], keda=True))
    assert "TriggerAuthentication" not in children
    assert "authenticationRef" not in children["ScaledObject"]["spec"]["triggers"][0]
    # the shared copy of the site's settings carries KEDA's keys as a principal's does
    shared = OperatorSettings(
        kafka_bootstrap="k:9092", temporal_address="t:7233", kafka_config=json.dumps(OPERATOR)
    )
    children = by_kind(render_runner(scaled(automation_intent, 1, 2), shared, ["s"], keda=True))
    auth = children["TriggerAuthentication"]["spec"]["secretTargetRef"]
    assert {r["name"] for r in auth} == {KAFKA_CLIENT_SECRET}
    (secret,) = shared.component_secrets("city")
    assert sorted(secret["data"]) == ["config.json", "password", "sasl", "username"]


def test_without_keda_or_without_bounds_the_operator_sets_the_runners(automation_intent) -> None:
    wanting = scaled(automation_intent, 2, 5)
    children = by_kind(render_runner(wanting, WITH_USERS, ["s"], keda=False))
    assert children["StatefulSet"]["spec"]["replicas"] == 2
    assert "ScaledObject" not in children
    fixed = scaled(automation_intent, 3, 3)
    children = by_kind(render_runner(fixed, WITH_USERS, ["s"], keda=True))
    assert children["StatefulSet"]["spec"]["replicas"] == 3
    assert "ScaledObject" not in children
    paused = scaled(automation_intent, 1, 3)
    paused.spec.mode = "paused"
    children = by_kind(render_runner(paused, WITH_USERS, ["s"], keda=True))
    assert children["StatefulSet"]["spec"]["replicas"] == 0, "paused: no runner, no scaler"
    assert "ScaledObject" not in children
    assert [wants_autoscaler(i) for i in (wanting, fixed, paused)] == [True, False, False]


def test_a_scaler_rendered_before_is_looked_for_until_it_is_gone(automation_intent) -> None:
    fixed = scaled(automation_intent, 3, 3)
    assert not may_have_scaler(fixed, {})
    was_scaled = {
        "conditions": [{"type": "ScalingActive", "status": "True", "reason": "ScaledByKeda"}]
    }
    assert may_have_scaler(fixed, was_scaled), "its ScaledObject must be pruned"
    assert may_have_scaler(scaled(automation_intent, 1, 2), {})


def test_scaling_active_says_who_sets_the_runners(automation_intent) -> None:
    wanting = scaled(automation_intent, 2, 6, lagThreshold=500)
    none = scaling_condition(wanting, False, None, 2)
    assert (none.status, none.reason) == ("False", "NoAutoscaler")
    assert none.message.startswith("2 runner(s), spec.scaling.minReplicas: the cluster has no KEDA")
    waiting = scaling_condition(wanting, True, None, 2)
    assert (waiting.status, waiting.reason) == ("False", "ScalerNotReady")
    refused = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "message": "error getting kafka lag"}
            ]
        }
    }
    broken = scaling_condition(wanting, True, refused, 2)
    assert broken.message.endswith("error getting kafka lag"), "KEDA's own reason"
    taken = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    active = scaling_condition(wanting, True, taken, 4)
    assert (active.status, active.reason) == ("True", "ScaledByKeda")
    assert active.message == (
        "KEDA scales 2 to 6 runner(s), one per 500 readings waiting on the sources; 4 now."
    )
    paused = scaled(automation_intent, 2, 6)
    paused.spec.mode = "paused"
    assert scaling_condition(paused, True, taken, 0).reason == "Paused"


def test_kafka_settings_as_keda_names_them() -> None:
    assert autoscaler_keys({"bootstrap.servers": "k:9092"}) == {}
    assert autoscaler_keys({**OPERATOR, "sasl.mechanism": "PLAIN"})["sasl"] == "plaintext"
    tls = autoscaler_keys({"security.protocol": "SSL", "ssl.ca.pem": "-----BEGIN…"})
    assert tls == {"tls": "enable", "ca": "-----BEGIN…"}


def test_the_runners_counted_are_what_the_statefulset_asks_for() -> None:
    assert replicas(None) is None  # no StatefulSet yet: nothing to report
    assert replicas({"spec": {}}) == 0
    assert replicas({"spec": {"replicas": 3}, "status": {"replicas": 1}}) == 3
