"""Chain output → Kafka records (the ``Reading`` contract), and their framing in the buffer.

A buffered record carries its topic, key, ``traceparent`` and value, so a configuration
that changes the sink topic never redirects what was buffered under the previous one.
The JSON is written directly (not through pydantic, which costs more than the whole filter
chain per reading); a unit test parses every shape of output with ``Reading``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from aios.edge.columns import AGGREGATE, AGGREGATES, ANOMALY, Batch
from aios.edge.filters import NO_CELL, Presentation

_FRAME = struct.Struct("<BHB")


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    traceparent: bytes
    value: bytes

    def frame(self) -> bytes:
        topic = self.topic.encode()
        head = _FRAME.pack(len(topic), len(self.key), len(self.traceparent))
        return head + topic + self.key + self.traceparent + self.value

    @staticmethod
    def unframe(data: bytes) -> Record:
        t, k, p = _FRAME.unpack_from(data)
        at = _FRAME.size
        topic = data[at : at + t].decode()
        key = data[at + t : at + t + k]
        traceparent = data[at + t + k : at + t + k + p]
        return Record(topic, key, traceparent, data[at + t + k + p :])


@dataclass(frozen=True)
class Lineage:
    gateway: str
    site: str
    generation: int
    digest: str
    topic: str


def _number(value: float) -> str:
    return repr(float(value))


def encode(
    batch: Batch,
    presentation: Presentation,
    lineage: Lineage,
    traced: Mapping[int, bytes] | None = None,
) -> list[Record]:
    """One ``Reading`` per output row. eventId: ``<sensor>:<epoch-ms>:<seq>`` for a reading,
    ``<sensor>:<window-start-ms>:<aggregate>`` for a window aggregate (deterministic).
    ``traced``: the ``traceparent`` of rows whose spans were recorded (``aios.edge.spans``);
    the others carry their trace id and a span id of their own."""
    if not len(batch):
        return []
    omit = presentation.omit
    names = presentation.names[batch.sid]
    stamps = np.datetime_as_string((batch.time * 1000).astype("datetime64[ms]"), unit="ms")
    millis = np.floor(batch.time * 1000).astype(np.int64)
    present = ~np.isnan(batch.values)
    metric_names = presentation.metrics
    for column, metric in enumerate(metric_names[: present.shape[1]]):
        if metric in omit:
            present[:, column] = False
    lineage_json = (
        f'"lineage":{{"gateway":"{lineage.gateway}","configGeneration":{lineage.generation},'
        f'"filterChain":"{lineage.digest}"}}'
    )
    site = "" if "site" in omit else f'"site":"{lineage.site}",'
    with_location = not ({"lat", "lon"} & omit)
    grid = presentation.grid_meters if "cell" not in omit else None
    traces = batch.trace.tobytes().hex()
    spans = np.frombuffer(np.random.bytes(8 * len(batch)), dtype="V8").tobytes().hex()
    records = []
    topic = lineage.topic
    for i in range(len(batch)):
        columns = np.flatnonzero(present[i])
        if not len(columns):
            continue
        name = names[i]
        metrics = ",".join(f'"{metric_names[c]}":{_number(batch.values[i, c])}' for c in columns)
        flags = []
        if batch.flags[i] & ANOMALY:
            flags.append('"anomaly"')
        if batch.flags[i] & AGGREGATE:
            agg = AGGREGATES[batch.agg[i]]
            flags += ['"aggregate"', f'"agg:{agg}"', f'"window:{int(batch.window[i])}s"']
            event = f"{name}:{millis[i]}:{agg}"
        else:
            event = f"{name}:{millis[i]}:{batch.seq[i]}"
        place = ""
        if with_location and not np.isnan(batch.lat[i]):
            place = f'"lat":{_number(batch.lat[i])},"lon":{_number(batch.lon[i])},'
        if grid and batch.cell_row[i] != NO_CELL:
            place += f'"cell":"{grid}m:{batch.cell_row[i]}:{batch.cell_col[i]}",'
        value = (
            f'{{"eventId":"{event}","sensorId":"{name}","time":"{stamps[i]}Z",'
            f'"metrics":{{{metrics}}},{site}{place}"flags":[{",".join(flags)}],{lineage_json}}}'
        )
        traceparent = (traced or {}).get(i) or (
            f"00-{traces[32 * i : 32 * i + 32]}-{spans[16 * i : 16 * i + 16]}-01".encode()
        )
        records.append(Record(topic, name.encode(), traceparent, value.encode()))
    return records
