"""The acknowledged producer against the real broker: a sender waits for its own record,
not for everything in flight, and learns when its record was not stored."""

from __future__ import annotations

import threading
import uuid

import pytest
from support import wait_for

from aios.connectors import kafka


def test_a_sender_waits_for_its_own_record_only(site) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    stored = f"ack-{uuid.uuid4().hex[:8]}"
    kafka.ensure_topics(kafka.admin(bootstrap), [kafka.TopicSpec(stored, 1)])
    producer = kafka.AcknowledgedProducer(
        kafka.producer(bootstrap, **{"message.timeout.ms": 20000})
    )
    try:
        producer.send(stored, b"first", b"k", 30)  # the topic's metadata is known from here
        # The broker creates no topics on its own: a record for a missing one stays in
        # flight until its timeout, the way one does while a partition has no leader.
        stuck: list[BaseException] = []
        missing = f"missing-{uuid.uuid4().hex[:8]}"

        def send_to_missing() -> None:
            try:
                producer.send(missing, b"lost", b"k", 30)
            except kafka.NotDelivered as error:
                stuck.append(error)

        waiting = threading.Thread(target=send_to_missing)
        waiting.start()
        wait_for(lambda: len(producer.producer) == 1, what="the stuck record in flight")
        producer.send(stored, b"second", b"k", 30)
        assert waiting.is_alive(), "the second send waited for the stuck record"
        # its delivery report is counted until the report thread has served it
        wait_for(lambda: len(producer.producer) == 1, what="only the stuck record in flight")
        waiting.join(60)
        assert len(stuck) == 1, "a record never stored must raise NotDelivered"
    finally:
        producer.close(10)

    consumer = kafka.consumer(
        f"ack-{uuid.uuid4().hex[:8]}", bootstrap, **{"auto.offset.reset": "earliest"}
    )
    consumer.subscribe([stored])
    values = []
    try:
        while len(values) < 2:
            message = consumer.poll(30)
            assert message is not None, f"only {values} stored"
            assert message.error() is None, message.error()
            values.append(message.value())
    finally:
        consumer.close()
    assert values == [b"first", b"second"]


def test_sending_to_no_broker_fails_in_time() -> None:
    producer = kafka.AcknowledgedProducer(
        kafka.producer("127.0.0.1:1", **{"message.timeout.ms": 1000})
    )
    try:
        with pytest.raises(kafka.NotDelivered):
            producer.send("anything", b"v", b"k", 30)
    finally:
        producer.close(1)
