"""An approach's alerts scored against the reference analyzer, per month and over the year.

An alert is an hour the approach judged NO2 above the limit; whether it needed a person
(an approval, a manual review) is the review load. Hours without a reference NO2 cannot be
judged: alerts in them are counted apart, never as right or wrong."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from outcomes.year import Hour

YEAR = "all"
"""The key of the whole year's tally."""


@dataclass
class Tally:
    hours: int = 0
    """Hours with a reference NO2."""
    exceedances: int = 0
    alerts: int = 0
    false_alerts: int = 0
    """Alert hours whose reference NO2 was at or below the limit."""
    missed: int = 0
    """Exceedance hours without an alert."""
    reviewed: int = 0
    """Alerts that needed a person."""
    unjudged: int = 0
    """Alerts in hours without a reference NO2."""

    @property
    def precision(self) -> float | None:
        return (self.alerts - self.false_alerts) / self.alerts if self.alerts else None

    @property
    def recall(self) -> float | None:
        caught = self.exceedances - self.missed
        return caught / self.exceedances if self.exceedances else None


def score(hours: Sequence[Hour], alerts: Mapping[datetime, bool]) -> dict[str, Tally]:
    """The tallies per month (``YYYY-MM``) and for the ``YEAR``; ``alerts`` maps each alert
    hour to whether it needed a person."""
    strays = set(alerts) - {h.time for h in hours}
    if strays:
        raise ValueError(f"alerts for hours the year does not have: {sorted(strays)[:3]}")
    tallies: dict[str, Tally] = {}
    for hour in hours:
        for tally in (tallies.setdefault(hour.month, Tally()), tallies.setdefault(YEAR, Tally())):
            alerted = hour.time in alerts
            if hour.exceeds is None:
                tally.unjudged += alerted
                tally.reviewed += alerted and alerts[hour.time]
                continue
            tally.hours += 1
            tally.exceedances += hour.exceeds
            tally.alerts += alerted
            tally.false_alerts += alerted and not hour.exceeds
            tally.missed += hour.exceeds and not alerted
            tally.reviewed += alerted and alerts[hour.time]
    return tallies
