"""Each workload is its own Kafka user, and its ACLs hold against the real broker: what
the operator put in a workload's Secret is all the workload has, and it reaches its own
topics and nothing else."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from support import wait_for
from test_intent_e2e import intent

from aios.connectors import kafka
from aios.edge.kafka import FORWARDED_PARTITION
from aios.edge.protocol import CONFIG_TOPIC
from aios.stack.site import Site

DENIED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}


def gateway(name: str, sink: str) -> dict[str, Any]:
    return {
        "apiVersion": "aios.dev/v1alpha1",
        "kind": "EdgeGateway",
        "metadata": {"name": name},
        "spec": {"site": "district-7", "sink": {"kafkaTopic": sink}},
    }


def credentials(kubectl: Any, namespace: str, secret: str) -> dict[str, Any]:
    """The settings the operator gave a workload (it applies the Secret once the user and
    its ACLs exist)."""

    def found() -> dict[str, Any] | None:
        result = kubectl.run("get", "secret", secret, "-n", namespace, "-o", "json")
        if result.returncode != 0:
            return None
        return dict(json.loads(base64.b64decode(json.loads(result.stdout)["data"]["config.json"])))

    settings: dict[str, Any] = wait_for(found, what=f"Secret {namespace}/{secret}")
    return settings


def read(settings: dict[str, Any], bootstrap: str, topic: str, group: str) -> tuple[int, set]:
    """How many records ``topic`` gives this user in ``group`` (at least one expected when
    allowed), and the errors the broker answered instead."""
    records, errors = 0, set()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **settings,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "log_level": 0,
            "error_cb": lambda error: errors.add(error.code()),  # e.g. a refused password
        }
    )
    consumer.subscribe([topic])
    try:
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                errors.add(message.error().code())
                if errors & DENIED:
                    break
            else:
                records += 1
                break
    finally:
        consumer.close()
    return records, errors


def write(settings: dict[str, Any], bootstrap: str, topic: str) -> KafkaError | None:
    """Produce one record as this user; the broker's refusal, or None when it took it."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, **settings, "message.timeout.ms": 20000, "log_level": 0}
    )
    outcome: list[KafkaError | None] = []
    producer.produce(topic, b"x", key=b"k", on_delivery=lambda error, _: outcome.append(error))
    producer.flush(30)
    assert outcome, f"no delivery report for {topic}"
    return outcome[0]


def forward(
    settings: dict[str, Any], bootstrap: str, topic: str, gateway: str
) -> KafkaError | None:
    """What an edge agent's forwarder does, as this user and as ``gateway``: a record and
    the forwarded position in one transaction of the gateway's id; the broker's refusal,
    or None when it took both."""
    client = {"bootstrap.servers": bootstrap, **settings, "log_level": 0}
    producer = Producer({**client, "transactional.id": f"aios-edge.{gateway}"})
    position = Consumer({**client, "group.id": f"aios-edge.{gateway}.forwarded"})
    try:
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(topic, b"x", key=b"k")
        producer.send_offsets_to_transaction(
            [TopicPartition(CONFIG_TOPIC, FORWARDED_PARTITION, 1)],
            position.consumer_group_metadata(),
            30,
        )
        producer.commit_transaction(30)
    except KafkaException as refused:
        return refused.args[0]
    finally:
        position.close()
    return None


def test_each_workload_reaches_its_own_topics_and_no_other(
    operator: str, kubectl: Any, namespace: str, site: Site
) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    unique = uuid.uuid4().hex[:6]
    sinks = {n: f"acl.{unique}.{n}.readings" for n in ("a", "b")}
    for n, sink in sinks.items():
        kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(gateway(f"gw-{n}", sink)))
        paused = intent(f"in-{n}", sink, "http://127.0.0.1:9/", mode="paused")  # no runner pod
        kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(paused))
    runner = credentials(kubectl, namespace, "in-a-runner-kafka")
    edge = credentials(kubectl, namespace, "gw-a-edge-kafka")
    worker = credentials(kubectl, namespace, "aios-worker-kafka")
    assert runner["sasl.username"] == f"aios-runner.{namespace}.in-a"
    assert edge["sasl.username"] == f"aios-edge.{namespace}.gw-a"
    admin = kafka.producer(bootstrap)  # the site's admin (the session's AIOS_KAFKA_CONFIG)
    for sink in sinks.values():
        admin.produce(sink, b'{"pm25": 1}', key=b"s")
    assert admin.flush(30) == 0
    group = f"aios.{namespace}.in-a.runner"
    decisions = f"aios.{namespace}.in-a.decisions"

    # The runner of intent A reads A's readings, not B's, and only in its own group.
    assert read(runner, bootstrap, sinks["a"], group)[0] == 1
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in read(runner, bootstrap, sinks["b"], group)[1]
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in read(runner, bootstrap, sinks["a"], "other")[1]
    assert write(runner, bootstrap, decisions) is None
    assert write(runner, bootstrap, sinks["a"]) is not None, "a runner never writes readings"

    # Gateway A writes its own sink, not B's, and reads no decision.
    assert write(edge, bootstrap, sinks["a"]) is None
    refused = write(edge, bootstrap, sinks["b"])
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert read(edge, bootstrap, decisions, f"aios-edge.{namespace}/gw-a")[0] == 0
    assert (
        KafkaError.TOPIC_AUTHORIZATION_FAILED
        in read(edge, bootstrap, decisions, f"aios-edge.{namespace}/gw-a")[1]
    )
    assert read(edge, bootstrap, CONFIG_TOPIC, f"aios-edge.{namespace}/gw-a")[1] <= {
        KafkaError._PARTITION_EOF
    }, "its config comes from the config topic"

    # Its forwarder's transactions run under its own id, never gateway B's.
    assert forward(edge, bootstrap, sinks["a"], f"{namespace}/gw-a") is None
    refused = forward(edge, bootstrap, sinks["a"], f"{namespace}/gw-b")
    assert refused is not None
    assert refused.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, refused

    # The namespace's worker writes the intents' actions, and reads no reading.
    assert write(worker, bootstrap, f"aios.{namespace}.in-b.actions") is None
    assert write(worker, bootstrap, decisions) is not None
    assert read(worker, bootstrap, sinks["a"], group)[0] == 0

    # The intent is gone: so is its runner's user.
    kubectl("delete", "automationintent", "in-a", "-n", namespace, "--wait=false")
    wait_for(
        lambda: read(runner, bootstrap, sinks["a"], group)[1] - DENIED,
        what=lambda: (
            "the deleted intent's runner refused; the operator's log:\n"
            + kubectl("logs", "-n", operator, "deploy/aios", "-c", "operator", "--tail=40")
        ),
    )
