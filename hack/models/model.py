"""The air-quality models at serving time: numpy only, the same file for Triton and KServe.

The build (``hack/models/build.py``) copies this file into each model version's
repository as ``<model>/1/model.py`` next to ``weights.npz``. Triton's Python backend
runs ``TritonPythonModel``; aios's KServe ModelServer (``aios.connectors.model_server``)
imports ``SIGNATURES`` and ``predict``. Nothing here imports Triton at module level, so
both runtimes load the same artefact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

FEATURES = ("pm25", "pm10", "no2", "o3", "temperature", "humidity")

SIGNATURES = {
    "anomaly": {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 6]}],
        "outputs": [
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "confidence", "datatype": "FP32", "shape": [-1]},
        ],
    },
    "calibration": {
        # A low-cost device's raw channels (five metal-oxide sensors, temperature, relative
        # and absolute humidity) → the NO2 a reference analyzer would measure.
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 8]}],
        "outputs": [
            {"name": "no2", "datatype": "FP32", "shape": [-1]},
            {"name": "confidence", "datatype": "FP32", "shape": [-1]},
        ],
    },
    "forecast": {
        "inputs": [{"name": "history", "datatype": "FP32", "shape": [-1, 24]}],
        "outputs": [
            {"name": "forecast", "datatype": "FP32", "shape": [-1, 24]},
            {"name": "confidence", "datatype": "FP32", "shape": [-1]},
        ],
    },
}


def load(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / "weights.npz") as weights:
        return {name: weights[name] for name in weights.files}


def kind(weights: dict[str, np.ndarray]) -> str:
    return str(weights["kind"])


def anomaly_features(x: np.ndarray) -> np.ndarray:
    """Raw readings → what the model sees: log pollutants, weather, the PM2.5/PM10 ratio."""
    x = np.asarray(x, dtype=np.float64)
    pollutants = np.log1p(np.clip(x[:, :4], 0, None))
    ratio = np.clip(x[:, 0], 0, None) / (np.clip(x[:, 1], 0, None) + 1.0)
    return np.column_stack([pollutants, x[:, 4:6], ratio])


def calibration_features(x: np.ndarray) -> np.ndarray:
    """The device's channels and the five sensors' logarithms (a metal-oxide sensor answers
    roughly as a power of the gas's concentration)."""
    x = np.asarray(x, dtype=np.float64)
    return np.hstack([x, np.log(np.clip(x[:, :5], 1.0, None))])


_ERF = np.frompyfunc(math.erf, 1, 1)


def calibrate(weights: dict[str, np.ndarray], x: np.ndarray) -> dict[str, np.ndarray]:
    """NO2 in µg/m³, and the probability that it is on the side of the limit it says,
    were the error normal with the spread seen in training."""
    z = (calibration_features(x) - weights["mean"]) / weights["scale"]
    no2 = z @ weights["coef"] + weights["bias"]
    margin = np.abs(no2 - weights["limit"]) / (weights["spread"] * math.sqrt(2.0))
    return {
        "no2": no2.astype(np.float32),
        "confidence": (0.5 * (1.0 + _ERF(margin).astype(np.float64))).astype(np.float32),
    }


def predict(weights: dict[str, np.ndarray], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One batch in, every output out (float32)."""
    if kind(weights) == "calibration":
        return calibrate(weights, inputs["features"])
    if kind(weights) == "anomaly":
        z = (anomaly_features(inputs["features"]) - weights["mean"]) / weights["std"]
        layers = int(weights["layers"])
        for i in range(layers):
            z = z @ weights[f"w{i}"] + weights[f"b{i}"]
            if i < layers - 1:
                z = np.maximum(z, 0.0)
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return {
            "score": p.astype(np.float32),
            "confidence": (np.abs(2.0 * p - 1.0)).astype(np.float32),
        }
    history = np.asarray(inputs["history"], dtype=np.float64)
    scale = history.mean(axis=1, keepdims=True) + 1.0
    forecast = ((history / scale) @ weights["coef"].T + weights["intercept"]) * scale
    volatility = history.std(axis=1) / scale[:, 0]
    expected_error = weights["error_base"] + weights["error_slope"] * volatility
    return {
        "forecast": np.clip(forecast, 0.0, None).astype(np.float32),
        "confidence": np.exp(-np.clip(expected_error, 0.0, None)).astype(np.float32),
    }


class TritonPythonModel:
    """Triton's Python backend entry point."""

    def initialize(self, args: dict[str, str]) -> None:
        directory = Path(args["model_repository"]) / args["model_version"]
        self.weights = load(directory)
        self.batched = json.loads(args["model_config"]).get("max_batch_size", 0) > 0
        self.inputs = [i["name"] for i in SIGNATURES[kind(self.weights)]["inputs"]]

    def execute(self, requests: list) -> list:
        """All requests of a (dynamic) batch in one ``predict`` call, then split again."""
        import triton_python_backend_utils as pb

        inputs = {
            n: [pb.get_input_tensor_by_name(r, n).as_numpy() for r in requests] for n in self.inputs
        }
        sizes = [len(part) for part in inputs[self.inputs[0]]]
        outputs = predict(self.weights, {n: np.concatenate(v) for n, v in inputs.items()})
        parts = {name: np.split(value, np.cumsum(sizes)[:-1]) for name, value in outputs.items()}
        responses = []
        for i in range(len(requests)):
            tensors = []
            for name in outputs:
                part = parts[name][i]
                if self.batched and part.ndim == 1:
                    part = part[:, None]  # a batched model's outputs have dims [1]
                tensors.append(pb.Tensor(name, np.ascontiguousarray(part)))
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses
