"""Outcomes benchmark: alerts on a year of real low-cost sensor data scored against the
reference analyzer beside them (``bench/outcomes/data``, UCI Air Quality, CC BY 4.0).

Per month and over the year, for each approach: alerts, false alerts (reference NO2 at or
below 200 µg/m³), missed exceedance hours, precision, recall and the alerts that needed a
person. The two baselines a city runs without aios (``outcomes.baselines``) take seconds;
``--live`` starts a local site, installs aios and replays the year through it
(``outcomes.live``: edge gateway, intent, the calibration model on Triton, delayed labels,
retrained versions rolled out on drift), then prints aios's table, the rollouts and what
they cost, and renders the figure.

    .venv/bin/python bench/outcomes/run.py
    .venv/bin/python bench/outcomes/run.py --live --plot docs/outcomes.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outcomes import baselines
from outcomes.live import Outcome, Replay
from outcomes.plot import render
from outcomes.scoring import YEAR, Tally, score
from outcomes.year import Hour, load

NAMESPACE = "outcomes"

APPROACHES: dict[str, Callable[[Sequence[Hour]], dict[datetime, bool]]] = {
    "static threshold": baselines.static_threshold,
    "calibrated once": baselines.calibrated_once,
}


def ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def table(name: str, tallies: dict[str, Tally]) -> str:
    lines = [
        f"{name}",
        f"{'month':<8} {'exceed':>6} {'alerts':>6} {'false':>6} {'missed':>6} "
        f"{'prec':>5} {'recall':>6} {'review':>6}",
    ]
    for month in [*sorted(m for m in tallies if m != YEAR), YEAR]:
        t = tallies[month]
        lines.append(
            f"{month:<8} {t.exceedances:>6} {t.alerts:>6} {t.false_alerts:>6} {t.missed:>6} "
            f"{ratio(t.precision):>5} {ratio(t.recall):>6} {t.reviewed:>6}"
        )
    return "\n".join(lines)


def through_aios(hours: Sequence[Hour], seconds_per_hour: float) -> Outcome:
    """The year through a local site of its own, started and stopped here."""
    from aios.connectors import kafka
    from aios.stack import release
    from aios.stack.site import Site

    with tempfile.TemporaryDirectory(prefix="aios-outcomes-") as work:
        bucket = Path(tempfile.mkdtemp(prefix="aios-outcomes-models-"))
        site = Site(Path(work) / "site")
        site.start()
        try:
            os.environ[kafka.EXTRA_CONFIG_ENV] = site.endpoints.kafka_config
            release.install(site, {"operator": {"replicas": 1}, "site": {"name": NAMESPACE}})
            site.kubectl(["create", "namespace", NAMESPACE])
            replay = Replay(
                site, NAMESPACE, Path(work) / "gateway", bucket, hours, seconds_per_hour
            )
            try:
                return replay.run(hours)
            finally:
                replay.close()
        finally:
            site.stop()
            shutil.rmtree(bucket, ignore_errors=True)


def rollouts(outcome: Outcome) -> str:
    lines = [
        "rollouts (drift: the serving version's RMSE over the last week of published hours)",
        f"{'found at':<17} {'version':<11} {'rmse':>5} {'spread':>6} {'phase':<10} {'wall s':>6}",
    ]
    for r in outcome.rollouts:
        lines.append(
            f"{r.at:%Y-%m-%d %H:%M} {r.version:<11} {r.drift.rmse:>5.1f} {r.drift.spread:>6.1f} "
            f"{r.phase:<10} {r.seconds:>6.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--live", action="store_true", help="replay the year through aios")
    parser.add_argument("--seconds-per-hour", type=float, default=0.05)
    parser.add_argument("--plot", type=Path, help="render the figure to this PNG")
    args = parser.parse_args()
    hours = load()
    threshold = baselines.first_month_threshold(hours)
    print(f"{len(hours)} hours, {hours[0].time:%Y-%m-%d} to {hours[-1].time:%Y-%m-%d}")
    print(
        f"static threshold: {baselines.NO2_SENSOR} > {threshold:.0f} (fixed from the first month)"
    )
    approaches = {name: score(hours, approach(hours)) for name, approach in APPROACHES.items()}
    promotions: list[datetime] = []
    if args.live:
        began = time.monotonic()
        outcome = through_aios(hours, args.seconds_per_hour)
        approaches["aios"] = score(hours, outcome.alerts)
        promotions = [r.at for r in outcome.rollouts if r.phase == "Promoted"]
    for name, tallies in approaches.items():
        print()
        print(table(name, tallies))
    if args.live:
        print()
        print(rollouts(outcome))
        print(
            f"\nreplayed {len(outcome.readings)} readings ({outcome.silent} silent hours) in "
            f"{outcome.seconds:.0f} s; with the site's start {time.monotonic() - began:.0f} s"
        )
    if args.plot:
        render(approaches, promotions, args.plot)
        print(f"figure: {args.plot}")


if __name__ == "__main__":
    main()
