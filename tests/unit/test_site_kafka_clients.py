"""The site's Kafka users as Java clients (Kafka's own tools) and KEDA's view of the
site: the properties a tool reads, and the objects that make the adapter the cluster's
external metrics API."""

from __future__ import annotations

import base64

from aios.stack.kafka_broker import client_settings, java_client_properties
from aios.stack.site.keda import ADAPTER_PORT, ADAPTER_SERVICE, API_SERVICE, registration


def test_a_site_user_as_java_properties() -> None:
    text = java_client_properties(client_settings("admin", "s3cret"))
    properties = dict(line.split("=", 1) for line in text.splitlines() if line)
    assert properties["security.protocol"] == "SASL_PLAINTEXT"
    assert properties["sasl.mechanism"] == "SCRAM-SHA-512"
    assert properties["sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="admin" password="s3cret";'
    )
    assert text.endswith("\n"), "more properties may follow"


def test_the_adapter_is_reached_through_a_service_whose_endpoint_is_the_node() -> None:
    objects = {o["kind"]: o for o in registration("10.251.3.2", b"CA PEM")}
    slice_ = objects["EndpointSlice"]
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == ADAPTER_SERVICE
    assert slice_["endpoints"][0]["addresses"] == ["10.251.3.2"]
    assert slice_["ports"][0]["port"] == ADAPTER_PORT
    service = objects["Service"]
    assert "selector" not in service["spec"], "its one endpoint is the node, not a pod"
    assert service["spec"]["ports"][0]["targetPort"] == ADAPTER_PORT
    api = objects["APIService"]
    assert api["metadata"]["name"] == API_SERVICE
    assert api["spec"]["service"]["name"] == ADAPTER_SERVICE
    assert api["spec"]["service"]["port"] == service["spec"]["ports"][0]["port"]
    assert base64.b64decode(api["spec"]["caBundle"]) == b"CA PEM", "verified, not skipped"
    assert "insecureSkipTLSVerify" not in api["spec"]
