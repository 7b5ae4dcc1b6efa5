"""Bad input at the gateway's front door: each kind rejected with its reason, neighbours kept."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from aios.api.edge_gateway import KNOWN_METRICS
from aios.edge.columns import Chunk, NameTable, metric_table
from aios.edge.parse import parse_payload

NOW = 1_780_000_000.0
GOOD = {"sensorId": "aq-1", "time": "2026-05-29T08:00:00Z", "metrics": {"pm25": 12.5}}


def reading(**changes: object) -> dict:
    return {**GOOD, **changes}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b'{"sensorId": "aq-1", "time": ', "malformed_json"),
        (b"\xff\xfe not json", "malformed_json"),
        (json.dumps(reading(metrics={"pm25": float("nan")})).encode(), "non_finite"),
        (json.dumps(reading(metrics={"pm25": float("inf")})).encode(), "non_finite"),
        (b'{"sensorId": "aq-1", "time": 1780000000, "metrics": {"pm25": -Infinity}}', "non_finite"),
        (json.dumps(reading(units={"pm25": "degC"})).encode(), "wrong_unit"),
        (json.dumps(reading(time="2026-05-29T08:00:00")).encode(), "invalid_time"),
        (json.dumps(reading(sensorId="bad id with spaces")).encode(), "invalid_sensor_id"),
        (json.dumps(reading(metrics={"radon": 3})).encode(), "unknown_metric"),
        (json.dumps(reading(metrics={"pm25": "high"})).encode(), "invalid_metrics"),
        (json.dumps(reading(lat=123.0)).encode(), "invalid_location"),
        (b"[1, 2]", "not_an_object"),
    ],
)
def test_each_bad_reading_is_rejected_with_its_reason(bad: bytes, reason: str) -> None:
    chunk, rejected = parse_payload(bad, NOW)
    assert len(chunk) == 0
    assert rejected and {r.reason for r in rejected} == {reason}
    assert all(r.raw for r in rejected)


def test_an_oversized_payload_is_rejected_before_parsing() -> None:
    payload = json.dumps([GOOD] * 100).encode()
    chunk, rejected = parse_payload(payload, NOW, max_bytes=len(payload) - 1)
    assert len(chunk) == 0
    assert [r.reason for r in rejected] == ["oversized"]


def test_good_readings_around_bad_ones_go_through() -> None:
    batch = [
        reading(sensorId="a"),
        reading(sensorId="b", metrics={"pm25": float("nan")}),
        reading(sensorId="c", units={"pm25": "K"}),
        reading(sensorId="d", time=1780000000123),
    ]
    chunk, rejected = parse_payload(json.dumps(batch).encode(), NOW)
    assert chunk.ids == ["a", "d"]
    assert sorted(r.reason for r in rejected) == ["non_finite", "wrong_unit"]
    assert chunk.time[1] == pytest.approx(1780000000.123)


def test_units_are_converted_to_the_contract() -> None:
    payload = reading(
        metrics={"temperature": 68.0, "no2": 10.0, "pm10": 0.02, "humidity": 40},
        units={"temperature": "°F", "no2": "ppb", "pm10": "mg/m3", "humidity": "%RH"},
    )
    chunk, rejected = parse_payload(json.dumps(payload).encode(), NOW)
    assert not rejected
    values = dict(zip(chunk.columns, chunk.values[0], strict=True))
    assert values["temperature"] == pytest.approx(20.0)
    assert values["no2"] == pytest.approx(10 * 46.0055 / 24.45)
    assert values["pm10"] == pytest.approx(20.0)
    assert values["humidity"] == 40
    assert "pm25" not in values


def test_extra_fields_never_reach_the_columns_and_chunks_round_trip() -> None:
    payload = reading(ownerEmail="someone@example.org", lat=52.5, lon=13.4)
    chunk, _ = parse_payload(json.dumps(payload).encode(), NOW)
    decoded = Chunk.decode(chunk.encode())
    assert decoded.ids == ["aq-1"]
    assert b"example.org" not in chunk.encode()
    np.testing.assert_array_equal(decoded.values, chunk.values)
    assert decoded.lat[0] == 52.5 and decoded.recv[0] == NOW
    assert decoded.trace.tobytes() == chunk.trace.tobytes()


def test_a_declared_metric_is_accepted_as_sent_and_an_undeclared_one_rejected() -> None:
    accepted = {"pm25", "no2_raw"}
    payload = [
        reading(metrics={"no2_raw": 1421.0, "pm25": 9.0}),
        reading(sensorId="aq-2", metrics={"co_raw": 1.0}),
        reading(sensorId="aq-3", metrics={"no2_raw": 5.0}, units={"no2_raw": "ppb"}),
    ]
    chunk, rejected = parse_payload(json.dumps(payload).encode(), NOW, accepted=accepted)
    assert chunk.ids == ["aq-1"]
    assert dict(zip(chunk.columns, chunk.values[0], strict=True)) == {
        "no2_raw": 1421.0,
        "pm25": 9.0,
    }
    assert [(r.reason, r.detail) for r in rejected] == [
        ("unknown_metric", "unknown metric 'co_raw'"),
        ("wrong_unit", "no2_raw cannot be given in 'ppb'"),
    ]


def test_chunks_name_their_columns_and_land_in_the_agents_metric_table() -> None:
    first, _ = parse_payload(
        json.dumps(reading(metrics={"no2_raw": 7.0})).encode(), NOW, 1 << 20, {"no2_raw"}
    )
    second, _ = parse_payload(
        json.dumps(reading(metrics={"pm25": 3.0, "rh_raw": 1.0})).encode(),
        NOW,
        1 << 20,
        {"pm25", "rh_raw"},
    )
    merged = Chunk.decode(Chunk.concat([first, second]).encode())
    assert merged.columns == ("no2_raw", "pm25", "rh_raw")
    metrics = metric_table(["rh_raw"])
    batch = merged.to_batch(NameTable(), metrics, 0)
    assert metrics.ids == [*KNOWN_METRICS, "rh_raw", "no2_raw"]  # learnt once, kept after
    got = [dict(zip(metrics.ids, row, strict=True)) for row in batch.values]
    assert {k: v for k, v in got[0].items() if not math.isnan(v)} == {"no2_raw": 7.0}
    assert {k: v for k, v in got[1].items() if not math.isnan(v)} == {"pm25": 3.0, "rh_raw": 1.0}


def test_a_chunk_journaled_before_metrics_were_open_reads_as_the_known_metrics() -> None:
    """A gateway upgraded with readings still in its journal loses none of them."""
    values = np.arange(6.0)[None, :]
    rows = np.zeros(
        1,
        dtype=[
            ("time", "<f8"),
            ("values", "<f8", (6,)),
            ("lat", "<f8"),
            ("lon", "<f8"),
            ("recv", "<f8"),
            ("trace", "V16"),
        ],
    )
    rows["time"], rows["values"], rows["recv"] = NOW, values, NOW
    old = struct.pack("<II", 1, 4) + b"aq-1" + rows.tobytes()
    chunk = Chunk.decode(old)
    assert chunk.ids == ["aq-1"] and chunk.columns == KNOWN_METRICS
    np.testing.assert_array_equal(chunk.values, values)
