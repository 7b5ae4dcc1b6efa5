"""Readings as columns: every filter works on a whole batch with numpy, never per reading."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from aios.api.edge_gateway import KNOWN_METRICS

ANOMALY = np.uint8(1)
AGGREGATE = np.uint8(2)
AGGREGATES: tuple[str, ...] = ("mean", "min", "max", "p95", "count")
RAW = -1

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass
class Batch:
    """A batch of readings, one array per field, row ``i`` being one reading.

    ``sid`` indexes the agent's sensor table; column ``c`` of ``values`` is metric ``c`` of
    its metric table, NaN where a reading lacks the metric. A batch may have fewer columns
    than the table has metrics (those it lacks are NaN), so batches are padded when joined.
    ``recv`` is when the agent accepted a reading (the clock timestamps are validated
    against, so a replay decides alike).
    """

    sid: npt.NDArray[np.int32]
    time: F64
    values: F64
    lat: F64
    lon: F64
    recv: F64
    trace: npt.NDArray[np.void]
    seq: I64
    flags: npt.NDArray[np.uint8]
    agg: npt.NDArray[np.int8]
    window: F64
    cell_row: I64
    cell_col: I64

    def __len__(self) -> int:
        return len(self.sid)

    def take(self, index: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Batch:
        return Batch(**{name: getattr(self, name)[index] for name in _FIELDS})

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        if len(batches) == 1:
            return batches[0]
        width = max(b.values.shape[1] for b in batches)
        joined = {
            name: np.concatenate([getattr(b, name) for b in batches])
            for name in _FIELDS
            if name != "values"
        }
        values = np.concatenate([widen(b.values, width, np.nan) for b in batches])
        return Batch(**joined, values=values)

    @staticmethod
    def empty() -> Batch:
        return new_batch(np.zeros(0, np.int32), np.zeros(0), np.zeros((0, 0)))


_FIELDS = tuple(Batch.__dataclass_fields__)


def new_batch(
    sid: npt.NDArray[np.int32],
    time: F64,
    values: F64,
    lat: F64 | None = None,
    lon: F64 | None = None,
    recv: F64 | None = None,
    seq: I64 | None = None,
) -> Batch:
    n = len(sid)
    nan = np.full(n, np.nan)
    return Batch(
        sid=sid.astype(np.int32),
        time=time.astype(np.float64),
        values=values.astype(np.float64),
        lat=nan.copy() if lat is None else lat,
        lon=nan.copy() if lon is None else lon,
        recv=time.copy() if recv is None else recv,
        trace=new_trace_ids(n),
        seq=np.arange(n, dtype=np.int64) if seq is None else seq,
        flags=np.zeros(n, np.uint8),
        agg=np.full(n, RAW, np.int8),
        window=np.zeros(n),
        cell_row=np.zeros(n, np.int64),
        cell_col=np.zeros(n, np.int64),
    )


def new_trace_ids(n: int) -> npt.NDArray[np.void]:
    """Random W3C trace ids, 16 bytes each."""
    return np.frombuffer(os.urandom(16 * n), dtype="V16").copy()


def group_starts(keys: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.intp]:
    """Start index of each run of equal values in sorted ``keys``."""
    if len(keys) == 0:
        return np.zeros(0, np.intp)
    return np.concatenate(([0], np.flatnonzero(keys[1:] != keys[:-1]) + 1))


def ranks(sorted_keys: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.intp]:
    """Position of each row within its run of equal keys (0 for the first)."""
    starts = group_starts(sorted_keys)
    lengths = np.diff(np.append(starts, len(sorted_keys)))
    return np.arange(len(sorted_keys)) - np.repeat(starts, lengths)


def grow(
    array: npt.NDArray[Any], size: int, fill: float | int | bool, width: int | None = None
) -> npt.NDArray[Any]:
    """Per-sensor state extended to ``size`` sensors (new sensors start at ``fill``), and
    per-metric state to ``width`` metrics (new metrics likewise)."""
    if width is not None:
        array = widen(array, width, fill)
    if len(array) >= size:
        return array
    extra = np.full((size - len(array), *array.shape[1:]), fill, dtype=array.dtype)
    return np.concatenate([array, extra])


def widen(array: npt.NDArray[Any], width: int, fill: float | int | bool) -> npt.NDArray[Any]:
    """A per-metric array (one column per metric) extended to ``width`` metrics."""
    if array.shape[1] >= width:
        return array
    extra = np.full((len(array), width - array.shape[1]), fill, dtype=array.dtype)
    return np.concatenate([array, extra], axis=1)


@dataclass
class NameTable:
    """Names ↔ small integers, stable for the agent's lifetime (state is indexed by them):
    sensor ids, and metric names (``metric_table``)."""

    ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def lookup(self, ids: list[str]) -> npt.NDArray[np.int32]:
        index = self.index
        for sensor in ids:
            if sensor not in index:
                index[sensor] = len(self.ids)
                self.ids.append(sensor)
        return np.fromiter((index[s] for s in ids), dtype=np.int32, count=len(ids))

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def names(self) -> npt.NDArray[np.object_]:
        return np.array(self.ids, dtype=object)

    def __len__(self) -> int:
        return len(self.ids)


def metric_table(names: Iterable[str] = ()) -> NameTable:
    """The agent's metrics: the known ones first (filters find their bounds by column),
    then the others in the order they were first declared."""
    table = NameTable()
    table.lookup([*KNOWN_METRICS, *names])
    return table


# -- the journal's chunk codec: one ingest call's readings, as raw columns -------------
@cache
def _row(width: int) -> np.dtype[np.void]:
    return np.dtype(
        [
            ("time", "<f8"),
            ("values", "<f8", (width,)),
            ("lat", "<f8"),
            ("lon", "<f8"),
            ("recv", "<f8"),
            ("trace", "V16"),
        ]
    )


_HEADER = struct.Struct("<II")
_COLUMNS = "\0"
"""Ends the sensor ids of a chunk's header, its metric names following (a chunk written
before metrics were open has none: its columns are the known metrics)."""


@dataclass(frozen=True)
class Chunk:
    """Readings as accepted at ingest, before they have a sensor or metric index;
    ``columns`` names the metric of each column of ``values``."""

    ids: list[str]
    columns: tuple[str, ...]
    time: F64
    values: F64
    lat: F64
    lon: F64
    recv: F64
    trace: npt.NDArray[np.void]

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def concat(chunks: list[Chunk]) -> Chunk:
        union = NameTable()
        placed = [(union.lookup(list(chunk.columns)), chunk.values) for chunk in chunks]
        values = np.full((sum(len(chunk) for chunk in chunks), len(union)), np.nan)
        at = 0
        for columns, part in placed:
            values[at : at + len(part), columns] = part
            at += len(part)
        return Chunk(
            ids=[sensor for chunk in chunks for sensor in chunk.ids],
            columns=tuple(union.ids),
            values=values,
            **{
                name: np.concatenate([getattr(c, name) for c in chunks])
                for name in ("time", "lat", "lon", "recv", "trace")
            },
        )

    def encode(self) -> bytes:
        rows = np.empty(len(self.ids), dtype=_row(len(self.columns)))
        rows["time"], rows["values"], rows["lat"] = self.time, self.values, self.lat
        rows["lon"], rows["recv"], rows["trace"] = self.lon, self.recv, self.trace
        names = ("\n".join(self.ids) + _COLUMNS + "\n".join(self.columns)).encode()
        return _HEADER.pack(len(self.ids), len(names)) + names + rows.tobytes()

    @staticmethod
    def decode(data: bytes) -> Chunk:
        n, size = _HEADER.unpack_from(data)
        names = data[_HEADER.size : _HEADER.size + size].decode()
        ids, marked, listed = names.partition(_COLUMNS)
        columns = tuple(listed.split("\n") if listed else () if marked else KNOWN_METRICS)
        rows = np.frombuffer(data, dtype=_row(len(columns)), count=n, offset=_HEADER.size + size)
        return Chunk(
            ids=ids.split("\n") if n else [],
            columns=columns,
            time=rows["time"].copy(),
            values=rows["values"].copy(),
            lat=rows["lat"].copy(),
            lon=rows["lon"].copy(),
            recv=rows["recv"].copy(),
            trace=rows["trace"].copy(),
        )

    def to_batch(self, table: NameTable, metrics: NameTable, first_seq: int) -> Batch:
        """The chunk's readings indexed by the agent's sensor and metric tables."""
        columns = metrics.lookup(list(self.columns))
        values = np.full((len(self), len(metrics)), np.nan)
        values[:, columns] = self.values
        batch = new_batch(
            table.lookup(self.ids),
            self.time,
            values,
            self.lat,
            self.lon,
            self.recv,
            np.arange(first_seq, first_seq + len(self.ids), dtype=np.int64),
        )
        return replace(batch, trace=self.trace)
