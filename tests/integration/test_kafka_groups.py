"""Consumer groups and their lag against the real broker: what the operator asks Kafka
about an intent whose runners are not there to report it."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from support import wait_for

from aios.connectors import kafka


def test_a_group_is_listed_once_it_commits_in_a_transaction_and_its_lag_is_counted(site) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    admin = kafka.admin(bootstrap)
    topic, group = f"g-{uuid.uuid4().hex[:8]}", f"aios.groups.{uuid.uuid4().hex[:8]}"
    kafka.ensure_topics(admin, [kafka.TopicSpec(topic, 2, {})])
    wait_for(lambda: topic in kafka.describe_topics(admin, [topic]), timeout=30)
    assert group not in kafka.consumer_groups(admin), "no member and no commit: no group"

    readings = Producer(kafka.producer_config(bootstrap))
    for partition in (0, 1):
        for i in range(10):
            readings.produce(topic, value=str(i).encode(), partition=partition)
    assert readings.flush(30) == 0
    # As a runner does: offsets committed in a transaction, by a group that never joins.
    producer = Producer(kafka.producer_config(bootstrap, **{"transactional.id": group}))
    producer.init_transactions(30)
    member = Consumer(kafka.client_config(bootstrap, **{"group.id": group}))
    try:
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 10)],
            member.consumer_group_metadata(),
            30,
        )
        producer.commit_transaction(30)
    finally:
        member.close()

    assert group in kafka.consumer_groups(admin), "an offset commit makes it one"
    assert kafka.consumer_lag(bootstrap, group, [topic]) == 6, "10 - 4 on 0, 10 - 10 on 1"
    kafka.delete_topics(admin, [topic])
