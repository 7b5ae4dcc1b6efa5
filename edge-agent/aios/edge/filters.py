"""The filter chain of an ``EdgeGateway``, on column batches.

Every step takes a ``Batch`` sorted by (sensor, time) and returns the readings that go
on. Steps that must look at one sensor's readings in order (deadband, rate limit, the
EWMA of the anomaly pre-filter, duplicate detection) work rank by rank: all sensors' first
readings of the batch at once, then all second readings, and so on, so the Python loop
runs once per reading *per sensor in the batch*, not once per reading.

Readings flagged ``anomaly`` go through every later step that would hold them back
(deadband, rate limit, window aggregation); privacy steps (anonymise, k-anonymity) still
apply to them. Each step's state is a dict of arrays, so the agent checkpoints it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from aios.api.edge_gateway import (
    AnomalyFilter,
    AnonymiseFilter,
    DeadbandFilter,
    DifferentialPrivacyFilter,
    FilterStep,
    RateLimitFilter,
    Sensor,
    ValidateFilter,
    WindowFilter,
)
from aios.edge.columns import (
    AGGREGATE,
    AGGREGATES,
    ANOMALY,
    Batch,
    NameTable,
    group_starts,
    grow,
    metric_table,
    new_batch,
    ranks,
    widen,
)

WINDOW_GRACE_SECONDS = 2.0
"""How long a window waits for late readings after the newest reading passed its end."""
ANOMALY_WARMUP = 5
"""Readings of a sensor's metric before its EWMA is trusted to flag anything."""
METERS_PER_DEGREE = 111_320.0
NO_CELL = np.iinfo(np.int64).min
PHYSICAL_MIN = np.array([[0.0, 0.0, 0.0, 0.0, -273.15, 0.0]])  # KNOWN_METRICS order
PHYSICAL_MAX = np.array([[np.inf, np.inf, np.inf, np.inf, np.inf, 100.0]])
State = dict[str, npt.NDArray[Any]]


@dataclass
class Context:
    """What one pass of the chain needs besides the batch, and what it reports back."""

    now: float
    table: NameTable
    dropped: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    quarantine: list[tuple[str, Batch]] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] += count

    def reject(self, reason: str, rows: Batch) -> None:
        if len(rows):
            self.quarantined[reason] += len(rows)
            self.quarantine.append((reason, rows))


class Step(Protocol):
    def apply(self, batch: Batch, ctx: Context) -> Batch: ...

    def state(self) -> State: ...

    def load(self, state: State) -> None: ...


class Registry:
    """What the config says about each sensor, as arrays indexed by the sensor table."""

    def __init__(self, sensors: list[Sensor], table: NameTable, metrics: NameTable) -> None:
        self.open = not sensors  # no sensor list: any well-formed sensor id is accepted
        self.table, self.metrics = table, metrics
        sids = table.lookup([s.id for s in sensors])
        n = len(table)
        self.known = np.zeros(n, bool)
        self.known[sids] = True
        columns = [metrics.lookup(sensor.metrics) for sensor in sensors]
        self.declared = np.zeros((n, len(metrics)), bool)
        self.lat, self.lon = np.full(n, np.nan), np.full(n, np.nan)
        for sid, sensor, declared in zip(sids, sensors, columns, strict=True):
            self.declared[sid, declared] = True
            if sensor.location is not None:
                self.lat[sid], self.lon[sid] = sensor.location.lat, sensor.location.lon

    def fit(self) -> None:
        """Extend the arrays to sensors and metrics the tables learnt since (all of them
        unknown, undeclared)."""
        n = len(self.table)
        self.known = grow(self.known, n, False)
        self.declared = grow(self.declared, n, False, len(self.metrics))
        self.lat, self.lon = grow(self.lat, n, np.nan), grow(self.lon, n, np.nan)


class Validate:
    """Unknown sensors, undeclared metrics, implausible values, future or stale timestamps
    are quarantined; duplicates and readings older than the sensor's last are dropped."""

    def __init__(self, config: ValidateFilter, registry: Registry) -> None:
        self.config, self.registry = config, registry
        self.last = np.zeros(0)

    def apply(self, batch: Batch, ctx: Context) -> Batch:
        registry = self.registry
        registry.fit()
        self.last = grow(self.last, len(ctx.table), -np.inf)
        width = batch.values.shape[1]
        present = ~np.isnan(batch.values)
        verdicts: list[tuple[str, npt.NDArray[np.bool_]]] = []
        if not registry.open:
            verdicts.append(("unknown_sensor", ~registry.known[batch.sid]))
            declared = registry.declared[batch.sid][:, :width]
            verdicts.append(("undeclared_metric", (present & ~declared).any(axis=1)))
        low, high = np.full(width, -np.inf), np.full(width, np.inf)
        for metric, bounds in self.config.ranges.items():
            column = registry.metrics.index.get(metric, width)
            if column < width:
                low[column], high[column] = bounds.min, bounds.max
        outside = present & ((batch.values < low) | (batch.values > high))
        verdicts.append(("out_of_range", outside.any(axis=1)))
        skew, age = self.config.max_future_skew_seconds, self.config.max_age_seconds
        verdicts.append(("future_timestamp", batch.time > batch.recv + skew))
        verdicts.append(("stale_timestamp", batch.time < batch.recv - age))
        bad = np.zeros(len(batch), bool)
        for reason, mask in verdicts:
            fresh = mask & ~bad
            ctx.reject(reason, batch.take(fresh))
            bad |= fresh
        batch = batch.take(~bad)
        return self._deduplicate(batch, ctx)

    def _deduplicate(self, batch: Batch, ctx: Context) -> Batch:
        same = np.zeros(len(batch), bool)
        same[1:] = (batch.sid[1:] == batch.sid[:-1]) & (batch.time[1:] == batch.time[:-1])
        previous = self.last[batch.sid]
        duplicate = same | (batch.time == previous)
        older = ~duplicate & (batch.time < previous)
        ctx.drop("duplicate", int(duplicate.sum()))
        ctx.drop("out_of_order", int(older.sum()))
        batch = batch.take(~(duplicate | older))
        np.maximum.at(self.last, batch.sid, batch.time)
        return batch

    def state(self) -> State:
        return {"last": self.last}

    def load(self, state: State) -> None:
        self.last = state["last"]


def _rank_loop(batch: Batch) -> list[npt.NDArray[np.intp]]:
    """Row indices of the batch, rank by rank (all sensors' first readings, then second…)."""
    rank = ranks(batch.sid)
    order = np.argsort(rank, kind="stable")
    bounds = group_starts(rank[order])
    return np.split(order, bounds[1:]) if len(order) else []


class Deadband:
    """Drops a reading when no metric moved by ``threshold`` since the last one forwarded."""

    def __init__(self, config: DeadbandFilter) -> None:
        self.relative = config.mode == "relative"
        self.threshold = config.threshold
        self.last = np.zeros((0, 0))

    def apply(self, batch: Batch, ctx: Context) -> Batch:
        self.last = grow(self.last, len(ctx.table), np.nan, batch.values.shape[1])
        keep = np.zeros(len(batch), bool)
        flagged = (batch.flags & ANOMALY) != 0
        for rows in _rank_loop(batch):
            values, sid = batch.values[rows], batch.sid[rows]
            values = widen(values, self.last.shape[1], np.nan)
            previous = self.last[sid]
            change = np.abs(values - previous)
            limit = self.threshold * np.abs(previous) if self.relative else self.threshold
            present = ~np.isnan(values)
            moved = present & (np.isnan(previous) | (change >= limit))
            go = moved.any(axis=1) | flagged[rows]
            keep[rows] = go
            update = present & go[:, None]
            self.last[sid] = np.where(update, values, previous)
        ctx.drop("deadband", int((~keep).sum()))
        return batch.take(keep)

    def state(self) -> State:
        return {"last": self.last}

    def load(self, state: State) -> None:
        self.last = state["last"]


class RateLimit:
    """At most ``perSensorPerSecond`` readings per sensor, by the readings' own clock."""

    def __init__(self, config: RateLimitFilter) -> None:
        self.interval = 1.0 / config.per_sensor_per_second
        self.last = np.zeros(0)

    def apply(self, batch: Batch, ctx: Context) -> Batch:
        self.last = grow(self.last, len(ctx.table), -np.inf)
        keep = np.zeros(len(batch), bool)
        flagged = (batch.flags & ANOMALY) != 0
        for rows in _rank_loop(batch):
            sid, time = batch.sid[rows], batch.time[rows]
            go = (time - self.last[sid] >= self.interval * (1 - 1e-9)) | flagged[rows]
            keep[rows] = go
            self.last[sid] = np.where(go, time, self.last[sid])
        ctx.drop("rate_limit", int((~keep).sum()))
        return batch.take(keep)

    def state(self) -> State:
        return {"last": self.last}

    def load(self, state: State) -> None:
        self.last = state["last"]


class Anomaly:
    """Flags a value more than ``zThreshold`` standard deviations from its sensor's EWMA."""

    def __init__(self, config: AnomalyFilter) -> None:
        self.alpha, self.z = config.alpha, config.z_threshold
        self.mean = np.zeros((0, 0))
        self.var = np.zeros((0, 0))
        self.count = np.zeros((0, 0), np.int64)

    def apply(self, batch: Batch, ctx: Context) -> Batch:
        n, width = len(ctx.table), batch.values.shape[1]
        self.mean, self.var = grow(self.mean, n, 0.0, width), grow(self.var, n, 0.0, width)
        self.count = grow(self.count, n, 0, width)
        flags = batch.flags.copy()
        for rows in _rank_loop(batch):
            sid = batch.sid[rows]
            values = widen(batch.values[rows], self.mean.shape[1], np.nan)
            present = ~np.isnan(values)
            mean, var, count = self.mean[sid], self.var[sid], self.count[sid]
            std = np.sqrt(var) + 1e-9
            z = np.abs(values - mean) / std
            anomalous = present & (count >= ANOMALY_WARMUP) & (z > self.z)
            flags[rows] |= np.where(anomalous.any(axis=1), ANOMALY, np.uint8(0))
            diff = np.where(present, values - mean, 0.0)
            increment = self.alpha * diff
            first = present & (count == 0)
            self.mean[sid] = np.where(first, values, mean + increment)
            self.var[sid] = np.where(
                present & ~first, (1 - self.alpha) * (var + diff * increment), var
            )
            self.count[sid] = count + present
        return replace(batch, flags=flags)

    def state(self) -> State:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load(self, state: State) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


def aggregate(values: npt.NDArray[np.float64], starts: npt.NDArray[np.intp]) -> dict[str, Any]:
    """mean, min, max, p95 (nearest rank), count of each metric over groups of rows;
    ``values`` is sorted by group, ``starts`` the first row of each group. NaN: no value."""
    present = ~np.isnan(values)
    count = np.add.reduceat(present, starts, axis=0).astype(np.float64)
    empty = count == 0
    total = np.add.reduceat(np.where(present, values, 0.0), starts, axis=0)
    low = np.minimum.reduceat(np.where(present, values, np.inf), starts, axis=0)
    high = np.maximum.reduceat(np.where(present, values, -np.inf), starts, axis=0)
    lengths = np.diff(np.append(starts, len(values)))
    group = np.repeat(np.arange(len(starts)), lengths)
    p95 = np.full(count.shape, np.nan)
    for column in range(values.shape[1]):
        order = np.lexsort((np.where(present[:, column], values[:, column], np.inf), group))
        ranked = values[order, column]
        position = starts + np.maximum(np.ceil(0.95 * count[:, column]).astype(np.intp) - 1, 0)
        p95[:, column] = ranked[np.minimum(position, len(values) - 1)] if len(values) else []
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    result = {"mean": mean, "min": low, "max": high, "p95": p95, "count": count}
    return {k: np.where(empty, np.nan, v) for k, v in result.items()}


class Window:
    """Tumbling or hopping windows per sensor. Each sensor has its own watermark (its newest
    reading's time less a grace period), so a sensor whose clock lags loses nothing; a
    sensor that goes quiet for a window's length has its windows closed by the clock.
    A reading for a window already emitted is dropped as ``late``."""

    def __init__(self, config: WindowFilter) -> None:
        self.size = float(config.size_seconds)
        self.hop = float(config.hop_seconds or config.size_seconds)
        self.aggregates = [AGGREGATES.index(a) for a in config.aggregates]
        self.pending = Batch.empty()
        self.mark = np.zeros(0)  # per sensor: event-time watermark
        self.emitted = np.zeros(0)  # per sensor: windows ending at or before were emitted
        self.seen = np.zeros(0)  # per sensor: when its last reading was accepted

    def apply(self, batch: Batch, ctx: Context) -> Batch:
        n = len(ctx.table)
        self.mark, self.emitted = grow(self.mark, n, -np.inf), grow(self.emitted, n, -np.inf)
        self.seen = grow(self.seen, n, -np.inf)
        flagged = batch.take((batch.flags & ANOMALY) != 0)
        latest_end = np.floor(batch.time / self.hop) * self.hop + self.size
        late = latest_end <= self.emitted[batch.sid]
        ctx.drop("late", int(late.sum()))
        batch = batch.take(~late)
        self.pending = Batch.concat([self.pending, batch])
        np.maximum.at(self.mark, batch.sid, batch.time - WINDOW_GRACE_SECONDS)
        np.maximum.at(self.seen, batch.sid, batch.recv)
        quiet = ctx.now - self.seen > self.size + WINDOW_GRACE_SECONDS
        return Batch.concat([flagged, self.close(self.mark, quiet, ctx)])

    def close(
        self, until: npt.NDArray[np.float64], everything: npt.NDArray[np.bool_], ctx: Context
    ) -> Batch:
        """Emit each sensor's windows ending after what it emitted and by ``until`` (all of
        them where ``everything``); keep the rows that open windows still need."""
        pending = self.pending
        if not len(pending):
            return Batch.empty()
        latest = np.floor(pending.time / self.hop) * self.hop
        until = until.copy()
        last_end = np.full(len(until), -np.inf)
        np.maximum.at(last_end, pending.sid, latest + self.size)
        until = np.where(everything & np.isfinite(last_end), np.maximum(until, last_end), until)
        row_until = until[pending.sid]
        per_row = math.ceil(self.size / self.hop)
        starts = latest[:, None] - self.hop * np.arange(per_row)[None, :]
        ends = starts + self.size
        chosen = (
            (ends > pending.time[:, None])
            & (ends > self.emitted[pending.sid][:, None])
            & (ends <= row_until[:, None])
        )
        self.pending = pending.take(latest + self.size > row_until)
        self.emitted = np.maximum(self.emitted, np.where(np.isfinite(until), until, -np.inf))
        rows, which = np.nonzero(chosen)
        if not len(rows):
            return Batch.empty()
        window_start = starts[rows, which]
        order = np.lexsort((window_start, pending.sid[rows]))
        rows, window_start = rows[order], window_start[order]
        sid = pending.sid[rows]
        key_change = np.ones(len(rows), bool)
        key_change[1:] = (sid[1:] != sid[:-1]) | (window_start[1:] != window_start[:-1])
        group_first = np.flatnonzero(key_change)
        aggregates = aggregate(pending.values[rows], group_first)
        outputs = []
        for code in self.aggregates:
            out = new_batch(
                sid[group_first],
                window_start[group_first],
                aggregates[AGGREGATES[code]],
                pending.lat[rows][group_first],
                pending.lon[rows][group_first],
                np.full(len(group_first), ctx.now),
            )
            out.flags[:] = AGGREGATE
            out.agg[:] = code
            out.window[:] = self.size
            outputs.append(out)
        merged = Batch.concat(outputs)
        return merged.take(np.lexsort((merged.agg, merged.time, merged.sid)))

    def drain(self, ctx: Context) -> Batch:
        """Emit every open window (before a new configuration replaces this one)."""
        return self.close(self.mark, np.ones(len(self.mark), bool), ctx)

    def state(self) -> State:
        fields = {f"pending.{name}": getattr(self.pending, name) for name in _BATCH_FIELDS}
        return {**fields, "mark": self.mark, "emitted": self.emitted, "seen": self.seen}

    def load(self, state: State) -> None:
        self.pending = Batch(**{n: state[f"pending.{n}"] for n in _BATCH_FIELDS})
        self.mark, self.emitted, self.seen = state["mark"], state["emitted"], state["seen"]


_BATCH_FIELDS = tuple(Batch.__dataclass_fields__)


def pseudonym(key: bytes, sensor_id: str) -> str:
    """A keyed hash of a device id: stable per gateway key, not reversible without it."""
    return "anon-" + hmac.new(key, sensor_id.encode(), hashlib.sha256).hexdigest()[:20]


class Anonymise:
    """Hashes device ids, snaps locations to grid cells, and holds records back until their
    group (same cell, same second or window) has ``kAnonymity`` distinct sensors; a group
    still smaller after ``hold_seconds`` is suppressed."""

    def __init__(self, config: AnonymiseFilter, key: bytes, hold_seconds: float) -> None:
        self.config, self.key, self.hold = config, key, hold_seconds
        self.names: list[str] = []
        self.held = Batch.empty()
        self.satisfied: dict[tuple[int, int, float], float] = {}  # group → until when

    def pseudonyms(self, table: NameTable) -> npt.NDArray[np.object_]:
        for sensor in table.ids[len(self.names) :]:
            self.names.append(pseudonym(self.key, sensor))
        return np.array(self.names, dtype=object)

    def apply(self, batch: Batch, ctx: Context) -> Batch:
        meters = self.config.grid_cell_meters
        if meters:
            batch = generalise(batch, float(meters))
        if self.config.k_anonymity:
            batch = self._k_anonymous(batch, self.config.k_anonymity, ctx)
        return batch

    def _k_anonymous(self, batch: Batch, k: int, ctx: Context) -> Batch:
        b = Batch.concat([self.held, batch])
        if not len(b):
            return b
        second = np.floor(b.time)
        b = b.take(np.lexsort((b.sid, second, b.cell_col, b.cell_row)))
        second = np.floor(b.time)
        change = np.ones(len(b), bool)
        change[1:] = (
            (b.cell_row[1:] != b.cell_row[:-1])
            | (b.cell_col[1:] != b.cell_col[:-1])
            | (second[1:] != second[:-1])
        )
        new_sensor = change.copy()
        new_sensor[1:] |= b.sid[1:] != b.sid[:-1]
        group = np.cumsum(change) - 1
        first = np.flatnonzero(change)
        distinct = np.bincount(group, weights=new_sensor)
        oldest = np.minimum.reduceat(b.recv, first)
        self.satisfied = {g: t for g, t in self.satisfied.items() if t >= ctx.now}
        keys = zip(
            b.cell_row[first].tolist(),
            b.cell_col[first].tolist(),
            second[first].tolist(),
            strict=True,
        )
        ok = np.zeros(len(first), bool)
        for i, key in enumerate(keys):
            if distinct[i] >= k:
                self.satisfied[key] = ctx.now + self.hold
            ok[i] = key in self.satisfied
        expired = ~ok & (oldest < ctx.now - self.hold)
        ctx.drop("k_anonymity", int(expired[group].sum()))
        self.held = b.take(~ok[group] & ~expired[group])
        released = b.take(ok[group])
        return released.take(np.lexsort((released.agg, released.time, released.sid)))

    def state(self) -> State:
        held = {f"held.{name}": getattr(self.held, name) for name in _BATCH_FIELDS}
        groups = np.array([[*key, until] for key, until in self.satisfied.items()]).reshape(-1, 4)
        return {**held, "satisfied": groups}

    def load(self, state: State) -> None:
        self.held = Batch(**{n: state[f"held.{n}"] for n in _BATCH_FIELDS})
        self.satisfied = {(int(r), int(c), float(t)): float(u) for r, c, t, u in state["satisfied"]}


def generalise(batch: Batch, meters: float) -> Batch:
    """Replace exact coordinates by the id of the grid cell (``meters`` wide) they fall in."""
    has = ~np.isnan(batch.lat) & ~np.isnan(batch.lon)
    step_lat = meters / METERS_PER_DEGREE
    row = np.floor(np.where(has, batch.lat, 0.0) / step_lat)
    middle = np.radians((row + 0.5) * step_lat)
    step_lon = meters / (METERS_PER_DEGREE * np.maximum(np.cos(middle), 1e-6))
    col = np.floor(np.where(has, batch.lon, 0.0) / step_lon)
    nan = np.full(len(batch), np.nan)
    return replace(
        batch,
        lat=nan,
        lon=nan.copy(),
        cell_row=np.where(has, row, NO_CELL).astype(np.int64),
        cell_col=np.where(has, col, NO_CELL).astype(np.int64),
    )


@dataclass
class PrivacyLedger:
    """Epsilon spent per sensor in its current budget period, by sensor id. The agent keeps
    it beside the chain, not in a step's state: a lifetime budget that a restart or an
    edited configuration reset would bound nothing."""

    spent: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Sensor id → (period index, epsilon spent in that period)."""

    def spent_in(self, sensor: str, period: int) -> float:
        """What the sensor spent in ``period``: nothing in a new one, everything in one
        that a later period closed (a late window there is withheld, not released free)."""
        current, spent = self.spent.get(sensor, (period, 0.0))
        if period < current:
            return math.inf
        return spent if current == period else 0.0

    def add(self, sensor: str, period: int, epsilon: float) -> None:
        current, spent = self.spent.get(sensor, (period, 0.0))
        if period > current:
            spent = 0.0  # a new period: the budget renews
        elif period < current:
            return  # a late window of an earlier period: that period is closed
        self.spent[sensor] = (period, spent + epsilon)

    def exhausted(self, lifetime: float, epsilon: float, period: int | None = None) -> int:
        """Sensors that cannot release one more value in ``period``; by default the latest
        period the ledger holds (what a restarted agent knows before a batch names one)."""
        if period is None:
            period = max((p for p, _ in self.spent.values()), default=None)
        return sum(
            1 for p, spent in self.spent.values() if p == period and spent + epsilon > lifetime
        )

    def snapshot(self) -> dict[str, list[float]]:
        return {sensor: [period, spent] for sensor, (period, spent) in self.spent.items()}

    @classmethod
    def restore(cls, saved: dict[str, list[float]]) -> PrivacyLedger:
        return cls(
            {sensor: (int(period), float(spent)) for sensor, (period, spent) in saved.items()}
        )


class DifferentialPrivacy:
    """Laplace noise on window aggregates. Each released value costs ``epsilon`` from its
    sensor's budget for that window (sequential composition over metrics and aggregates,
    parallel over sensors); values beyond ``budgetPerWindow`` are withheld, never released
    without noise. With ``lifetimeBudget``, what a sensor released in its period counts
    too (the ledger), and once that is spent its values are withheld until the period
    renews."""

    def __init__(self, config: DifferentialPrivacyFilter, ledger: PrivacyLedger) -> None:
        self.config = config
        self.ledger = ledger
        self.spent_total = 0.0
        self.remaining = config.budget_per_window
        """Epsilon left in the latest window seen (all of it before the first)."""
        self.exhausted = 0
        """Sensors that cannot release another value in the latest period seen."""
        if config.lifetime_budget is not None:  # a restart: the ledger knows
            self.exhausted = ledger.exhausted(config.lifetime_budget, config.epsilon)

    def apply(self, batch: Batch, ctx: Context) -> Batch:
        is_aggregate = (batch.flags & AGGREGATE) != 0
        if not is_aggregate.any():
            return batch
        rows = np.flatnonzero(is_aggregate)
        b = batch.take(rows)
        present = ~np.isnan(b.values)
        eps, budget = self.config.epsilon, self.config.budget_per_window
        cost = eps * present.sum(axis=1)
        order = np.lexsort((b.agg, b.time, b.sid))
        cost_sorted = cost[order]
        change = np.ones(len(order), bool)
        change[1:] = (b.sid[order][1:] != b.sid[order][:-1]) | (
            b.time[order][1:] != b.time[order][:-1]
        )
        group = np.cumsum(change) - 1
        cumulative = np.cumsum(cost_sorted)
        before_group = (cumulative - cost_sorted)[change][group]
        spent_in_group = cumulative - before_group
        in_window = np.zeros(len(b), bool)
        in_window[order] = spent_in_group <= budget + 1e-9
        ctx.drop("privacy_budget", int((~in_window).sum()))
        allowed = in_window
        if self.config.lifetime_budget is not None:
            allowed = in_window & self._within_lifetime(b, np.where(in_window, cost, 0.0), ctx)
        scale = np.where(b.agg == AGGREGATES.index("count"), 1.0, self.config.sensitivity) / eps
        noise = ctx.rng.laplace(0.0, 1.0, size=b.values.shape) * scale[:, None]
        noisy = b.values + noise
        # post-processing cannot weaken the guarantee: keep values physically possible
        is_count = b.agg == AGGREGATES.index("count")
        width = noisy.shape[1]
        low, high = widen(PHYSICAL_MIN, width, -np.inf), widen(PHYSICAL_MAX, width, np.inf)
        noisy = np.clip(noisy, low[:, :width], high[:, :width])
        noisy[is_count] = np.maximum(noisy[is_count], 0.0)
        released = replace(b, values=np.where(present, noisy, np.nan)).take(allowed)
        self.spent_total += float(cost[allowed].sum())
        latest = b.time.max()
        per_group = np.bincount(group, weights=np.where(allowed[order], cost_sorted, 0.0))
        latest_groups = b.time[order][change] == latest
        self.remaining = max(0.0, budget - float(per_group[latest_groups].max()))
        keep_others = batch.take(~is_aggregate)
        merged = Batch.concat([keep_others, released])
        return merged.take(np.lexsort((merged.agg, merged.time, merged.sid)))

    def _within_lifetime(self, b: Batch, cost: npt.NDArray[np.float64], ctx: Context) -> Any:
        """Rows whose sensor's spending in its period, the ledger's and this batch's in
        time order, stays within ``lifetimeBudget``; records what they spend."""
        lifetime = float(self.config.lifetime_budget or 0.0)
        period = (b.time // self.config.budget_period_seconds).astype(np.int64)
        order = np.lexsort((b.agg, b.time, period, b.sid))
        sid, per, cost_sorted = b.sid[order], period[order], cost[order]
        first = np.ones(len(order), bool)
        first[1:] = (sid[1:] != sid[:-1]) | (per[1:] != per[:-1])
        group = np.cumsum(first) - 1
        cumulative = np.cumsum(cost_sorted)
        within_group = cumulative - (cumulative - cost_sorted)[first][group]
        keys = [(ctx.table.ids[i], int(p)) for i, p in zip(sid[first], per[first], strict=True)]
        before = np.array([self.ledger.spent_in(name, p) for name, p in keys])
        fits = before[group] + within_group <= lifetime + 1e-9
        spent = np.bincount(group, weights=np.where(fits, cost_sorted, 0.0))
        for (name, p), epsilon in zip(keys, spent, strict=True):
            self.ledger.add(name, p, float(epsilon))
        within = np.zeros(len(b), bool)
        within[order] = fits
        ctx.drop("privacy_lifetime_budget", int(((cost > 0) & ~within).sum()))
        self.exhausted = self.ledger.exhausted(lifetime, self.config.epsilon, int(period.max()))
        return within

    def state(self) -> State:
        return {"privacy": np.array([self.spent_total, self.remaining])}

    def load(self, state: State) -> None:
        spent, remaining = (float(x) for x in state["privacy"])
        self.spent_total = spent
        if not math.isnan(remaining):  # (a checkpoint written before any window was seen)
            self.remaining = remaining


@dataclass(frozen=True)
class Presentation:
    """How the chain's output is written: names (hashed or not), the metric of each column,
    fields left out, cells."""

    names: npt.NDArray[np.object_]
    metrics: list[str]
    omit: frozenset[str]
    grid_meters: int | None


class Chain:
    """The ordered steps of one configuration, with their state."""

    def __init__(
        self,
        filters: list[FilterStep],
        sensors: list[Sensor],
        table: NameTable,
        hash_key: bytes,
        previous: Chain | None = None,
        ledger: PrivacyLedger | None = None,
        metrics: NameTable | None = None,
    ) -> None:
        self.filters, self.table = filters, table
        self.metrics = metrics if metrics is not None else metric_table()
        self.ledger = ledger if ledger is not None else PrivacyLedger()
        self.registry = Registry(sensors, table, self.metrics)
        reusable = (
            dict(zip(_keys(previous.filters), previous.steps, strict=True)) if previous else {}
        )
        self.steps: list[Step] = []
        for key, step in zip(_keys(filters), filters, strict=True):
            reused = reusable.pop(key, None)
            if isinstance(reused, Validate):
                reused.registry = self.registry
            self.steps.append(reused if reused is not None else self._build(step, hash_key))
        self.anonymise = next((s for s in self.steps if isinstance(s, Anonymise)), None)
        self.privacy = next((s for s in self.steps if isinstance(s, DifferentialPrivacy)), None)

    def _build(self, step: FilterStep, hash_key: bytes) -> Step:
        if step.validate_ is not None:
            return Validate(step.validate_, self.registry)
        if step.deadband is not None:
            return Deadband(step.deadband)
        if step.rate_limit is not None:
            return RateLimit(step.rate_limit)
        if step.window is not None:
            return Window(step.window)
        if step.anomaly is not None:
            return Anomaly(step.anomaly)
        if step.anonymise is not None:
            windows = [s.size for s in self.steps if isinstance(s, Window)]
            return Anonymise(step.anonymise, hash_key, 3 * windows[-1] if windows else 10.0)
        if step.differential_privacy is not None:
            return DifferentialPrivacy(step.differential_privacy, self.ledger)
        raise ValueError("a filter step sets no filter")

    def process(self, batch: Batch, ctx: Context) -> Batch:
        """Run the batch through every step; location comes from the config when the
        reading has none; rows are ordered by sensor, then time."""
        self.registry.fit()
        batch = batch.take(np.lexsort((batch.time, batch.sid)))
        missing = np.isnan(batch.lat) | np.isnan(batch.lon)
        if missing.any():
            batch.lat = np.where(missing, self.registry.lat[batch.sid], batch.lat)
            batch.lon = np.where(missing, self.registry.lon[batch.sid], batch.lon)
        out = self._run(batch, ctx, 0)
        return out.take(np.lexsort((out.agg, out.time, out.sid)))

    def _run(self, batch: Batch, ctx: Context, start: int) -> Batch:
        for step in self.steps[start:]:
            batch = step.apply(batch, ctx)
        return batch

    def drain(self, ctx: Context) -> Batch:
        """Close every open window and pass what it emits through the rest of the chain."""
        outputs = []
        for i, step in enumerate(self.steps):
            if isinstance(step, Window):
                outputs.append(self._run(step.drain(ctx), ctx, i + 1))
        return Batch.concat(outputs) if outputs else Batch.empty()

    def presentation(self) -> Presentation:
        names = self.anonymise.pseudonyms(self.table) if self.anonymise else None
        config = self.anonymise.config if self.anonymise else None
        return Presentation(
            names=names
            if names is not None and config and config.hash_device_ids
            else self.table.names(),
            metrics=self.metrics.ids,
            omit=frozenset(config.drop_fields) if config else frozenset(),
            grid_meters=config.grid_cell_meters if config else None,
        )

    def state(self) -> State:
        return {f"{i}.{k}": v for i, s in enumerate(self.steps) for k, v in s.state().items()}

    def load(self, state: State) -> None:
        for i, step in enumerate(self.steps):
            prefix = f"{i}."
            mine = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if mine:
                step.load(mine)


def _keys(filters: list[FilterStep]) -> list[str]:
    """Identity of each step for reuse across configurations: same settings, same place
    in the order of steps of its kind."""
    seen: Counter[str] = Counter()
    keys = []
    for step in filters:
        text = step.model_dump_json(by_alias=True, exclude_none=True)
        seen[text] += 1
        keys.append(f"{text}#{seen[text]}")
    return keys
