"""The example models keep the contract the intent runner relies on, and are useful."""

from __future__ import annotations

import numpy as np
import pytest

from aios.connectors.model_server import latest_version, load_module, repository_models
from aios.stack.models import repository

NORMAL = [12.0, 20.0, 25.0, 45.0, 14.0, 65.0]  # pm25, pm10, no2, o3, temperature, humidity
SPIKE = [95.0, 60.0, 25.0, 45.0, 14.0, 65.0]  # PM2.5 far above PM10: a broken sensor


def runtime(model: str, version: str):
    model_dir = repository(model, version) / model
    module = load_module(latest_version(model_dir) / "model.py", f"contract_{version}")
    return module, module.load(latest_version(model_dir))


@pytest.mark.parametrize("version", ["2024.11.2", "2024.11.3"])
def test_anomaly_scores_and_confidences_per_row(version: str) -> None:
    module, weights = runtime("pm25-anomaly", version)
    features = np.array([NORMAL, SPIKE, NORMAL], dtype=np.float32)
    out = module.predict(weights, {"features": features})
    assert set(out) == {"score", "confidence"}
    for value in out.values():
        assert value.shape == (3,) and value.dtype == np.float32
        assert ((value >= 0) & (value <= 1)).all()
    assert out["score"][1] > 0.5 > out["score"][0]
    assert out["score"][0] == pytest.approx(out["score"][2])


@pytest.mark.parametrize("version", ["2024.10.0", "2024.10.1"])
def test_forecast_gives_24_hours_and_less_confidence_for_erratic_history(version: str) -> None:
    module, weights = runtime("pm25-forecast", version)
    hours = np.arange(24)
    smooth = 20 + 5 * np.sin(2 * np.pi * hours / 24)
    erratic = smooth + np.where(hours % 2 == 0, 25.0, -15.0)
    out = module.predict(weights, {"history": np.array([smooth, erratic], dtype=np.float32)})
    assert out["forecast"].shape == (2, 24) and out["forecast"].dtype == np.float32
    assert out["confidence"].shape == (2,)
    assert (out["forecast"] >= 0).all()
    assert 10 < out["forecast"][0].mean() < 30, "a smooth day forecasts a similar level"
    assert out["confidence"][0] > out["confidence"][1]


def test_the_repository_layout_is_what_triton_and_kserve_load() -> None:
    root = repository("pm25-anomaly", "2024.11.2")
    (model_dir,) = repository_models(root)
    assert model_dir.name == "pm25-anomaly"
    config = (model_dir / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "dims: [-1, 6]" in config and "dims: [-1]" in config
    assert latest_version(model_dir).name == "1"
    with pytest.raises(FileNotFoundError, match="holds no Python-format model"):
        repository_models(root.parent)
