"""EdgeGateway: a site's sensor gateway, its filter chain, Kafka sink and disk buffer."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from aios.api.base import (
    AGE,
    DNS_LABEL,
    ApiModel,
    Count,
    CrdInfo,
    Fraction,
    Invariant,
    KafkaTopic,
    MetricName,
    PrinterColumn,
    Resource,
    ResourceStatus,
    condition_column,
    defaults_to,
    exactly_one_of,
    list_map,
    metrics_not_reserved,
    once_each,
)

KNOWN_METRICS = ("pm25", "pm10", "no2", "o3", "temperature", "humidity")
"""Metrics whose units the edge agent converts (µg/m³, °C, %) and whose physical bounds it
knows; a sensor may declare any other metric, forwarded in the unit it is sent in."""
MAX_METRICS = 64
Aggregate = Literal["mean", "min", "max", "p95", "count"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
MIB = 1 << 20


class Location(ApiModel):
    """WGS 84 position of a sensor."""

    lat: float = Field(ge=-90, le=90, description="Latitude in degrees.")
    lon: float = Field(ge=-180, le=180, description="Longitude in degrees.")


class Sensor(ApiModel):
    """A sensor attached to the gateway."""

    id: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="Device id as the sensor reports it (hashed downstream if anonymised).",
    )
    metrics: list[MetricName] = Field(
        min_length=1,
        max_length=MAX_METRICS,
        description="Quantities the sensor measures: pm25, pm10, no2, o3 (µg/m³), "
        "temperature (°C), humidity (%), converted from the units a reading gives; or any "
        "other name (no2_raw, co_sensor), forwarded in the unit it is sent in.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    location: Location | None = Field(default=None, description="Where the sensor is.")

    invariants: ClassVar[tuple[Invariant, ...]] = (metrics_not_reserved("metrics"),)

    _once_each = field_validator("metrics")(once_each)


class Range(ApiModel):
    """Plausible values of a metric; readings outside are quarantined."""

    min: float = Field(description="Lowest plausible value.")
    max: float = Field(description="Highest plausible value.")

    invariants = (
        Invariant(
            rule="self.min <= self.max",
            message="min must not exceed max",
            check=lambda r: r.min <= r.max,
        ),
    )


class ValidateFilter(ApiModel):
    """Quarantines implausible, future-dated or stale readings."""

    ranges: dict[MetricName, Range] = Field(
        default_factory=dict,
        max_length=MAX_METRICS,
        description="Plausible range per metric (in the unit the metric is forwarded in).",
    )
    max_future_skew_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="How far ahead of the gateway clock a reading may be.",
    )
    max_age_seconds: int = Field(
        default=3600, ge=1, le=604800, description="Readings older than this are dropped."
    )


class DeadbandFilter(ApiModel):
    """Drops readings that changed less than a threshold since the last one forwarded."""

    mode: Literal["absolute", "relative"] = Field(
        default="absolute", description="absolute: in the metric's unit; relative: a fraction."
    )
    threshold: float = Field(gt=0, description="Smallest change that is forwarded.")


class RateLimitFilter(ApiModel):
    """Caps the readings forwarded per sensor."""

    per_sensor_per_second: float = Field(gt=0, description="Most readings per sensor per second.")


class WindowFilter(ApiModel):
    """Replaces raw readings by aggregates over time windows."""

    kind: Literal["tumbling", "hopping"] = Field(
        default="tumbling", description="tumbling: back to back; hopping: overlapping."
    )
    size_seconds: int = Field(ge=1, le=86400, description="Window length.")
    hop_seconds: int | None = Field(
        default=None, ge=1, le=86400, description="Window start interval (hopping only)."
    )
    aggregates: list[Aggregate] = Field(
        default=["mean"], min_length=1, max_length=5, description="Aggregates emitted per window."
    )

    invariants = (
        Invariant(
            rule="self.kind == 'tumbling' ? !has(self.hopSeconds) : "
            "(has(self.hopSeconds) && self.hopSeconds <= self.sizeSeconds)",
            message="hopSeconds is required for hopping windows only, and at most sizeSeconds",
            check=lambda w: (
                w.hop_seconds is None
                if w.kind == "tumbling"
                else w.hop_seconds is not None and w.hop_seconds <= w.size_seconds
            ),
            field_path=".hopSeconds",
        ),
    )


class AnomalyFilter(ApiModel):
    """Flags readings far from an exponentially weighted moving average (z-score)."""

    alpha: float = Field(default=0.1, gt=0, le=1, description="Smoothing factor of the average.")
    z_threshold: float = Field(default=3.0, gt=0, description="z-score from which to flag.")


class AnonymiseFilter(ApiModel):
    """Removes or coarsens what could identify a person or a device."""

    drop_fields: list[str] = Field(
        default_factory=list, max_length=64, description="Reading fields removed."
    )
    hash_device_ids: bool = Field(default=True, description="Replace device ids by a keyed hash.")
    grid_cell_meters: int | None = Field(
        default=None, ge=1, le=100000, description="Snap locations to a grid of this cell size."
    )
    k_anonymity: int | None = Field(
        default=None, ge=2, le=1000, description="Forward a group only once it has k sensors."
    )


class DifferentialPrivacyFilter(ApiModel):
    """Adds Laplace noise to aggregates, within a privacy budget."""

    epsilon: float = Field(gt=0, description="Privacy loss per released value.")
    sensitivity: float = Field(gt=0, description="Largest effect one reading has on a value.")
    budget_per_window: float = Field(gt=0, description="Total epsilon spendable per window.")
    lifetime_budget: float | None = Field(
        default=None,
        gt=0,
        description="Total epsilon per sensor over budgetPeriodSeconds (windows compose: "
        "without it an observer of every window learns without bound). Once spent, the "
        "sensor's noisy values are withheld until the period renews, across agent restarts "
        "and configuration changes.",
    )
    budget_period_seconds: int = Field(
        default=30 * 86400,
        ge=60,
        description="Length of the lifetime budget's period, by the readings' clock "
        "(periods start at multiples of it since the Unix epoch).",
    )

    invariants = (
        Invariant(
            rule="self.epsilon <= self.budgetPerWindow",
            message="epsilon must not exceed budgetPerWindow",
            check=lambda d: d.epsilon <= d.budget_per_window,
        ),
        Invariant(
            rule="!has(self.lifetimeBudget) || self.lifetimeBudget >= self.budgetPerWindow",
            message="lifetimeBudget must be at least budgetPerWindow",
            check=lambda d: d.lifetime_budget is None or d.lifetime_budget >= d.budget_per_window,
        ),
    )


class FilterStep(ApiModel):
    """One step of the filter chain; exactly one filter is set."""

    validate_: ValidateFilter | None = Field(
        default=None, alias="validate", description="Plausibility checks."
    )
    deadband: DeadbandFilter | None = Field(default=None, description="Change threshold.")
    rate_limit: RateLimitFilter | None = Field(default=None, description="Per-sensor rate cap.")
    window: WindowFilter | None = Field(default=None, description="Windowed aggregation.")
    anomaly: AnomalyFilter | None = Field(default=None, description="Anomaly pre-filter.")
    anonymise: AnonymiseFilter | None = Field(default=None, description="Anonymisation.")
    differential_privacy: DifferentialPrivacyFilter | None = Field(
        default=None, description="Differential-privacy noise."
    )

    invariants = (
        exactly_one_of(
            "validate",
            "deadband",
            "rateLimit",
            "window",
            "anomaly",
            "anonymise",
            "differentialPrivacy",
        ),
    )


class Sink(ApiModel):
    """Where the gateway forwards readings."""

    kafka_topic: KafkaTopic = Field(description="Kafka topic receiving the filtered readings.")
    compression: Compression = Field(default="zstd", description="Kafka batch compression.")


class Buffer(ApiModel):
    """The on-disk buffer that keeps readings through network or broker outages."""

    max_bytes: int = Field(
        default=256 * MIB,
        ge=MIB,
        description="Disk space for the buffer, in bytes.",
        json_schema_extra={"format": "int64"},
    )
    overflow_policy: Literal["dropOldest", "rejectNew"] = Field(
        default="dropOldest", description="What gives way when the buffer is full."
    )
    fsync: Literal["always", "interval", "never"] = Field(
        default="interval", description="When appended data is flushed to disk."
    )


class EdgeGatewaySpec(ApiModel):
    """A gateway's sensors, filter chain, sink and buffer."""

    site: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="Site name, e.g. district-7."
    )
    sensors: list[Sensor] = Field(
        default_factory=list,
        max_length=4096,
        description="Sensors attached to this gateway.",
        json_schema_extra=list_map("id"),
    )
    filters: list[FilterStep] = Field(
        default_factory=list, max_length=16, description="Filter chain, applied in order."
    )
    sink: Sink = Field(description="Where filtered readings go.")
    buffer: Buffer = defaults_to(Buffer, "Local disk buffer.")


class EdgeGatewayStatus(ResourceStatus):
    """What the gateway's agents last reported."""

    last_seen: datetime | None = Field(default=None, description="Time of the last heartbeat.")
    simulated_sensors: str | None = Field(
        default=None,
        description="The aios.dev/simulate-sensors annotation the operator's simulated agent"
        " last followed (absent: no simulated agent).",
    )
    applied_generation: int | None = Field(
        default=None, ge=0, description="Config generation the agent runs."
    )
    config_generation: int | None = Field(
        default=None, ge=0, description="Config generation the operator last published."
    )
    buffer_fill_ratio: Fraction | None = Field(
        default=None, description="Share of the disk buffer in use."
    )
    forwarded: Count = Field(default=0, description="Readings forwarded to Kafka.")
    dropped: Count = Field(default=0, description="Readings dropped by filters or overflow.")
    quarantined: Count = Field(default=0, description="Readings quarantined by validation.")
    privacy_budget_remaining: float | None = Field(
        default=None, ge=0, description="Epsilon left in the current window."
    )
    privacy_sensors_exhausted: Count = Field(
        default=0,
        description="Sensors whose lifetime privacy budget is spent for the current period: "
        "their noisy values are withheld until it renews.",
    )


class EdgeGateway(Resource[EdgeGatewaySpec, EdgeGatewayStatus]):
    """A site's sensor gateway: filter chain, Kafka sink and disk buffer."""

    crd = CrdInfo(
        kind="EdgeGateway",
        plural="edgegateways",
        short_names=("egw",),
        printer_columns=(
            PrinterColumn("Site", ".spec.site"),
            condition_column("Connected"),
            PrinterColumn("Config", ".status.appliedGeneration", "integer"),
            PrinterColumn("Buffer", ".status.bufferFillRatio", "number"),
            AGE,
        ),
    )
