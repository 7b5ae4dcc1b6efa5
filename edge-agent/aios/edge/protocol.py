"""The Kafka contract between the operator and its edge agents.

* ``aios.edge.config`` (``cleanup.policy=compact``): one record per gateway, key
  ``<namespace>/<name>``, value the :class:`AgentConfig` JSON (camelCase), a tombstone
  (null value) when the ``EdgeGateway`` is deleted. The record goes to partition
  :func:`config_partition` of the key, so an agent on a lamp post reads one partition, not
  every gateway's configuration.
* ``aios.edge.status`` (``cleanup.policy=compact,delete``, one hour): heartbeats, key the
  gateway, value the :class:`Heartbeat` JSON. The operator turns them into the
  ``EdgeGateway``'s status.
* Readings go to ``spec.sink.kafkaTopic``, key the (possibly hashed) sensor id, value the
  :class:`aios.api.events.Reading` JSON, header ``traceparent`` (W3C trace context).

Only pydantic models and pure functions live here, so both sides import the same contract.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from datetime import datetime
from typing import Any

from pydantic import Field

from aios.api.base import ApiModel, Count
from aios.api.edge_gateway import Buffer, EdgeGatewaySpec, FilterStep, Sensor, Sink

CONFIG_TOPIC = "aios.edge.config"
STATUS_TOPIC = "aios.edge.status"
CONFIG_PARTITIONS = 12
STATUS_PARTITIONS = 12
CONFIG_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
STATUS_TOPIC_CONFIG = {"cleanup.policy": "compact,delete", "retention.ms": str(3600 * 1000)}
DEFAULT_HEARTBEAT_SECONDS = 5.0


def gateway_key(namespace: str, name: str) -> str:
    """The Kafka key of a gateway's config record and heartbeats."""
    return f"{namespace}/{name}"


def split_gateway_key(key: str) -> tuple[str, str]:
    """The namespace and name in a ``gateway_key``."""
    namespace, name = key.split("/", 1)
    return namespace, name


def config_partition(key: str, partitions: int) -> int:
    """The partition a gateway's config record lives in: CRC-32 of the key, as librdkafka's
    ``consistent`` partitioner computes it, so an agent knows where to look."""
    return zlib.crc32(key.encode()) % partitions


def spec_digest(spec: EdgeGatewaySpec) -> str:
    """A content digest of the filter-chain configuration (``lineage.filterChain``)."""
    wire = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    canonical = json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


class AgentConfig(ApiModel):
    """What an agent runs: the compiled ``EdgeGateway`` of one generation."""

    gateway: str = Field(description="<namespace>/<name> of the EdgeGateway.")
    generation: int = Field(ge=0, description="metadata.generation it was compiled from.")
    digest: str = Field(description="Content digest of the spec (lineage.filterChain).")
    site: str = Field(description="Site of the gateway.")
    sensors: list[Sensor] = Field(default_factory=list, description="Known sensors.")
    filters: list[FilterStep] = Field(default_factory=list, description="The ordered chain.")
    sink: Sink
    buffer: Buffer
    heartbeat_seconds: float = Field(
        default=DEFAULT_HEARTBEAT_SECONDS, gt=0, description="How often the agent reports."
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class Heartbeat(ApiModel):
    """What an agent reports on the status topic, every ``heartbeatSeconds``."""

    gateway: str
    agent: str = Field(description="Which agent instance (host and process).")
    time: datetime
    heartbeat_seconds: float = Field(gt=0)
    applied_generation: int | None = Field(default=None, ge=0)
    applied_digest: str | None = None
    config_error: str | None = Field(
        default=None, description="Why the latest config record was not applied."
    )
    buffer_bytes: Count = 0
    buffer_capacity_bytes: Count = 0
    buffer_records: Count = Field(default=0, description="Readings waiting to be forwarded.")
    forwarded: Count = 0
    dropped: Count = 0
    quarantined: Count = 0
    reasons: dict[str, int] = Field(
        default_factory=dict, description="Dropped and quarantined readings by reason."
    )
    privacy_budget_remaining: float | None = Field(default=None, ge=0)
    privacy_epsilon_spent: float = Field(default=0, ge=0)
    privacy_sensors_exhausted: Count = Field(
        default=0, description="Sensors out of lifetime privacy budget for the current period."
    )

    @property
    def buffer_fill_ratio(self) -> float:
        if not self.buffer_capacity_bytes:
            return 0.0
        return min(1.0, self.buffer_bytes / self.buffer_capacity_bytes)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


def parse_config(value: bytes | str | dict[str, Any]) -> AgentConfig:
    raw = value if isinstance(value, dict) else json.loads(value)
    return AgentConfig.model_validate(raw)
