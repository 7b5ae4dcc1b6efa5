"""When the city retrains: the served model's error against the reference station's
published values, checked once a day. Sensors age and cross-react, so a calibration fitted
on last season drifts; once its error over the last week of published hours passes
``TOLERANCE`` times the spread it was trained with, a new version is trained on the last
``TRAINING_WINDOW`` of published hours and rolled out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from outcomes.calibration import Calibration
from outcomes.year import Hour, published_by

TOLERANCE = 1.5
"""Error (RMSE) against the labels, in multiples of the model's training spread, that
counts as drift."""
ERROR_WINDOW = timedelta(days=7)
MIN_LABELLED = 72
"""Hours with a label and a served estimate the check needs before it judges."""
TRAINING_WINDOW = timedelta(days=30)
CHECK_EVERY = timedelta(days=1)


@dataclass(frozen=True)
class Drift:
    """What the daily check found."""

    at: datetime
    rmse: float
    """µg/m³, over the hours judged."""
    judged: int
    spread: float
    """µg/m³: the serving version's training spread."""

    @property
    def drifted(self) -> bool:
        return self.judged >= MIN_LABELLED and self.rmse > TOLERANCE * self.spread


def check(
    now: datetime, served: Mapping[datetime, float], labels: Mapping[datetime, float], spread: float
) -> Drift:
    """The serving version's estimates of the last ``ERROR_WINDOW`` of labelled hours
    against their labels (``served``: hour → the NO2 the serving version answered, none
    from the versions before it; ``labels``: hour → the reference NO2 published by
    ``now``)."""
    since = now - ERROR_WINDOW
    errors = [served[t] - no2 for t, no2 in labels.items() if t >= since and t in served]
    rmse = math.sqrt(sum(e * e for e in errors) / len(errors)) if errors else 0.0
    return Drift(now, rmse, len(errors), spread)


def retrain(hours: Sequence[Hour], now: datetime) -> Calibration:
    """A new version from the hours published in the last ``TRAINING_WINDOW``."""
    return Calibration.train(
        [h for h in published_by(hours, now) if h.time >= now - TRAINING_WINDOW]
    )
