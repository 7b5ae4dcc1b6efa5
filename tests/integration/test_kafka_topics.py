"""Topic reconciliation against the real broker."""

from __future__ import annotations

import uuid

from support import wait_for

from aios.connectors import kafka


def test_topics_are_created_grown_reconfigured_and_deleted(site) -> None:
    client = kafka.admin(site.endpoints.kafka_bootstrap)
    name = f"t-{uuid.uuid4().hex[:8]}"
    first = kafka.ensure_topics(client, [kafka.TopicSpec(name, 2, {"retention.ms": "3600000"})])
    assert [t.name for t in first.create] == [name]
    # Metadata propagates after CreateTopics returns: the plan is made from what is visible.
    wait_for(lambda: name in kafka.describe_topics(client, [name]), timeout=30)
    assert kafka.ensure_topics(
        client, [kafka.TopicSpec(name, 2, {"retention.ms": "3600000"})]
    ).empty

    changed = kafka.ensure_topics(client, [kafka.TopicSpec(name, 4, {"retention.ms": "7200000"})])
    assert changed.grow == ((name, 4),)

    def described() -> tuple[int, str]:
        existing = kafka.describe_topics(client, [name])[name]
        return existing.partitions, existing.config["retention.ms"]

    # (changes, like creations, become visible after the admin call returns)
    wait_for(lambda: described() == (4, "7200000"), 30, what=lambda: f"{described()}")

    kafka.delete_topics(client, [name])
    kafka.delete_topics(client, [name])  # deleting twice is fine
    wait_for(lambda: name not in kafka.describe_topics(client, [name]), timeout=30)
