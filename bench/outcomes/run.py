"""Outcomes benchmark: alerts on a year of real low-cost sensor data scored against the
reference analyzer beside them (``bench/outcomes/data``, UCI Air Quality, CC BY 4.0).

Per month and over the year, for each approach: alerts, false alerts (reference NO2 at or
below 200 µg/m³), missed exceedance hours, precision, recall and the alerts that needed a
person. Approaches so far: the two baselines a city runs without aios
(``outcomes.baselines``). The replay through aios (edge gateway, intent, the calibration
model on Triton, retrained and rolled out on drift) is not built yet.

    .venv/bin/python bench/outcomes/run.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outcomes import baselines
from outcomes.scoring import YEAR, Tally, score
from outcomes.year import Hour, load

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


def main() -> None:
    hours = load()
    threshold = baselines.first_month_threshold(hours)
    print(f"{len(hours)} hours, {hours[0].time:%Y-%m-%d} to {hours[-1].time:%Y-%m-%d}")
    print(
        f"static threshold: {baselines.NO2_SENSOR} > {threshold:.0f} (fixed from the first month)"
    )
    for name, approach in APPROACHES.items():
        print()
        print(table(name, score(hours, approach(hours))))


if __name__ == "__main__":
    main()
