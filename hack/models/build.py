"""Train the example air-quality models on synthetic data and write their model repositories.

Usage: build.py OUT_DIR

OUT_DIR mirrors the object-storage buckets the examples name
(``city-models/air-quality/<model>/<version>/``); each version is a model repository
(``<model>/config.pbtxt``, ``<model>/1/model.py``, ``<model>/1/weights.npz``) that
Triton's Python backend and aios's KServe ModelServer both serve. Nothing is downloaded:
the data is simulated here, seeded, so a build is reproducible.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import model as runtime  # noqa: E402  (the serving code, copied into every repository)

BUCKET = Path("city-models") / "air-quality"
VERSIONS = {
    # model → {version: training seed}; the later version is a retrain on fresh data.
    "pm25-anomaly": {"2024.11.2": 1, "2024.11.3": 2},
    "pm25-forecast": {"2024.10.0": 1, "2024.10.1": 2},
}


def traffic(hour: np.ndarray) -> np.ndarray:
    """Rush-hour shape in [0, 1]: peaks at 08:00 and 18:00."""
    return np.exp(-(((hour - 8) / 2.0) ** 2)) + np.exp(-(((hour - 18) / 2.5) ** 2))


def readings(rng: np.random.Generator, sensors: int, hours: int) -> np.ndarray:
    """Hourly readings of ``sensors`` sensors: pm25, pm10, no2, o3, temperature, humidity."""
    hour = np.arange(hours) % 24
    day = np.arange(hours) / 24
    rows = []
    for _ in range(sensors):
        base = rng.uniform(6, 22)
        temperature = (
            11 + 9 * np.sin(2 * np.pi * (day - 100) / 365) + 5 * np.sin(2 * np.pi * (hour - 9) / 24)
        ) + rng.normal(0, 1.5, hours)
        humidity = np.clip(72 - 1.6 * (temperature - 11) + rng.normal(0, 6, hours), 15, 100)
        episode = np.convolve(rng.gamma(0.3, 6, hours), np.ones(36) / 36, mode="same")
        pm25 = base * (1 + 0.5 * traffic(hour)) * (1 + 0.012 * np.clip(humidity - 70, 0, None))
        pm25 = np.clip(pm25 + 4 * episode + rng.normal(0, 2.0, hours), 0.5, None)
        pm10 = pm25 * rng.uniform(1.4, 1.9) + np.abs(rng.normal(0, 3, hours))
        no2 = np.clip(18 + 28 * traffic(hour) + rng.normal(0, 5, hours), 1, None)
        o3 = np.clip(55 - 0.45 * no2 + 1.8 * (temperature - 11) + rng.normal(0, 6, hours), 1, None)
        rows.append(np.column_stack([pm25, pm10, no2, o3, temperature, humidity]))
    return np.concatenate(rows)


def with_anomalies(rng: np.random.Generator, x: np.ndarray, share: float) -> tuple:
    """Inject the faults the model must flag: spikes, PM2.5 above PM10, dead optics."""
    x = x.copy()
    label = np.zeros(len(x), dtype=np.int64)
    picked = rng.random(len(x)) < share
    kinds = rng.integers(0, 3, len(x))
    spike = picked & (kinds == 0)
    x[spike, 0] *= rng.uniform(1.6, 5, spike.sum())
    x[spike, 1] *= rng.uniform(1.5, 4, spike.sum())
    inverted = picked & (kinds == 1)
    x[inverted, 0] = x[inverted, 1] * rng.uniform(1.0, 1.8, inverted.sum())
    dead = picked & (kinds == 2)
    x[dead, 0] = rng.uniform(0, 2.0, dead.sum())
    label[picked] = 1
    return x, label


def train_anomaly(seed: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """A logistic regression on physically meaningful features: a low-variance model, so
    a retrain on fresh data behaves as its predecessor did (what a canary should show)."""
    rng = np.random.default_rng(seed)
    x, y = with_anomalies(rng, readings(rng, sensors=24, hours=24 * 120), share=0.06)
    features = runtime.anomaly_features(x)
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-9
    split = int(0.8 * len(x))
    model = LogisticRegression(C=1.0, max_iter=500).fit((features[:split] - mean) / std, y[:split])
    weights: dict[str, np.ndarray] = {
        "kind": np.array("anomaly"),
        "mean": mean,
        "std": std,
        "layers": np.array(1),
        "w0": model.coef_.T,
        "b0": model.intercept_,
    }
    scores = runtime.predict(weights, {"features": x[split:].astype(np.float32)})["score"]
    auc = float(roc_auc_score(y[split:], scores))
    return weights, {"auc": round(auc, 4), "trainingRows": float(split)}


def hourly_district(rng: np.random.Generator, hours: int) -> np.ndarray:
    """One district's hourly mean PM2.5: the sensors' average."""
    return readings(rng, sensors=8, hours=hours)[:, 0].reshape(8, hours).mean(axis=0)


def windows(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(0, len(series) - 48, 3)
    history = np.stack([series[i : i + 24] for i in idx])
    future = np.stack([series[i + 24 : i + 48] for i in idx])
    return history, future


def train_forecast(seed: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    rng = np.random.default_rng(seed)
    history, future = windows(np.concatenate([hourly_district(rng, 24 * 90) for _ in range(6)]))
    split = int(0.8 * len(history))
    scale = history.mean(axis=1, keepdims=True) + 1.0
    ridge = Ridge(alpha=1.0).fit(history[:split] / scale[:split], future[:split] / scale[:split])
    weights: dict[str, np.ndarray] = {
        "kind": np.array("forecast"),
        "coef": ridge.coef_,
        "intercept": ridge.intercept_,
        "error_base": np.array(0.0),
        "error_slope": np.array(0.0),
    }
    # Confidence: the relative error to expect, fitted against the history's volatility.
    fitted = runtime.predict(weights, {"history": history[:split]})["forecast"]
    relative = np.abs(fitted - future[:split]).mean(axis=1) / scale[:split, 0]
    volatility = history[:split].std(axis=1) / scale[:split, 0]
    slope, base = np.polyfit(volatility, relative, 1)
    weights["error_base"], weights["error_slope"] = np.array(base), np.array(slope)
    held_out = runtime.predict(weights, {"history": history[split:]})["forecast"]
    mae = float(np.abs(held_out - future[split:]).mean())
    return weights, {"maeUgM3": round(mae, 3), "trainingWindows": float(split)}


def triton_config(name: str, signature: dict, max_batch_size: int = 0) -> str:
    """config.pbtxt: without batching the shapes are the contract's; with it, Triton adds
    the batch dimension itself (and needs a dims of at least [1])."""

    def tensors(items: list[dict]) -> str:
        out = []
        for t in items:
            dims = t["shape"][1:] if max_batch_size else t["shape"]
            out.append(
                f'  {{ name: "{t["name"]}", data_type: TYPE_{t["datatype"]}, '
                f"dims: {json.dumps(dims or [1])} }}"
            )
        return ",\n".join(out)

    batching = "dynamic_batching { max_queue_delay_microseconds: 2000 }\n" if max_batch_size else ""
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{tensors(signature['inputs'])}\n]\n"
        f"output [\n{tensors(signature['outputs'])}\n]\n"
        f"instance_group [{{ kind: KIND_CPU, count: 1 }}]\n{batching}"
    )


def write_repository(root: Path, name: str, weights: dict, metrics: dict) -> None:
    """``root/<name>/{config.pbtxt, model-card.json, 1/model.py, 1/weights.npz}``."""
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    signature = runtime.SIGNATURES[str(weights["kind"])]
    (model_dir / "config.pbtxt").write_text(triton_config(name, signature))
    shutil.copy(HERE / "model.py", model_dir / "1" / "model.py")
    np.savez(model_dir / "1" / "weights.npz", **weights)
    (model_dir / "model-card.json").write_text(json.dumps({"metrics": metrics}, indent=2))


def main(out: Path) -> None:
    trainers = {"pm25-anomaly": train_anomaly, "pm25-forecast": train_forecast}
    for name, versions in VERSIONS.items():
        for version, seed in versions.items():
            weights, metrics = trainers[name](seed)
            write_repository(out / BUCKET / name / version, name, weights, metrics)
            print(f"{name} {version}: {metrics}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
