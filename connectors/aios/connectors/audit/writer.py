"""The audit topics, and ``AuditWriter``: what every component records events with."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import (
    KafkaException,
)

from aios.api.base import SITE_ENV
from aios.connectors import kafka
from aios.connectors.audit.records import AuditUnavailable, canonical, event

EVENTS_TOPIC = "aios.audit.events"
LOG_TOPIC = "aios.audit.log"


def events_topic_spec(name: str = EVENTS_TOPIC) -> kafka.TopicSpec:
    """One partition: the order of events is the order of the chain."""
    return kafka.TopicSpec(name, 1, {"cleanup.policy": "delete", "retention.ms": "604800000"})


def log_topic_spec(name: str = LOG_TOPIC) -> kafka.TopicSpec:
    """One partition, kept forever, never compacted: the log is never rewritten."""
    return kafka.TopicSpec(name, 1, {"cleanup.policy": "delete", "retention.ms": "-1"})


class AuditWriter:
    """Records audit events; ``record`` returns once the broker has the event."""

    def __init__(
        self,
        bootstrap: str | None = None,
        topic: str = EVENTS_TOPIC,
        timeout: float = 10.0,
        site: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.site = site if site is not None else os.environ.get(SITE_ENV)
        """Named in every event (the process's ``$AIOS_SITE`` unless given)."""
        self.topic = topic
        self.timeout = timeout
        self._producer: kafka.AcknowledgedProducer | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> kafka.AcknowledgedProducer:
        with self._lock:
            if self._producer is None:
                kafka.ensure_topics(kafka.admin(self.bootstrap), [events_topic_spec(self.topic)])
                self._producer = kafka.AcknowledgedProducer(
                    kafka.producer(
                        self.bootstrap, **{"message.timeout.ms": int(self.timeout * 1000)}
                    )
                )
            return self._producer

    def record(
        self,
        kind: str,
        subject: str,
        details: Mapping[str, Any],
        actor: str | None = None,
        policy_decision_id: str | None = None,
        trace_id: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Store one event durably (acks=all); raises ``AuditUnavailable`` otherwise.
        A repeated ``event_id`` (a retried step) is chained only once."""
        document = event(
            kind, subject, details, actor, policy_decision_id, trace_id, event_id, self.site
        )
        try:
            self._ensure().send(
                self.topic, canonical(document).encode(), document["eventId"].encode(), self.timeout
            )
        except (KafkaException, kafka.NotDelivered) as error:
            raise AuditUnavailable(f"audit event not stored: {error}") from error
        return str(document["eventId"])

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(self.timeout)
