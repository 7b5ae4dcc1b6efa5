"""The year of readings: the UCI Air Quality data set (``bench/outcomes/data``, CC BY 4.0:
S. De Vito et al., see its README). Each hour has the device's readings (five metal-oxide
sensors, temperature and humidity) and the reference analyzer's values, which a city's
reference station publishes a day later."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "AirQualityUCI.csv"
MISSING = -200.0
"""How the data set marks a value it lacks."""
DEVICE = ("PT08_S1_CO", "PT08_S2_NMHC", "PT08_S3_NOx", "PT08_S4_NO2", "PT08_S5_O3", "T", "RH", "AH")
"""What the device measures: all an approach may decide on."""
REFERENCE = ("CO_GT", "NMHC_GT", "C6H6_GT", "NOx_GT", "NO2_GT")
"""What the reference analyzer measures: the truth, known only after ``LABEL_DELAY``."""
NO2_LIMIT = 200.0
"""µg/m³: the EU hourly limit value for NO2 (Directive 2008/50/EC)."""
LABEL_DELAY = timedelta(hours=24)


@dataclass(frozen=True)
class Hour:
    """One hourly average; ``None`` where the data set lacks a value."""

    time: datetime
    device: dict[str, float | None]
    reference: dict[str, float | None]

    @property
    def month(self) -> str:
        return f"{self.time:%Y-%m}"

    @property
    def no2(self) -> float | None:
        return self.reference["NO2_GT"]

    @property
    def exceeds(self) -> bool | None:
        """Whether the reference NO2 was above the limit; None when it was not measured."""
        return None if self.no2 is None else self.no2 > NO2_LIMIT

    @property
    def published(self) -> datetime:
        """When the reference station publishes this hour's values."""
        return self.time + LABEL_DELAY

    @property
    def complete(self) -> bool:
        """Whether the device measured everything this hour."""
        return all(v is not None for v in self.device.values())


def value(text: str) -> float | None:
    number = float(text)
    return None if number == MISSING else number


def load(path: Path = DATA) -> list[Hour]:
    """The hours in time order."""
    with path.open(newline="") as source:
        hours = [
            Hour(
                time=datetime.strptime(f"{row['Date']} {row['Time']}", "%d/%m/%Y %H:%M:%S"),
                device={name: value(row[name]) for name in DEVICE},
                reference={name: value(row[name]) for name in REFERENCE},
            )
            for row in csv.DictReader(source)
        ]
    return sorted(hours, key=lambda h: h.time)


def published_by(hours: Iterable[Hour], now: datetime) -> list[Hour]:
    """The hours whose reference values a city knows at ``now``: the training data then."""
    return [h for h in hours if h.published <= now]


def months(hours: Sequence[Hour]) -> list[str]:
    return sorted({h.month for h in hours})
