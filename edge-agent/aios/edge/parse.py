"""Sensor payloads (MQTT, HTTP) → a chunk of readings and, for the rest, a reason.

A payload is one JSON reading or a JSON array of them::

    {"sensorId": "aq-d7-001", "time": "2026-05-01T08:00:00Z",
     "metrics": {"pm25": 12.5, "temperature": 61.2}, "units": {"temperature": "F"},
     "lat": 52.5163, "lon": 13.3777}

``time`` is RFC 3339 (with an offset) or epoch seconds or milliseconds. A metric is
accepted when the gateway knows its name (``accepted``: the known metrics and those its
sensors declare). The known metrics' values are converted to the units the ``Reading``
contract uses (µg/m³, °C, %); a unit that cannot be converted, or a unit given for another
metric (forwarded as sent), is a ``wrong_unit``. Any other field is ignored and never
forwarded. One bad reading never takes its neighbours down: each gets its own verdict.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from aios.api.edge_gateway import KNOWN_METRICS
from aios.edge.columns import Chunk, new_trace_ids

MAX_PAYLOAD_BYTES = 256 * 1024
SENSOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_CONCENTRATION = ("ug/m3", "µg/m3", "µg/m³", "ug/m^3", "ugm3")
_IDENTITY: Callable[[float], float] = lambda v: v  # noqa: E731


def _units() -> dict[str, dict[str, Callable[[float], float]]]:
    """metric → accepted unit (lower case) → conversion to the contract's unit."""
    mass = {u: _IDENTITY for u in _CONCENTRATION} | {"mg/m3": lambda v: v * 1000.0}
    # ppb → µg/m³ at 25 °C and 1 atm: molar mass / 24.45
    gas = {"no2": 46.0055 / 24.45, "o3": 47.9982 / 24.45}
    table: dict[str, dict[str, Callable[[float], float]]] = {"pm25": mass, "pm10": mass}
    for metric, factor in gas.items():
        table[metric] = mass | {
            "ppb": lambda v, f=factor: v * f,
            "ppm": lambda v, f=factor: v * f * 1000.0,
        }
    table["temperature"] = {
        **{u: _IDENTITY for u in ("c", "°c", "degc", "celsius")},
        **{u: (lambda v: (v - 32.0) * 5.0 / 9.0) for u in ("f", "°f", "degf", "fahrenheit")},
        "k": lambda v: v - 273.15,
    }
    table["humidity"] = {u: _IDENTITY for u in ("%", "%rh", "percent", "rh")}
    return table


UNITS = _units()


@dataclass(frozen=True)
class Rejected:
    """A reading (or a whole payload) that was not accepted, and why."""

    reason: str
    detail: str
    raw: str


class ReadingError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def parse_time(value: Any) -> float:
    """RFC 3339 with an offset, or epoch seconds / milliseconds → epoch seconds."""
    if isinstance(value, bool):
        raise ReadingError("invalid_time", "time must be a string or a number")
    if isinstance(value, int | float):
        seconds = float(value) / 1000.0 if abs(value) > 1e11 else float(value)
        if not math.isfinite(seconds):
            raise ReadingError("invalid_time", "time is not finite")
        return seconds
    if not isinstance(value, str):
        raise ReadingError("invalid_time", "time must be a string or a number")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise ReadingError("invalid_time", f"time {value[:40]!r} is not RFC 3339") from error
    if parsed.tzinfo is None:
        raise ReadingError("invalid_time", "time needs a UTC offset")
    return parsed.timestamp()


Row = tuple[str, float, dict[str, float], float, float]


def parse_reading(item: Any, accepted: Container[str] = KNOWN_METRICS) -> Row:
    """One JSON object → (sensor id, time, value per metric, lat, lon)."""
    if not isinstance(item, Mapping):
        raise ReadingError("not_an_object", "a reading must be a JSON object")
    sensor = item.get("sensorId")
    if not isinstance(sensor, str) or not SENSOR_ID.match(sensor):
        raise ReadingError("invalid_sensor_id", f"sensorId {str(sensor)[:40]!r} is not valid")
    if "time" not in item:
        raise ReadingError("invalid_time", "time is missing")
    time = parse_time(item["time"])
    metrics = item.get("metrics")
    if not isinstance(metrics, Mapping) or not metrics:
        raise ReadingError("invalid_metrics", "metrics must be a non-empty object")
    units = item.get("units") or {}
    if not isinstance(units, Mapping):
        raise ReadingError("wrong_unit", "units must be an object")
    values = {}
    for name, value in metrics.items():
        if name not in accepted:
            raise ReadingError("unknown_metric", f"unknown metric {str(name)[:40]!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReadingError("invalid_metrics", f"{name} is not a number")
        if not math.isfinite(value):
            raise ReadingError("non_finite", f"{name} is {value}")
        unit = units.get(name)
        if unit is not None:
            convert = UNITS.get(name, {}).get(str(unit).strip().lower())
            if convert is None:
                raise ReadingError("wrong_unit", f"{name} cannot be given in {str(unit)[:20]!r}")
            value = convert(float(value))
        values[name] = float(value)
    lat, lon = _coordinate(item, "lat", 90.0), _coordinate(item, "lon", 180.0)
    return sensor, time, values, lat, lon


def _coordinate(item: Mapping[str, Any], name: str, bound: float) -> float:
    value = item.get(name)
    if value is None:
        return math.nan
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not -bound <= value <= bound
    ):
        raise ReadingError("invalid_location", f"{name} {str(value)[:20]} is not a coordinate")
    return float(value)


def parse_payload(
    payload: bytes,
    received: float,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    accepted: Container[str] = KNOWN_METRICS,
) -> tuple[Chunk, list[Rejected]]:
    """A payload → the readings accepted, as a chunk, and the rejected ones with reasons;
    ``accepted``: the metric names the gateway knows."""
    if len(payload) > max_bytes:
        return _chunk([], received), [
            Rejected("oversized", f"{len(payload)} bytes > {max_bytes}", _snippet(payload))
        ]
    try:
        document = json.loads(payload)  # NaN and Infinity parse, and are judged per reading
    except (ValueError, UnicodeDecodeError) as error:
        return _chunk([], received), [
            Rejected("malformed_json", str(error)[:200], _snippet(payload))
        ]
    items = document if isinstance(document, list) else [document]
    rows, rejected = [], []
    for item in items:
        try:
            rows.append(parse_reading(item, accepted))
        except ReadingError as error:
            rejected.append(Rejected(error.reason, str(error), _snippet(item)))
    return _chunk(rows, received), rejected


def _chunk(rows: list[Row], received: float) -> Chunk:
    n = len(rows)
    columns: dict[str, int] = {}
    for row in rows:
        for name in row[2]:
            columns.setdefault(name, len(columns))
    values = np.full((n, len(columns)), np.nan)
    for i, row in enumerate(rows):
        for name, value in row[2].items():
            values[i, columns[name]] = value
    return Chunk(
        ids=[r[0] for r in rows],
        columns=tuple(columns),
        time=np.fromiter((r[1] for r in rows), np.float64, n),
        values=values,
        lat=np.fromiter((r[3] for r in rows), np.float64, n),
        lon=np.fromiter((r[4] for r in rows), np.float64, n),
        recv=np.full(n, received),
        trace=new_trace_ids(n),
    )


def _snippet(raw: Any, limit: int = 512) -> str:
    if isinstance(raw, bytes):
        return raw[:limit].decode(errors="replace")
    try:
        return json.dumps(raw)[:limit]
    except (TypeError, ValueError):
        return repr(raw)[:limit]
