"""Edge agent benchmark: one run, same input file, side by side, ratios printed.

1. Readings per second on one core through the filter chain, from JSON lines to encoded
   Kafka records: aios's full chain (validate, rate limit, deadband, anomaly, window,
   anonymise with k-anonymity, differential privacy), aios's stateless subset, and Benthos
   (v4.60, ``GOMAXPROCS=1``, pinned to the same core) running the closest equivalent
   pipeline it can express without caches per key: parse, validate, deduplicate, keyed
   hash of the device id, grid cell, drop exact location.
2. Disk buffer: append (fsync on an interval) and replay throughput, against writing and
   reading the same bytes with plain ``os.write``/``read`` (the machine's limit).
3. Peak memory while a one-hour backlog builds (Kafka unreachable): the agent's RSS
   against the backlog it keeps on disk (an in-memory buffer would need all of it).

    hack/obtain.sh benthos && .venv/bin/python bench/edge/run.py [--readings 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aios.api.edge_gateway import FilterStep
from aios.edge.columns import Chunk, NameTable
from aios.edge.filters import Chain, Context
from aios.edge.parse import parse_payload
from aios.edge.records import Lineage, encode
from aios.edge.segments import SegmentLog
from aios.edge.simulator import Faults, Simulator, city_sensors, payload_lines

CORE = 0
HASH_KEY = "bench-key"
VALIDATE: dict[str, Any] = {
    "validate": {
        "ranges": {
            "pm25": {"min": 0, "max": 1000},
            "pm10": {"min": 0, "max": 2000},
            "no2": {"min": 0, "max": 2000},
            "o3": {"min": 0, "max": 1000},
            "temperature": {"min": -40, "max": 60},
            "humidity": {"min": 0, "max": 100},
        },
        "maxFutureSkewSeconds": 30,
        "maxAgeSeconds": 86400,
    }
}
ANONYMISE: dict[str, Any] = {"anonymise": {"hashDeviceIds": True, "gridCellMeters": 1500}}
FULL: list[dict[str, Any]] = [
    VALIDATE,
    {"rateLimit": {"perSensorPerSecond": 1}},
    {"deadband": {"threshold": 0.5}},
    {"anomaly": {"alpha": 0.1, "zThreshold": 3}},
    {"window": {"sizeSeconds": 60, "aggregates": ["mean", "max", "p95", "count"]}},
    {"anonymise": {"hashDeviceIds": True, "gridCellMeters": 1500, "kAnonymity": 3}},
    {"differentialPrivacy": {"epsilon": 0.5, "sensitivity": 1, "budgetPerWindow": 20}},
]
STATELESS: list[dict[str, Any]] = [VALIDATE, ANONYMISE]


def make_input(path: Path, readings: int, sensors: int) -> float:
    """JSON lines from the simulator, ending now; returns the first reading's time."""
    simulator = Simulator(city_sensors(sensors), faults=Faults(skewed=0.0))
    ticks = readings // sensors
    start = time.time() - ticks
    with path.open("wb") as out:
        for tick in range(ticks):
            out.write(b"\n".join(payload_lines(simulator.tick(start + tick))) + b"\n")
    return start


def pin() -> None:
    os.sched_setaffinity(0, {CORE})


def run_chain(path: Path, filters: list[dict[str, Any]]) -> tuple[int, int, float]:
    """Lines → parse → chain → encoded records, on one core: (readings, records, seconds)."""
    pin()
    lines = path.read_bytes().splitlines()
    table = NameTable()
    chain = Chain([FilterStep.model_validate(f) for f in filters], [], table, HASH_KEY.encode())
    lineage = Lineage("bench", "bench", 1, "sha256:bench", "bench")
    records = 0
    began = time.perf_counter()
    for first in range(0, len(lines), 4096):
        chunks = [parse_payload(line, time.time())[0] for line in lines[first : first + 4096]]
        merged = Chunk.concat(chunks)
        batch = merged.to_batch(table, chain.metrics, first)
        out = chain.process(batch, Context(now=float(batch.recv.max()), table=table))
        records += len(encode(out, chain.presentation(), lineage))
    drained = chain.drain(Context(now=time.time(), table=table))
    records += len(encode(drained, chain.presentation(), lineage))
    return len(lines), records, time.perf_counter() - began


BENTHOS_CONFIG = """
input:
  file:
    paths: [ "{path}" ]
    scanner:
      lines: {{}}
pipeline:
  threads: 1
  processors:
    - mapping: |
        root = this
        let now = now().ts_unix()
        let t = this.time.ts_unix()
        let m = this.metrics
        root = if $t > $now + 30 || $t < $now - 86400 ||
          $m.pm25.or(0) < 0 || $m.pm25.or(0) > 1000 || $m.pm10.or(0) < 0 || $m.pm10.or(0) > 2000 ||
          $m.no2.or(0) < 0 || $m.no2.or(0) > 2000 || $m.o3.or(0) < 0 || $m.o3.or(0) > 1000 ||
          $m.temperature.or(0) < -40 || $m.temperature.or(0) > 60 ||
          $m.humidity.or(0) < 0 || $m.humidity.or(0) > 100 {{ deleted() }} else {{ this }}
    - dedupe:
        cache: seen
        key: '${{! json("sensorId") }}:${{! json("time") }}'
    - mapping: |
        root = this
        let digest = this.sensorId.hash("hmac_sha256", "{key}").encode("hex")
        root.sensorId = "anon-" + $digest.slice(0, 20)
        let row = (this.lat / 0.013474).floor()
        let width = 0.013474 / ($row * 0.013474 + 0.006737).cos().abs()
        root.cell = "1500m:%v:%v".format($row, (this.lon / $width).floor())
        root.lat = deleted()
        root.lon = deleted()
        root.eventId = root.sensorId + ":" + this.time
        root.site = "bench"
cache_resources:
  - label: seen
    memory:
      default_ttl: 3600s
output:
  file:
    path: "{out}"
    codec: lines
logger:
  level: warn
"""


def run_benthos(path: Path, work: Path) -> tuple[int, float] | str:
    from aios.stack.components import BENTHOS, ComponentUnavailable

    try:
        binary = BENTHOS.binary()
    except ComponentUnavailable as error:
        return str(error).splitlines()[0]
    config = work / "benthos.yaml"
    out = work / "benthos.out"
    config.write_text(BENTHOS_CONFIG.format(path=path, out=out, key=HASH_KEY))
    env = {**os.environ, "GOMAXPROCS": "1"}
    began = time.perf_counter()
    result = subprocess.run(
        ["taskset", "-c", str(CORE), str(binary), "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        return f"benthos failed: {result.stderr[-500:]}"
    with out.open("rb") as handle:
        return sum(1 for _ in handle), seconds


def buffer_throughput(work: Path, records: int = 200_000, size: int = 350) -> dict[str, float]:
    payload = [os.urandom(size // 2).hex().encode()[:size] for _ in range(1000)]
    log = SegmentLog(work / "buffer", max_bytes=1 << 34, fsync="interval")
    began = time.perf_counter()
    for _ in range(records // 1000):
        log.append(payload)
    log.sync()
    write = time.perf_counter() - began
    began = time.perf_counter()
    at, read = log.start, 0
    while True:
        first, got = log.read(at, 5000)
        if not got:
            break
        read += len(got)
        at = first + len(got)
    replay = time.perf_counter() - began
    assert read == records
    raw = work / "raw.bin"
    blob = b"".join(payload)
    began = time.perf_counter()
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    last = time.monotonic()
    for _ in range(records // 1000):
        os.write(fd, blob)
        if time.monotonic() - last >= 1.0:
            os.fsync(fd)
            last = time.monotonic()
    os.fsync(fd)
    os.close(fd)
    raw_write = time.perf_counter() - began
    began = time.perf_counter()
    with raw.open("rb") as handle:
        while handle.read(1 << 20):
            pass
    raw_read = time.perf_counter() - began
    return {
        "append": records / write,
        "replay": records / replay,
        "raw_write": records / raw_write,
        "raw_read": records / raw_read,
        "mb": records * size / 1e6,
    }


BACKLOG_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
from aios.edge.agent import Options, Processor
from aios.edge.protocol import AgentConfig
from aios.edge.simulator import Faults, Simulator, city_sensors
from aios.edge.telemetry import Counters
root, sensors, seconds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
config = AgentConfig.model_validate({
    "gateway": "bench/backlog", "generation": 1, "digest": "sha256:bench", "site": "bench",
    "filters": json.loads(sys.argv[4]), "sink": {"kafkaTopic": "bench"},
    "buffer": {"maxBytes": 4 << 30, "fsync": "interval"},
})
processor = Processor(Options("bench/backlog", root), Counters())
processor.offer(config)
simulator = Simulator(city_sensors(sensors), faults=Faults(skewed=0.0))
start = time.time() - seconds
for tick in range(seconds):
    chunk = simulator.tick(start + tick)
    processor.journal.append([chunk.encode()])
    while processor.step():
        pass
processor.checkpoint()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak, "backlog": processor.outbox.size_bytes,
                  "records": processor.outbox.end}))
"""


def backlog_memory(work: Path, sensors: int) -> dict[str, float]:
    """An hour of readings with Kafka away: nothing leaves, everything stays on disk."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            BACKLOG_SCRIPT,
            str(work / "agent"),
            str(sensors),
            "3600",
            json.dumps([VALIDATE]),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--sensors", type=int, default=500)
    parser.add_argument("--backlog-sensors", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aios-bench-edge-") as tmp:
        work = Path(tmp)
        path = work / "readings.jsonl"
        make_input(path, args.readings, args.sensors)
        print(
            f"input: {path.stat().st_size / 1e6:.1f} MB, {args.readings} readings, "
            f"{args.sensors} sensors, one core (cpu {CORE})"
        )
        full = run_chain(path, FULL)
        stateless = run_chain(path, STATELESS)
        benthos = run_benthos(path, work)
        print("\n1. filter chain, readings/s on one core")
        rows = [("aios full chain", full), ("aios validate+anonymise", stateless)]
        for name, (n, out, seconds) in rows:
            print(f"   {name:<28} {n / seconds:>10,.0f}/s  ({out} records out)")
        if isinstance(benthos, str):
            print(f"   benthos                      not run: {benthos}")
        else:
            out, seconds = benthos
            rate = args.readings / seconds
            print(f"   {'benthos (closest pipeline)':<28} {rate:>10,.0f}/s  ({out} records out)")
            same = stateless[0] / stateless[2] / rate
            print(f"   ratio aios validate+anonymise / benthos: {same:.2f}")
            print(f"   ratio aios full chain / benthos:         {full[0] / full[2] / rate:.2f}")
        buffer = buffer_throughput(work)
        print(f"\n2. disk buffer ({buffer['mb']:.0f} MB of 350-byte records)")
        for name, ours, plain in (
            ("append", "append", "raw_write"),
            ("replay", "replay", "raw_read"),
        ):
            print(
                f"   {name} {buffer[ours]:>10,.0f} records/s   plain {buffer[plain]:>10,.0f}/s"
                f"   ratio {buffer[ours] / buffer[plain]:.2f}"
            )
        memory = backlog_memory(work, args.backlog_sensors)
        print(f"\n3. one-hour backlog, {args.backlog_sensors} sensors at 1 Hz, Kafka away")
        backlog, peak = memory["backlog"] / 1e6, memory["peak"] / 1e6
        print(
            f"   backlog on disk {backlog:,.0f} MB ({memory['records']:,.0f} records),"
            f" agent peak RSS {peak:,.0f} MB"
        )
        print(
            f"   ratio peak RSS / backlog (an in-memory buffer needs ≥ 1): "
            f"{memory['peak'] / memory['backlog']:.2f}"
        )
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        print(f"\nbench process peak RSS {own:,.0f} MB")


if __name__ == "__main__":
    main()
