"""What a city does without aios, as alerts per hour; every alert goes to a person, since
neither baseline says how sure it is.

1. ``static_threshold``: one raw sensor, the one sold for NO2, with a threshold fixed from
   the first month: where a straight line fitted to that month's co-located reference NO2
   crosses the limit.
2. ``calibrated_once``: the calibration model trained on the first two months' published
   reference values and never updated."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from outcomes.calibration import Calibration
from outcomes.year import NO2_LIMIT, Hour, published_by

NO2_SENSOR = "PT08_S4_NO2"
FIRST_MONTH = timedelta(days=30)
FIRST_TWO_MONTHS = timedelta(days=61)


def first_month_line(hours: Sequence[Hour], sensor: str = NO2_SENSOR) -> tuple[float, float]:
    """Slope and intercept of the line fitted to the first month's published hours:
    the sensor's raw response → reference NO2."""
    known = published_by(hours, hours[0].time + FIRST_MONTH)
    pairs = [(h.device[sensor], h.no2) for h in known if h.device[sensor] is not None and h.no2]
    if len(pairs) < 2:
        raise ValueError("the first month has too few co-located hours to fix a threshold")
    raw, no2 = np.array(pairs, dtype=float).T
    slope, intercept = np.polyfit(raw, no2, 1)
    return float(slope), float(intercept)


def first_month_threshold(hours: Sequence[Hour], sensor: str = NO2_SENSOR) -> float:
    """The sensor's raw response at which that line reaches the NO2 limit."""
    slope, intercept = first_month_line(hours, sensor)
    return (NO2_LIMIT - intercept) / slope


def static_threshold(hours: Sequence[Hour], sensor: str = NO2_SENSOR) -> dict[datetime, bool]:
    """An alert wherever the line says the limit is passed (above the threshold for a
    sensor that rises with NO2, below it for one that falls)."""
    slope, intercept = first_month_line(hours, sensor)
    return {
        h.time: True
        for h in hours
        if (reading := h.device[sensor]) is not None and slope * reading + intercept > NO2_LIMIT
    }


def calibrated_once(hours: Sequence[Hour]) -> dict[datetime, bool]:
    model = Calibration.train(published_by(hours, hours[0].time + FIRST_TWO_MONTHS))
    measured = [h for h in hours if h.complete]
    estimates = model.predict(measured)
    return {h.time: True for h, no2 in zip(measured, estimates, strict=True) if no2 > NO2_LIMIT}
