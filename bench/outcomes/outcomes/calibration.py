"""The calibration model: the device's readings → the reference NO2, with a confidence. A
ridge regression on what ``calibration_features`` of the serving code (``hack/models/
model.py``, which Triton runs) makes of the readings, so the model trained here and the one
served answer alike; its spread is the residuals' standard deviation on what it was
trained on. Trained only on hours whose reference values were published."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aios.connectors.model_server import load_module
from aios.stack.models import SOURCES
from outcomes.year import DEVICE, NO2_LIMIT, Hour

RIDGE = 1.0
"""L2 penalty on the standardised features."""
RUNTIME = load_module(SOURCES / "model.py", "aios_model_runtime")
"""The serving code, loaded as the model servers load it."""


def channels(hours: Sequence[Hour]) -> npt.NDArray[Any]:
    """The device's readings, one row per hour, in ``DEVICE`` order (the model's input)."""
    return np.array([[h.device[name] for name in DEVICE] for h in hours], dtype=np.float32)


@dataclass(frozen=True)
class Calibration:
    mean: npt.NDArray[Any]
    scale: npt.NDArray[Any]
    coef: npt.NDArray[Any]
    bias: float
    spread: float
    """µg/m³: the residuals' standard deviation where it was trained."""
    trained_on: int

    @classmethod
    def train(cls, hours: Sequence[Hour]) -> Calibration:
        usable = [h for h in hours if h.complete and h.no2 is not None]
        if len(usable) < 2 * len(DEVICE):
            raise ValueError(f"{len(usable)} usable hours are too few to calibrate on")
        x = RUNTIME.calibration_features(channels(usable))
        y = np.array([h.no2 for h in usable], dtype=float)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        z = (x - mean) / scale
        centred = y - y.mean()
        coef = np.linalg.solve(z.T @ z + RIDGE * np.eye(z.shape[1]), z.T @ centred)
        residuals = centred - z @ coef
        return cls(mean, scale, coef, float(y.mean()), float(residuals.std()), len(usable))

    def weights(self) -> dict[str, npt.NDArray[Any]]:
        """What the serving code loads (``weights.npz``)."""
        return {
            "kind": np.array("calibration"),
            "mean": self.mean,
            "scale": self.scale,
            "coef": self.coef,
            "bias": np.array(self.bias),
            "spread": np.array(max(self.spread, 1e-6)),
            "limit": np.array(NO2_LIMIT),
        }

    def answer(self, hours: Sequence[Hour]) -> dict[str, npt.NDArray[Any]]:
        """The served model's outputs for each hour (the device must have measured all)."""
        answers: dict[str, npt.NDArray[Any]] = RUNTIME.predict(
            self.weights(), {"features": channels(hours)}
        )
        return answers

    def predict(self, hours: Sequence[Hour]) -> npt.NDArray[Any]:
        """NO2 in µg/m³ for each hour."""
        return self.answer(hours)["no2"]
