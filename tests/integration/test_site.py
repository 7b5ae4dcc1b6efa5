"""The local site's servers answer real requests (no mocks anywhere); the node has its own
tests (``test_node``)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import timedelta

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from temporalio import activity, workflow
from temporalio.worker import Worker

from aios.connectors.temporal import connect as connect_temporal
from aios.stack.site import Site


def test_kafka_round_trips_a_message(site: Site) -> None:
    bootstrap = site.endpoints.kafka_bootstrap
    admin_user = {"bootstrap.servers": bootstrap, **json.loads(site.endpoints.kafka_config)}
    topic = f"site-check-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(admin_user)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    producer = Producer({**admin_user, "enable.idempotence": True})
    producer.produce(topic, key=b"k", value=b"hello")
    assert producer.flush(30) == 0
    consumer = Consumer({**admin_user, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    message = None
    for _ in range(60):
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            break
    consumer.close()
    assert message is not None and message.value() == b"hello"


def test_kafka_refuses_clients_without_a_valid_password(site: Site) -> None:
    """Every listener asks who is there: no credentials, or a wrong password, gets no
    metadata, and the wrong password is told why."""
    bootstrap = site.endpoints.kafka_bootstrap
    anonymous = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    with pytest.raises(KafkaException):
        anonymous.list_topics(timeout=5)
    settings = json.loads(site.endpoints.kafka_config)
    errors: list[str] = []
    wrong = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            **settings,
            "sasl.password": "not-" + settings["sasl.password"],
            "error_cb": lambda error: errors.append(str(error)),
            "log_level": 0,
        }
    )
    with pytest.raises(KafkaException):
        wrong.list_topics(timeout=5)
    for _ in range(20):  # the error callback runs on poll
        if errors:
            break
        wrong.poll(0.5)
    assert any("Authentication failed" in e for e in errors), errors


@activity.defn(name="site_check_double")
async def double(x: int) -> int:
    return 2 * x


@workflow.defn(name="SiteCheck", sandboxed=False)  # this test module imports the world
class SiteCheck:
    @workflow.run
    async def run(self, x: int) -> int:
        return await workflow.execute_activity(
            double, x, start_to_close_timeout=timedelta(seconds=30)
        )


def test_temporal_runs_a_workflow(site: Site) -> None:
    async def scenario() -> int:
        client = await connect_temporal(site.endpoints.temporal_address)
        queue = f"site-check-{uuid.uuid4().hex[:8]}"
        async with Worker(client, task_queue=queue, workflows=[SiteCheck], activities=[double]):
            return await client.execute_workflow(SiteCheck.run, 21, id=queue, task_queue=queue)

    assert asyncio.run(scenario()) == 42


def test_opa_evaluates_a_loaded_policy(site: Site) -> None:
    rego = "package site.check\n\nallow if input.n > 2\n"
    url = site.endpoints.opa_url
    assert httpx.put(f"{url}/v1/policies/site-check", content=rego).status_code == 200
    yes = httpx.post(f"{url}/v1/data/site/check/allow", json={"input": {"n": 3}}).json()
    no = httpx.post(f"{url}/v1/data/site/check/allow", json={"input": {"n": 1}}).json()
    assert yes["result"] is True
    assert "result" not in no


def test_triton_serves_the_v2_protocol(site: Site) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    http = httpclient.InferenceServerClient(site.endpoints.triton_http.removeprefix("http://"))
    assert http.is_server_live() and http.is_server_ready()
    assert http.get_server_metadata()["name"] == "triton"
    grpc = grpcclient.InferenceServerClient(site.endpoints.triton_grpc)
    assert grpc.is_server_ready()
    assert isinstance(np.asarray(http.get_model_repository_index()), np.ndarray)


def test_mosquitto_delivers_a_published_message(site: Site) -> None:
    host, port = site.endpoints.mqtt_url.removeprefix("mqtt://").split(":")
    received = threading.Event()
    payloads: list[bytes] = []

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        payloads.append(message.payload)
        received.set()

    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    subscriber.on_message = on_message
    subscriber.connect(host, int(port))
    subscriber.subscribe("site/check", qos=1)
    subscriber.loop_start()
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.connect(host, int(port))
    publisher.loop_start()
    try:
        for _ in range(20):  # the subscription is asynchronous: publish until it lands
            publisher.publish("site/check", b"ping", qos=1).wait_for_publish(5)
            if received.wait(0.5):
                break
    finally:
        publisher.loop_stop()
        subscriber.loop_stop()
    assert payloads and payloads[0] == b"ping"
