"""The README's figure: precision and recall per month of each approach, with the model
promotions marked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from matplotlib.figure import Figure

from outcomes.scoring import YEAR, Tally


def render(
    approaches: Mapping[str, Mapping[str, Tally]], promotions: Sequence[datetime], path: Path
) -> None:
    """``approaches``: name → tallies per month (``score``); ``promotions``: when a new
    version of the calibration model started serving."""
    months = sorted(m for m in next(iter(approaches.values())) if m != YEAR)
    at = {m: datetime.strptime(m, "%Y-%m") for m in months}
    figure = Figure(figsize=(10, 6), dpi=100)  # no pyplot: no display, no global state
    top, bottom = figure.subplots(2, 1, sharex=True)
    for name, tallies in approaches.items():
        for axis, measure in ((top, "precision"), (bottom, "recall")):
            points = [(at[m], getattr(tallies[m], measure)) for m in months]
            shown = [(t, v) for t, v in points if v is not None]
            axis.plot([t for t, _ in shown], [v for _, v in shown], marker="o", label=name)
    for axis, measure in ((top, "precision"), (bottom, "recall")):
        for moment in promotions:
            axis.axvline(moment, color="grey", linestyle=":", linewidth=1)
        axis.set_ylabel(measure)
        axis.set_ylim(-0.05, 1.05)
        axis.grid(axis="y", alpha=0.3)
    top.set_title("NO2 above 200 µg/m³: alerts against the reference analyzer, per month")
    top.legend(loc="upper left", fontsize="small")
    bottom.set_xlabel("month (dotted: a retrained model version promoted)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
