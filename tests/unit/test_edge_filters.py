"""The filter chain on column batches, against straightforward per-reading references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aios.api.edge_gateway import KNOWN_METRICS, FilterStep, Sensor
from aios.api.events import Reading
from aios.edge.columns import AGGREGATES, ANOMALY, Batch, NameTable, metric_table, new_batch, widen
from aios.edge.filters import (
    WINDOW_GRACE_SECONDS,
    Chain,
    Context,
    PrivacyLedger,
    aggregate,
    pseudonym,
)
from aios.edge.records import Lineage, Record, encode

T0 = 1_780_000_020.0  # a multiple of 60
PM25 = KNOWN_METRICS.index("pm25")


def steps(*raw: dict) -> list[FilterStep]:
    return [FilterStep.model_validate(step) for step in raw]


def sensors(*ids: str, lat: float = 52.5163, lon: float = 13.3777) -> list[Sensor]:
    return [
        Sensor.model_validate(
            {"id": i, "metrics": ["pm25", "pm10"], "location": {"lat": lat, "lon": lon}}
        )
        for i in ids
    ]


def batch(table: NameTable, ids: list[str], times: list[float], pm25: list[float]) -> Batch:
    values = np.full((len(ids), len(KNOWN_METRICS)), np.nan)
    values[:, PM25] = pm25
    b = new_batch(table.lookup(ids), np.array(times, float), values)
    b.recv[:] = max(times) if times else T0
    return b


def run(
    chain: Chain, table: NameTable, b: Batch, now: float | None = None
) -> tuple[Batch, Context]:
    ctx = Context(now=now if now is not None else float(b.recv.max()), table=table)
    return chain.process(b, ctx), ctx


def test_validate_quarantines_and_drops_with_reasons() -> None:
    table = NameTable()
    chain = Chain(
        steps({"validate": {"ranges": {"pm25": {"min": 0, "max": 500}}, "maxAgeSeconds": 600}}),
        sensors("a", "b"),
        table,
        b"k",
    )
    b = batch(
        table,
        ["a", "a", "a", "b", "zz", "b", "b"],
        [T0, T0, T0 + 1, T0 + 2, T0, T0 + 500, T0 - 900],
        [10, 10, 11, 900, 5, 7, 7],
    )
    b.recv[:] = T0 + 5
    b.values[1, KNOWN_METRICS.index("o3")] = 3.0  # 'a' does not measure o3
    out, ctx = run(chain, table, b)
    assert ctx.quarantined == {
        "undeclared_metric": 1,
        "out_of_range": 1,
        "unknown_sensor": 1,
        "future_timestamp": 1,
        "stale_timestamp": 1,
    }
    assert [table.ids[s] for s in out.sid] == ["a", "a"]
    assert sum(len(rows) for _, rows in ctx.quarantine) == 5
    again = batch(table, ["a", "a"], [T0 + 1, T0 + 0.5], [11, 12])
    out, ctx = run(chain, table, again)
    assert len(out) == 0
    assert ctx.dropped == {"duplicate": 1, "out_of_order": 1}


def reference_deadband(values: list[float], threshold: float, relative: bool) -> list[bool]:
    kept, last = [], None
    for v in values:
        limit = threshold * abs(last) if relative and last is not None else threshold
        go = last is None or abs(v - last) >= limit
        kept.append(go)
        last = v if go else last
    return kept


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_deadband_matches_the_sequential_definition(mode: str) -> None:
    rng = np.random.default_rng(1)
    series = {s: list(np.round(rng.normal(20, 2, 40), 1)) for s in ("a", "b", "c")}
    threshold = 1.0 if mode == "absolute" else 0.05
    table = NameTable()
    chain = Chain(steps({"deadband": {"mode": mode, "threshold": threshold}}), [], table, b"k")
    ids = [s for s in series for _ in range(40)]
    times = [T0 + i for _ in series for i in range(40)]
    out, ctx = run(chain, table, batch(table, ids, times, [v for s in series.values() for v in s]))
    for sensor, values in series.items():
        kept = reference_deadband(values, threshold, mode == "relative")
        got = out.values[out.sid == table.index[sensor], PM25]
        assert list(got) == [v for v, k in zip(values, kept, strict=True) if k]
    assert ctx.dropped["deadband"] == 120 - len(out)


def test_rate_limit_per_sensor_and_anomalies_pass() -> None:
    table = NameTable()
    chain = Chain(
        steps(
            {"anomaly": {"alpha": 0.2, "zThreshold": 3}},
            {"rateLimit": {"perSensorPerSecond": 1}},
        ),
        [],
        table,
        b"k",
    )
    times = [T0 + 0.1 * i for i in range(50)]
    values = [20.0 + 0.1 * (i % 3) for i in range(50)]
    values[45] = 400.0  # a spike, after the EWMA has warmed up
    out, ctx = run(chain, table, batch(table, ["a"] * 50, times, values))
    kept_times = list(out.time)
    assert T0 + 4.5 in [round(t, 6) for t in kept_times]
    spike = out.values[:, PM25] == 400.0
    assert spike.sum() == 1 and out.flags[spike][0] & ANOMALY
    plain = out.time[~spike]
    assert np.all(np.diff(plain) >= 0.999)
    assert len(plain) == 5
    assert ctx.dropped["rate_limit"] == 50 - len(out)


def test_aggregate_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(10, 3, (30, 6))
    values[rng.random((30, 6)) < 0.2] = np.nan
    values[:10, 2] = np.nan  # a group with no value of a metric
    starts = np.array([0, 10, 25])
    result = aggregate(values, starts)
    for g, (a, b) in enumerate([(0, 10), (10, 25), (25, 30)]):
        for m in range(6):
            column = values[a:b, m]
            column = column[~np.isnan(column)]
            if not len(column):
                assert all(np.isnan(result[k][g, m]) for k in AGGREGATES)
                continue
            assert result["mean"][g, m] == pytest.approx(column.mean())
            assert result["min"][g, m] == column.min() and result["max"][g, m] == column.max()
            rank = int(np.ceil(0.95 * len(column))) - 1
            assert result["p95"][g, m] == np.sort(column)[rank]
            assert result["count"][g, m] == len(column)


def test_tumbling_windows_per_sensor_with_a_lagging_clock_and_late_readings() -> None:
    table = NameTable()
    chain = Chain(
        steps({"window": {"kind": "tumbling", "sizeSeconds": 60, "aggregates": ["mean", "count"]}}),
        [],
        table,
        b"k",
    )
    ids, times, values = [], [], []
    for i in range(130):
        ids += ["a", "lag"]
        times += [T0 + i, T0 + i - 100]  # 'lag' runs 100 s behind
        values += [float(i), float(i)]
    out, ctx = run(chain, table, batch(table, ids, times, values), now=T0 + 130)
    a, lag = table.index["a"], table.index["lag"]
    mean = AGGREGATES.index("mean")
    a_means = out.values[(out.sid == a) & (out.agg == mean), PM25]
    assert list(out.time[(out.sid == a) & (out.agg == mean)]) == [T0, T0 + 60]
    assert list(a_means) == [np.mean(range(60)), np.mean(range(60, 120))]
    lag_rows = (out.sid == lag) & (out.agg == mean)
    assert list(out.time[lag_rows]) == [T0 - 120, T0 - 60]  # nothing of it lost as late
    assert ctx.dropped["late"] == 0
    late, ctx = run(chain, table, batch(table, ["a"], [T0 + 5], [1.0]), now=T0 + 131)
    assert len(late) == 0 and ctx.dropped["late"] == 1
    drained = chain.drain(Context(now=T0 + 132, table=table))
    assert set(drained.time[drained.sid == a]) == {T0 + 120}


def test_hopping_windows_cover_each_reading_size_over_hop_times() -> None:
    table = NameTable()
    chain = Chain(
        steps(
            {
                "window": {
                    "kind": "hopping",
                    "sizeSeconds": 60,
                    "hopSeconds": 20,
                    "aggregates": ["count"],
                }
            }
        ),
        [],
        table,
        b"k",
    )
    b = batch(table, ["a"] * 200, [T0 + i for i in range(200)], [1.0] * 200)
    out, _ = run(chain, table, b)
    out = Batch.concat([out, chain.drain(Context(now=T0 + 300, table=table))])
    starts = list(out.time)
    assert starts == sorted(set(starts)) and all((s - T0) % 20 == 0 for s in starts)
    full = out.values[(out.time >= T0) & (out.time + 60 <= T0 + 200), PM25]
    assert set(full) == {60.0}
    assert out.values[:, PM25].sum() == 3 * 200


def test_anonymise_hashes_generalises_and_holds_groups_until_k() -> None:
    table = NameTable()
    registry = sensors("s1", "s2", "s3")
    chain = Chain(
        steps(
            {"window": {"sizeSeconds": 60, "aggregates": ["mean"]}},
            {"anonymise": {"hashDeviceIds": True, "gridCellMeters": 1500, "kAnonymity": 3}},
        ),
        registry,
        table,
        b"secret",
    )
    two = batch(table, ["s1", "s2"] * 70, [T0 + i // 2 for i in range(140)], [5.0] * 140)
    out, ctx = run(chain, table, two, now=T0 + 70)
    assert len(out) == 0 and not ctx.dropped  # held: only two sensors so far
    third = batch(table, ["s3"] * 70, [T0 + i for i in range(70)], [6.0] * 70)
    out, _ = run(chain, table, third, now=T0 + 71)
    assert sorted(table.ids[s] for s in out.sid) == ["s1", "s2", "s3"]
    assert np.isnan(out.lat).all() and np.isnan(out.lon).all()
    assert len(set(zip(out.cell_row, out.cell_col, strict=True))) == 1
    names = chain.presentation().names
    assert names[table.index["s1"]] == pseudonym(b"secret", "s1") != "s1"
    lonely = batch(table, ["s1"] * 70, [T0 + 120 + i for i in range(70)], [5.0] * 70)
    out, ctx = run(chain, table, lonely, now=T0 + 190)
    assert set(out.time) == {T0 + 60} and len(out) == 3  # quiet sensors' windows closed
    out, ctx = run(chain, table, Batch.empty(), now=T0 + 190 + 3 * 60 + 1)
    assert len(out) == 0 and ctx.dropped["k_anonymity"] == 1


def test_differential_privacy_noises_aggregates_within_the_budget() -> None:
    table = NameTable()
    chain = Chain(
        steps(
            {"window": {"sizeSeconds": 60, "aggregates": ["mean", "max", "count"]}},
            {"differentialPrivacy": {"epsilon": 0.5, "sensitivity": 1, "budgetPerWindow": 1.0}},
        ),
        [],
        table,
        b"k",
    )
    assert chain.privacy is not None
    assert chain.privacy.remaining == 1.0, "before any window, the whole budget is left"
    b = batch(table, ["a"] * 63, [T0 + i for i in range(63)], [20.0] * 63)
    out, ctx = run(chain, table, b, now=T0 + 63)
    # one metric per record costs 0.5: mean and max fit in the budget of 1, count does not
    assert sorted(AGGREGATES[c] for c in out.agg) == ["max", "mean"]
    assert ctx.dropped["privacy_budget"] == 1
    assert not np.any(out.values[:, PM25] == 20.0)  # noised
    assert chain.privacy is not None
    assert chain.privacy.remaining == pytest.approx(0.0)
    assert chain.privacy.spent_total == pytest.approx(1.0)


def lifetime_chain(table: NameTable, ledger: PrivacyLedger, size: int = 60) -> Chain:
    """Each window may release one pm25 aggregate (epsilon 0.5 of 0.5); a sensor's
    lifetime budget of 1.0 per hour is two windows' worth."""
    return Chain(
        steps(
            {"window": {"sizeSeconds": size, "aggregates": ["mean", "count"]}},
            {
                "differentialPrivacy": {
                    "epsilon": 0.5,
                    "sensitivity": 1,
                    "budgetPerWindow": 0.5,
                    "lifetimeBudget": 1.0,
                    "budgetPeriodSeconds": 3600,
                }
            },
        ),
        [],
        table,
        b"k",
        ledger=ledger,
    )


def pm25_only(table: NameTable, ids: list[str], times: list[float]) -> Batch:
    return batch(table, ids, times, [20.0] * len(ids))


HOUR = 3600.0
P0 = 1_779_998_400.0  # a multiple of 3600: a budget period starts here


def windows_of(sensor: str, start: float, count: int) -> tuple[list[str], list[float]]:
    """One reading per 10 s over ``count`` minutes, and one past the grace period that
    closes the last of them."""
    times = [start + 10 * i for i in range(6 * count)]
    times.append(start + 60 * count + WINDOW_GRACE_SECONDS)
    return [sensor] * len(times), times


def test_a_spent_lifetime_budget_withholds_until_the_period_renews() -> None:
    table, ledger = NameTable(), PrivacyLedger()
    chain = lifetime_chain(table, ledger)
    ids, times = windows_of("a", P0, 4)
    other_ids, other_times = windows_of("b", P0, 1)
    out, ctx = run(chain, table, pm25_only(table, ids + other_ids, times + other_times))
    released = {(table.ids[s], t) for s, t in zip(out.sid, out.time, strict=True)}
    # a: windows 1 and 2 spend its 1.0; 3 and 4 are withheld; b spends its own budget
    assert released == {("a", P0), ("a", P0 + 60), ("b", P0)}
    assert ctx.dropped["privacy_lifetime_budget"] == 2
    assert ctx.dropped["privacy_budget"] == 5  # each window's second aggregate, per window
    assert chain.privacy is not None and chain.privacy.exhausted == 1
    assert ledger.spent_in("a", int(P0 // HOUR)) == pytest.approx(1.0)

    later, _ = run(chain, table, pm25_only(table, *windows_of("a", P0 + 240, 2)))
    # a: still the same period, nothing; b's open window, closed by the clock, fits its own
    assert {(table.ids[s], t) for s, t in zip(later.sid, later.time, strict=True)} == {
        ("b", P0 + 60)
    }
    renewed, ctx = run(chain, table, pm25_only(table, *windows_of("a", P0 + HOUR, 3)))
    assert sorted(renewed.time) == [P0 + HOUR, P0 + HOUR + 60]
    # withheld: the last window of the old period, and the new period's third
    assert ctx.dropped["privacy_lifetime_budget"] == 2
    assert ledger.spent_in("a", int(P0 // HOUR)) == math.inf  # closed: late windows withheld


def test_the_ledger_outlives_the_chain_a_config_change_and_a_restart() -> None:
    table, ledger = NameTable(), PrivacyLedger()
    run(lifetime_chain(table, ledger), table, pm25_only(table, *windows_of("a", P0, 2)))
    # another window size is another step: a ledger inside the step would start afresh
    reconfigured = lifetime_chain(table, ledger, size=120)
    out, _ = run(reconfigured, table, pm25_only(table, *windows_of("a", P0 + 600, 4)))
    assert len(out) == 0
    restored = PrivacyLedger.restore(json.loads(json.dumps(ledger.snapshot())))
    restarted = lifetime_chain(table, restored)
    assert restarted.privacy is not None and restarted.privacy.exhausted == 1
    out, ctx = run(restarted, table, pm25_only(table, *windows_of("a", P0 + 1800, 2)))
    assert len(out) == 0 and ctx.dropped["privacy_lifetime_budget"] == 2


def test_a_lifetime_budget_below_one_window_is_refused() -> None:
    with pytest.raises(ValueError, match="lifetimeBudget must be at least budgetPerWindow"):
        steps(
            {
                "differentialPrivacy": {
                    "epsilon": 0.5,
                    "sensitivity": 1,
                    "budgetPerWindow": 1,
                    "lifetimeBudget": 0.5,
                }
            }
        )


def test_state_round_trip_continues_exactly() -> None:
    filters = steps(
        {"validate": {}},
        {"deadband": {"threshold": 0.5}},
        {"anomaly": {}},
        {"window": {"sizeSeconds": 60, "aggregates": ["mean", "p95"]}},
    )
    rng = np.random.default_rng(5)
    values = list(np.round(rng.normal(20, 3, 200), 1))
    times = [T0 + i for i in range(200)]
    table_a = NameTable()
    straight = Chain(filters, [], table_a, b"k")
    first = batch(table_a, ["a"] * 100, times[:100], values[:100])
    second = batch(table_a, ["a"] * 100, times[100:], values[100:])
    run(straight, table_a, first)
    expected, _ = run(straight, table_a, second)
    table_b = NameTable()
    table_b.lookup(["a"])
    before = Chain(filters, [], table_b, b"k")
    run(before, table_b, first)
    saved = before.state()
    table_c = NameTable()
    table_c.lookup(table_b.ids)
    after = Chain(filters, [], table_c, b"k")
    after.load(saved)
    got, _ = run(after, table_c, second)
    np.testing.assert_array_equal(got.values, expected.values)
    np.testing.assert_array_equal(got.time, expected.time)


def test_records_follow_the_reading_contract_and_leak_nothing() -> None:
    table = NameTable()
    chain = Chain(
        steps(
            {"anomaly": {"alpha": 0.3, "zThreshold": 2}},
            {"window": {"sizeSeconds": 60, "aggregates": ["mean", "count"]}},
            {"anonymise": {"hashDeviceIds": True, "gridCellMeters": 1500, "dropFields": ["site"]}},
        ),
        sensors("aq-d7-001", "aq-d7-002"),
        table,
        b"k",
    )
    times = [T0 + i // 2 for i in range(240)]
    values = [10.0 + (i % 5) for i in range(240)]
    values[101] = 300.0
    out, _ = run(chain, table, batch(table, ["aq-d7-001", "aq-d7-002"] * 120, times, values))
    lineage = Lineage("district-7", "district-7", 4, "sha256:abc", "aios.district-7.readings")
    records = encode(out, chain.presentation(), lineage)
    assert records
    readings = [Reading.model_validate_json(r.value) for r in records]
    assert len({r.event_id for r in readings}) == len(readings)
    assert any("anomaly" in r.flags for r in readings)
    assert any("agg:count" in r.flags for r in readings)
    for record, parsed in zip(records, readings, strict=True):
        text = record.value.decode()
        assert "aq-d7" not in text and "52.51" not in text and "13.37" not in text
        assert parsed.lat is None and parsed.cell and parsed.site is None
        assert parsed.lineage.config_generation == 4 and parsed.lineage.gateway == "district-7"
        assert record.key.decode() == parsed.sensor_id
        version, trace, span, flags = record.traceparent.decode().split("-")
        assert (version, len(trace), len(span), flags) == ("00", 32, 16, "01")
        assert Record.unframe(record.frame()) == record
    assert json.loads(records[0].value)["lineage"]["filterChain"] == "sha256:abc"


def test_a_declared_metric_goes_through_the_chain_with_its_own_state_and_range() -> None:
    """A device's raw sensor channel (``no2_raw``) is validated, deadbanded and windowed
    like a known metric, and a config that declares it later widens the kept state."""
    table, metrics = NameTable(), metric_table()
    filters = steps(
        {"validate": {"ranges": {"no2_raw": {"min": 0, "max": 3000}}}},
        {"deadband": {"threshold": 1.0}},
        {"window": {"sizeSeconds": 60, "aggregates": ["mean", "count"]}},
    )
    before = Chain(filters, sensors("a"), table, b"k", metrics=metrics)
    run(before, table, batch(table, ["a"] * 3, [T0, T0 + 1, T0 + 2], [10.0, 10.5, 12.0]))
    device = Sensor.model_validate({"id": "dev", "metrics": ["no2_raw", "pm25"]})
    after = Chain(filters, [*sensors("a"), device], table, b"k", before, metrics=metrics)
    raw = metrics.index["no2_raw"]
    assert raw == len(KNOWN_METRICS)  # after the known ones, whose bounds filters know
    ids = ["a", "dev", "dev", "dev", "dev"]
    b = batch(table, ids, [T0 + 3, T0, T0 + 1, T0 + 2, T0 + 3], [12.2, 5.0, 5.0, 5.0, 5.0])
    b.values = widen(b.values, len(metrics), np.nan)
    b.values[1:, raw] = [1400.0, 1400.5, 9000.0, 1402.0]
    b.values[0, raw] = 1.0  # 'a' does not declare no2_raw
    out, ctx = run(after, table, b, now=T0 + 200)
    assert ctx.quarantined == {"undeclared_metric": 1, "out_of_range": 1}
    assert ctx.dropped == {"deadband": 1}  # 1400.5: neither no2_raw nor pm25 moved by 1
    records = encode(out, after.presentation(), Lineage("g", "s", 2, "sha256:x", "t"))
    readings = [Reading.model_validate_json(r.value) for r in records]
    by_sensor = {(r.sensor_id, r.flags[-2]): r.metrics for r in readings}
    assert by_sensor[("dev", "agg:mean")] == pytest.approx({"no2_raw": 1401.0, "pm25": 5.0})
    assert by_sensor[("dev", "agg:count")] == {"no2_raw": 2.0, "pm25": 2.0}
    assert by_sensor[("a", "agg:count")] == {"pm25": 2.0}  # its window outlived the change
