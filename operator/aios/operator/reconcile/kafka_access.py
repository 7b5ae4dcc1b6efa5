"""Who may do what in Kafka, purely: one principal per workload, as Strimzi's KafkaUser
gives one, with ACLs on exactly its topics, consumer group and transactional ids.

- an intent's runner reads its sources and its consumer group, writes its decisions
  (and reads them back, for a replay), dead letters and heartbeats, and owns the
  transactional ids of its pods;
- an edge gateway reads the config topic, writes its heartbeats and its own sink topic,
  in transactions of its own id that commit its forwarded position under a group of its own;
- a namespace's workflow worker writes the audit events, the actions topics of the
  namespace's intents and the topics their Kafka actions name.

A principal's password is derived from the operator's key (HMAC-SHA-256 of the user name),
so rendering its Secret needs no read and the same key always gives the same password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass
from typing import Any, Literal

from aios.api.runner import RunnerConfig
from aios.edge.protocol import CONFIG_TOPIC, STATUS_TOPIC, gateway_key
from aios.operator.reconcile.children import MANAGED_BY, OPERATOR, PART_OF

Resource = Literal["topic", "group", "transactional-id"]
Operation = Literal["read", "write", "describe-configs"]
READ: tuple[Operation, ...] = ("read",)
WRITE: tuple[Operation, ...] = ("write",)
"""Kafka's READ and WRITE imply DESCRIBE: no binding of their own for it."""
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_MIN_ITERATIONS = 4096
CREDENTIALS_KEY = "config.json"
"""The key of a principal's Secret: its librdkafka settings, ``AIOS_KAFKA_CONFIG``."""


@dataclass(frozen=True, order=True)
class Grant:
    """One ACL: ``operation`` allowed on a resource named ``name`` (or every name that
    starts with it, when ``prefixed``)."""

    resource: Resource
    name: str
    operation: Operation
    prefixed: bool = False


@dataclass(frozen=True)
class KafkaPrincipal:
    """A workload's Kafka user, what it may do, and the Secret holding its settings (in the
    workload's namespace)."""

    user: str
    grants: frozenset[Grant]
    secret: str
    namespace: str

    def digest(self) -> str:
        """Changes when its grants do."""
        text = json.dumps([self.user, [astuple(g) for g in sorted(self.grants)]])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _grants(
    resource: Resource, names: Iterable[str], operations: Iterable[Operation]
) -> set[Grant]:
    return {Grant(resource, n, op) for n in names for op in operations}


def runner_principal(config: RunnerConfig) -> KafkaPrincipal:
    intent, topics = config.intent, config.topics
    written = [topics.decisions, topics.dead_letters, config.heartbeat_topic]
    grants = _grants("topic", topics.sources, READ) | _grants("topic", written, WRITE)
    grants |= _grants("topic", [topics.state], (*READ, *WRITE))
    # a rollout's replay gate runs as the runner: it reads the decisions made back, and
    # how long the sources keep their readings
    grants |= _grants("topic", [topics.decisions], READ)
    grants |= _grants("topic", topics.sources, ("describe-configs",))
    grants |= _grants("group", [config.consumer_group], ("read",))
    prefix = config.transactional_id_prefix
    grants |= {Grant("transactional-id", prefix, op, prefixed=True) for op in WRITE}
    return KafkaPrincipal(
        f"aios-runner.{intent.namespace}.{intent.name}",
        frozenset(grants),
        f"{intent.name}-runner-kafka",
        intent.namespace,
    )


def edge_principal(namespace: str, name: str, sink_topic: str) -> KafkaPrincipal:
    key = gateway_key(namespace, name)
    grants = _grants("topic", [CONFIG_TOPIC], READ) | _grants(
        "topic", [STATUS_TOPIC, sink_topic], WRITE
    )
    # its config consumer's group, and the one its forwarder commits its position under,
    # in the transactions of its own id (aios.edge.kafka)
    grants |= _grants("group", [f"aios-edge.{key}", f"aios-edge.{key}.forwarded"], ("read",))
    grants |= _grants("transactional-id", [f"aios-edge.{key}"], WRITE)
    return KafkaPrincipal(
        f"aios-edge.{namespace}.{name}", frozenset(grants), f"{name}-edge-kafka", namespace
    )


def worker_principal(
    namespace: str, action_topics: Iterable[str], audit_topic: str
) -> KafkaPrincipal:
    """The namespace's worker writes its intents' action topics and the audit events (and
    may see that topic's configs: the audit writer checks the topic before its first
    record)."""
    grants = _grants("topic", {audit_topic, *action_topics}, WRITE)
    grants.add(Grant("topic", audit_topic, "describe-configs"))
    return KafkaPrincipal(
        f"aios-worker.{namespace}", frozenset(grants), "aios-worker-kafka", namespace
    )


def password(key: str, principal: KafkaPrincipal) -> str:
    """The principal's password: only the key's holder (the operator) can compute it."""
    mac = hmac.new(key.encode(), principal.user.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def iterations(key: str) -> int:
    """The SCRAM iteration count of every password derived from ``key``: 4096 (the
    minimum) plus a fingerprint of the key, so a user's listed credential tells which key
    set it, and a rotated key is noticed without reading any password back."""
    return SCRAM_MIN_ITERATIONS + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 4096


def uses_scram(settings: Mapping[str, Any]) -> bool:
    """Whether the site's Kafka authenticates users by SCRAM (so the operator can make them)."""
    return str(settings.get("sasl.mechanism", "")).upper() in SCRAM_MECHANISMS


def credentials(base: Mapping[str, Any], principal: KafkaPrincipal, secret: str) -> dict[str, Any]:
    """The principal's librdkafka settings: the site's, with its own user and password."""
    return {**base, "sasl.username": principal.user, "sasl.password": secret}


def credentials_secret(
    namespace: str, principal: KafkaPrincipal, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The Secret only the principal's workload mounts."""
    text = json.dumps(settings, sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": principal.secret,
            "namespace": namespace,
            "labels": {PART_OF: "aios", MANAGED_BY: OPERATOR},
            "annotations": {"aios.dev/kafka-user": principal.user},
        },
        "type": "Opaque",
        "data": secret_data(text),
    }


AUTOSCALER_SASL = {
    "PLAIN": "plaintext",
    "SCRAM-SHA-256": "scram_sha256",
    "SCRAM-SHA-512": "scram_sha512",
}
"""librdkafka's SASL mechanisms as KEDA's Kafka scaler names them."""


def autoscaler_keys(settings: Mapping[str, Any]) -> dict[str, str]:
    """Kafka client settings as the parameters of KEDA's Kafka scaler (``sasl``,
    ``username``, ``password``, ``tls``, ``ca``): a Secret holds each under its own key
    beside the settings, so a TriggerAuthentication can refer to them. Empty for a Kafka
    that asks for neither SASL nor TLS."""
    keys: dict[str, str] = {}
    mechanism = str(settings.get("sasl.mechanism", "")).upper()
    if mechanism in AUTOSCALER_SASL:
        keys["sasl"] = AUTOSCALER_SASL[mechanism]
        keys["username"] = str(settings.get("sasl.username", ""))
        keys["password"] = str(settings.get("sasl.password", ""))
    if str(settings.get("security.protocol", "")).upper() in ("SSL", "SASL_SSL"):
        keys["tls"] = "enable"
        if settings.get("ssl.ca.pem"):
            keys["ca"] = str(settings["ssl.ca.pem"])
    return keys


def secret_data(text: str) -> dict[str, str]:
    """A Kafka client Secret's data: the librdkafka settings ``text`` (``CREDENTIALS_KEY``)
    and, each under its own key, what KEDA's Kafka scaler reads of them."""
    values = {CREDENTIALS_KEY: text, **autoscaler_keys(json.loads(text))}
    return {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
