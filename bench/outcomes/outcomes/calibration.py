"""A calibration model: the device's readings → the reference NO2, with how far off it
tends to be. Metal-oxide sensors answer roughly as a power of the gas's concentration and
cross-react with temperature and humidity, so it is a ridge regression on the readings and
the sensors' logarithms; its spread is the residuals' standard deviation on what it was
trained on. Trained only on hours whose reference values were published."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from outcomes.year import DEVICE, Hour

SENSORS = DEVICE[:5]
RIDGE = 1.0
"""L2 penalty on the standardised features."""


def features(hours: Sequence[Hour]) -> npt.NDArray[Any]:
    """One row per hour: the device's readings and the sensors' logarithms."""
    raw = np.array([[h.device[name] for name in DEVICE] for h in hours], dtype=float)
    sensors = raw[:, : len(SENSORS)]
    return np.hstack([raw, np.log(np.clip(sensors, 1.0, None))])


@dataclass(frozen=True)
class Calibration:
    mean: npt.NDArray[Any]
    scale: npt.NDArray[Any]
    weights: npt.NDArray[Any]
    bias: float
    spread: float
    """µg/m³: the residuals' standard deviation where it was trained."""
    trained_on: int

    @classmethod
    def train(cls, hours: Sequence[Hour]) -> Calibration:
        usable = [h for h in hours if h.complete and h.no2 is not None]
        if len(usable) < 2 * len(DEVICE):
            raise ValueError(f"{len(usable)} usable hours are too few to calibrate on")
        x = features(usable)
        y = np.array([h.no2 for h in usable], dtype=float)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        z = (x - mean) / scale
        centred = y - y.mean()
        weights = np.linalg.solve(z.T @ z + RIDGE * np.eye(z.shape[1]), z.T @ centred)
        residuals = centred - z @ weights
        return cls(mean, scale, weights, float(y.mean()), float(residuals.std()), len(usable))

    def predict(self, hours: Sequence[Hour]) -> npt.NDArray[Any]:
        """NO2 in µg/m³ for each hour (the device must have measured everything)."""
        estimates: npt.NDArray[Any] = (
            (features(hours) - self.mean) / self.scale
        ) @ self.weights + self.bias
        return estimates
