"""Pure parts of the connectors: topic planning, endpoint resolution, client defaults."""

from __future__ import annotations

import json

import pytest

from aios.connectors.kafka import (
    ExistingTopic,
    TopicSpec,
    client_config,
    consumer_config,
    plan_topics,
    producer_config,
)


def test_missing_topics_are_created_and_matching_ones_left_alone() -> None:
    desired = [
        TopicSpec("a", 3, {"retention.ms": "1000"}),
        TopicSpec("b", 3, {"retention.ms": "5"}),
    ]
    existing = {"b": ExistingTopic("b", 3, {"retention.ms": "5", "segment.ms": "9"})}
    plan = plan_topics(desired, existing)
    assert [t.name for t in plan.create] == ["a"]
    assert not plan.grow and not plan.reconfigure
    assert plan_topics(desired[1:], existing).empty


def test_partitions_grow_but_never_shrink_and_changed_configs_are_set() -> None:
    existing = {
        "a": ExistingTopic("a", 3, {"retention.ms": "1000"}),
        "b": ExistingTopic("b", 6, {}),
    }
    plan = plan_topics([TopicSpec("a", 6, {"retention.ms": "2000"}), TopicSpec("b", 2)], existing)
    assert plan.grow == (("a", 6),)
    assert plan.reconfigure == (("a", {"retention.ms": "2000"}),)
    assert plan.cannot_shrink == (("b", 6, 2),)


def test_client_config_merges_site_security(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_KAFKA_BOOTSTRAP", "k:9092")
    monkeypatch.setenv("AIOS_KAFKA_CONFIG", json.dumps({"security.protocol": "SASL_SSL"}))
    assert client_config()["security.protocol"] == "SASL_SSL"
    assert producer_config()["enable.idempotence"] is True
    assert producer_config()["acks"] == "all"
    assert consumer_config("g")["enable.auto.commit"] is False


def test_client_config_without_bootstrap_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOS_KAFKA_BOOTSTRAP", raising=False)
    with pytest.raises(RuntimeError, match="AIOS_KAFKA_BOOTSTRAP"):
        client_config()
