"""Replay benchmark: ``aiosctl replay``'s work beside the live runner's, on the same
readings and model, in one run, as a ratio.

1. The intent runner decides a pre-filled topic of readings with the anomaly model on
   Triton (``bench/pipeline``'s runner, shadow mode): readings/s from its first commit.
2. The replay of that window with the live spec: the decisions read back, each reading
   decided again and compared (``aios.runner.history`` + ``aios.runner.replay``, as the
   command runs them): readings/s from start to report.

It also prints how long an hour of 1,000 sensors at one reading a second (3.6 million
readings) would take at the measured replay rate.

    .venv/bin/python bench/replay/run.py [--readings 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import tritonclient.http as triton_http

from aios.api.replay import ReplayReport
from aios.api.runner import RunnerConfig
from aios.connectors import kafka
from aios.runner import history
from aios.runner.replay import Replay
from aios.stack.models import repository
from aios.stack.site import Site

HOUR_OF_A_CITY = 1000 * 3600
"""An hour of 1,000 sensors at one reading a second."""


def pipeline() -> ModuleType:
    """``bench/pipeline/run.py``: its readings, its runner and its rate."""
    path = Path(__file__).parents[1] / "pipeline" / "run.py"
    spec = importlib.util.spec_from_file_location("bench_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resident() -> int:
    """This process's resident memory now, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def replay(
    bootstrap: str, config: RunnerConfig, since: datetime
) -> tuple[float, int, ReplayReport]:
    """What ``aiosctl replay`` does after it has read the intent: readings/s, the bytes the
    decisions it holds take, and the report."""
    started = time.perf_counter()
    replayer = Replay(config, config.spec)
    found = history.window(bootstrap, config, since, datetime.now(UTC))
    before = resident()
    made = history.decisions(bootstrap, config, found)
    held = resident() - before
    for position, value in history.readings(bootstrap, found):
        replayer.add(position, value, made.get(position))
    report = replayer.report(found.since, found.until, "the live spec")
    return report.readings / (time.perf_counter() - started), held, report


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    bench = pipeline()
    directory = Path(tempfile.mkdtemp(prefix="aios-bench-replay-"))
    site = Site(directory)
    site.start(only={"kafka", "triton"})
    os.environ[kafka.EXTRA_CONFIG_ENV] = site.endpoints.kafka_config  # the site's admin
    try:
        shutil.copytree(
            repository(bench.MODEL, bench.VERSION) / bench.MODEL, directory / "models" / bench.MODEL
        )
        host = site.endpoints.triton_http.removeprefix("http://")
        triton_http.InferenceServerClient(host).load_model(bench.MODEL)
        stable = {
            "version": bench.VERSION,
            "model": bench.MODEL,
            "http": site.endpoints.triton_http,
            "grpc": site.endpoints.triton_grpc,
        }

        def statuses(_name: str) -> dict[str, Any]:
            return {"stable": stable, "canaryWeight": 0}

        bootstrap = site.endpoints.kafka_bootstrap
        since = datetime.now(UTC) - timedelta(seconds=1)
        source = "bench.readings"
        bench.topics(bootstrap, source)
        bench.fill(bootstrap, source, args.readings)
        runner = await bench.new_runner(site, source, True, args.batch, statuses)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        live = await asyncio.to_thread(
            bench.rate_after_start, bootstrap, runner.config.consumer_group, source, args.readings
        )
        stop.set()
        await task
        rate, held, report = await asyncio.to_thread(replay, bootstrap, runner.config, since)
    finally:
        site.stop()
        shutil.rmtree(directory, ignore_errors=True)

    print(f"\nReplay benchmark — {args.readings} readings, the anomaly model on Triton\n")
    print(f"{'path':52} {'readings/s':>12} {'of runner':>10}")
    print(f"{'intent runner (live), batches of ' + str(args.batch):52} {live:12.0f} {1:10.2f}")
    print(
        f"{'replay with the live spec (read, decide, compare)':52} {rate:12.0f} {rate / live:10.2f}"
    )
    each = held / max(1, report.compared)
    print(
        f"\n{report.compared} compared, {report.changed} changed (the live spec: expected 0); "
        f"the decisions held take {held / 2**20:.0f} MiB, about {each:.0f} bytes each.\n"
        f"An hour of 1,000 sensors at 1/s ({HOUR_OF_A_CITY:,} readings) replays in "
        f"{HOUR_OF_A_CITY / rate / 60:.0f} min at this rate, holding about "
        f"{HOUR_OF_A_CITY * each / 2**30:.1f} GiB of decisions"
    )


if __name__ == "__main__":
    asyncio.run(main())
