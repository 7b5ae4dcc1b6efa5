"""The records that flow between components on Kafka: the wire contract, as models.

``Reading`` is what an edge agent forwards (key: ``sensorId``; W3C ``traceparent`` in the
headers) and what an intent runner consumes; a record that does not parse goes to the
intent's dead-letter topic with pydantic's message as the reason.
"""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import Field, field_validator

from aios.api.base import ApiModel
from aios.api.edge_gateway import Metric


class ReadingLineage(ApiModel):
    """Where a reading came from, so an action can be traced back to the sensor."""

    gateway: str | None = Field(default=None, description="EdgeGateway name.")
    config_generation: int | None = Field(
        default=None, ge=0, description="EdgeGateway generation whose filter chain produced it."
    )
    filter_chain: str | None = Field(
        default=None, description="Digest of the filter chain configuration that was applied."
    )


class Reading(ApiModel):
    """One sensor reading (or one window aggregate) after the edge filter chain."""

    event_id: str = Field(min_length=1, max_length=128, description="Unique id; dedup key.")
    sensor_id: str = Field(
        min_length=1, max_length=128, description="Device id, or its keyed hash if anonymised."
    )
    time: datetime = Field(description="When it was measured (RFC 3339, with offset).")
    metrics: dict[Metric, float] = Field(
        min_length=1, description="Measured values by metric (µg/m³, °C, %)."
    )
    site: str | None = Field(default=None, description="Site (city district) of the gateway.")
    cell: str | None = Field(
        default=None, description="Generalised location (grid cell id) when anonymised."
    )
    lat: float | None = Field(default=None, ge=-90, le=90, description="Exact latitude.")
    lon: float | None = Field(default=None, ge=-180, le=180, description="Exact longitude.")
    flags: list[str] = Field(
        default_factory=list, description="Edge annotations, e.g. 'anomaly', 'aggregate'."
    )
    lineage: ReadingLineage = Field(
        default_factory=ReadingLineage, description="Edge provenance of this reading."
    )

    @field_validator("metrics")
    @classmethod
    def _finite(cls, values: dict[str, float]) -> dict[str, float]:
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            raise ValueError(f"non-finite values for {', '.join(sorted(bad))}")
        return values

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time needs a UTC offset")
        return value
