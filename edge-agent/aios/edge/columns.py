"""Readings as columns: every filter works on a whole batch with numpy, never per reading."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field, replace
from typing import Any, get_args

import numpy as np
import numpy.typing as npt

from aios.api.edge_gateway import Metric

METRICS: tuple[str, ...] = get_args(Metric)
"""Column order of ``Batch.values``."""
ANOMALY = np.uint8(1)
AGGREGATE = np.uint8(2)
AGGREGATES: tuple[str, ...] = ("mean", "min", "max", "p95", "count")
RAW = -1

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass
class Batch:
    """A batch of readings, one array per field, row ``i`` being one reading.

    ``sid`` indexes the agent's sensor table; ``values`` has one column per metric in
    ``METRICS`` order, NaN where a reading lacks the metric; ``recv`` is when the agent
    accepted it (the clock timestamps are validated against, so a replay decides alike).
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
        return Batch(
            **{name: np.concatenate([getattr(b, name) for b in batches]) for name in _FIELDS}
        )

    @staticmethod
    def empty() -> Batch:
        return new_batch(np.zeros(0, np.int32), np.zeros(0), np.zeros((0, len(METRICS))))


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
        values=values.astype(np.float64).reshape(n, len(METRICS)),
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


def grow(array: npt.NDArray[Any], size: int, fill: float | int | bool) -> npt.NDArray[Any]:
    """Per-sensor state extended to ``size`` sensors (new sensors start at ``fill``)."""
    if len(array) >= size:
        return array
    extra = np.full((size - len(array), *array.shape[1:]), fill, dtype=array.dtype)
    return np.concatenate([array, extra])


@dataclass
class SensorTable:
    """Sensor ids ↔ small integers, stable for the agent's lifetime (state is indexed by it)."""

    ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def lookup(self, ids: list[str]) -> npt.NDArray[np.int32]:
        index = self.index
        for sensor in ids:
            if sensor not in index:
                index[sensor] = len(self.ids)
                self.ids.append(sensor)
        return np.fromiter((index[s] for s in ids), dtype=np.int32, count=len(ids))

    def names(self) -> npt.NDArray[np.object_]:
        return np.array(self.ids, dtype=object)

    def __len__(self) -> int:
        return len(self.ids)


# -- the journal's chunk codec: one ingest call's readings, as raw columns -------------
_ROW = np.dtype(
    [
        ("time", "<f8"),
        ("values", "<f8", (len(METRICS),)),
        ("lat", "<f8"),
        ("lon", "<f8"),
        ("recv", "<f8"),
        ("trace", "V16"),
    ]
)
_HEADER = struct.Struct("<II")


@dataclass(frozen=True)
class Chunk:
    """Readings as accepted at ingest, before they have a sensor index."""

    ids: list[str]
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
        return Chunk(
            ids=[sensor for chunk in chunks for sensor in chunk.ids],
            **{
                name: np.concatenate([getattr(c, name) for c in chunks])
                for name in ("time", "values", "lat", "lon", "recv", "trace")
            },
        )

    def encode(self) -> bytes:
        rows = np.empty(len(self.ids), dtype=_ROW)
        rows["time"], rows["values"], rows["lat"] = self.time, self.values, self.lat
        rows["lon"], rows["recv"], rows["trace"] = self.lon, self.recv, self.trace
        names = "\n".join(self.ids).encode()
        return _HEADER.pack(len(self.ids), len(names)) + names + rows.tobytes()

    @staticmethod
    def decode(data: bytes) -> Chunk:
        n, size = _HEADER.unpack_from(data)
        names = data[_HEADER.size : _HEADER.size + size].decode()
        rows = np.frombuffer(data, dtype=_ROW, count=n, offset=_HEADER.size + size)
        return Chunk(
            ids=names.split("\n") if n else [],
            time=rows["time"].copy(),
            values=rows["values"].copy(),
            lat=rows["lat"].copy(),
            lon=rows["lon"].copy(),
            recv=rows["recv"].copy(),
            trace=rows["trace"].copy(),
        )

    def to_batch(self, table: SensorTable, first_seq: int) -> Batch:
        batch = new_batch(
            table.lookup(self.ids),
            self.time,
            self.values,
            self.lat,
            self.lon,
            self.recv,
            np.arange(first_seq, first_seq + len(self.ids), dtype=np.int64),
        )
        return replace(batch, trace=self.trace)
