"""Simulated city air-quality sensors, for demos, tests and the benchmark.

PM2.5, PM10, NO2, O3, temperature and humidity follow daily cycles (traffic peaks for
NO2 and particles, an afternoon peak for ozone, warm afternoons with dry air) plus noise,
and sensors misbehave as real low-cost ones do: stuck values, spikes, dropouts and clock
skew. Optional pollution episodes (a fire, a traffic jam) raise a sensor's particles for
minutes — what an alerting intent is there to catch. Generation is vectorised over sensors
and seeded, so a run is reproducible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aios.api.edge_gateway import KNOWN_METRICS, Sensor
from aios.edge.columns import Chunk, new_trace_ids

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True)
class Faults:
    """Per reading probabilities (stuck and skew are per sensor)."""

    stuck: float = 0.02
    spike: float = 0.005
    dropout: float = 0.02
    skewed: float = 0.05
    skew_seconds: float = 120.0


@dataclass(frozen=True)
class Episodes:
    """Sustained particle pollution at one sensor: on average one every ``every_seconds``
    per sensor (0: never), lasting ``seconds``, particles times ``factor``."""

    every_seconds: float = 0.0
    seconds: float = 240.0
    factor: float = 7.0


def _peaks(hour: npt.NDArray[np.float64], centre: float, width: float) -> npt.NDArray[np.float64]:
    distance = np.minimum(np.abs(hour - centre), 24 - np.abs(hour - centre))
    return np.asarray(np.exp(-((distance / width) ** 2)))


class Simulator:
    """Readings for a fixed set of sensors, one tick at a time."""

    def __init__(
        self,
        sensors: list[Sensor],
        seed: int = 7,
        faults: Faults | None = None,
        episodes: Episodes | None = None,
    ) -> None:
        self.sensors = sensors
        self.faults = faults or Faults()
        self.episodes = episodes or Episodes()
        self.episode_until = np.zeros(len(sensors))
        self.last_tick: float | None = None
        self.rng = np.random.default_rng(seed)
        n = len(sensors)
        self.declared = np.zeros((n, len(KNOWN_METRICS)), bool)
        for i, sensor in enumerate(sensors):  # it simulates the known metrics only
            known = [KNOWN_METRICS.index(m) for m in sensor.metrics if m in KNOWN_METRICS]
            self.declared[i, known] = True
        self.offset = self.rng.normal(0, 1, (n, len(KNOWN_METRICS)))  # each sensor's own bias
        self.stuck = self.rng.random(n) < self.faults.stuck
        self.stuck_values: npt.NDArray[np.float64] | None = None
        skewed = self.rng.random(n) < self.faults.skewed
        self.skew = np.where(skewed, self.rng.choice([-1, 1], n) * self.faults.skew_seconds, 0.0)
        self.lat = np.array([s.location.lat if s.location else np.nan for s in sensors])
        self.lon = np.array([s.location.lon if s.location else np.nan for s in sensors])

    def truth(self, t: float) -> npt.NDArray[np.float64]:
        """Noise-free values at time ``t`` for every sensor (rows) and metric (columns)."""
        hour = np.full(len(self.sensors), (t % DAY) / HOUR)
        traffic = _peaks(hour, 8.0, 2.0) + 0.8 * _peaks(hour, 18.0, 2.5)
        sun = _peaks(hour, 15.0, 4.0)
        pm25 = 10 + 14 * traffic
        values = np.stack(
            [
                pm25,
                pm25 * 1.6 + 5,
                20 + 35 * traffic,
                30 + 60 * sun,
                8 + 10 * sun,
                75 - 30 * sun,
            ],
            axis=1,
        )
        scale = np.array([1.5, 2.5, 3.0, 4.0, 0.5, 3.0])
        return np.asarray(values + self.offset * scale)

    def _in_episode(self, t: float) -> npt.NDArray[np.bool_]:
        """Which sensors are in a pollution episode at ``t`` (starting new ones)."""
        if self.episodes.every_seconds > 0:
            elapsed = 1.0 if self.last_tick is None else max(t - self.last_tick, 0.0)
            starts = self.rng.random(len(self.sensors)) < elapsed / self.episodes.every_seconds
            idle = self.episode_until <= t
            self.episode_until[starts & idle] = t + self.episodes.seconds
        self.last_tick = t
        return np.asarray(self.episode_until > t)

    def tick(self, t: float) -> Chunk:
        """One reading per sensor at ``t`` (minus dropouts), faults included."""
        n = len(self.sensors)
        values = self.truth(t) + self.rng.normal(0, 1, (n, len(KNOWN_METRICS))) * [
            1.0,
            1.5,
            2.0,
            2.0,
            0.2,
            1.0,
        ]
        values[self._in_episode(t), :2] *= self.episodes.factor
        spikes = self.rng.random(n) < self.faults.spike
        values[spikes] *= self.rng.uniform(3, 6, (int(spikes.sum()), 1))
        if self.stuck_values is None:
            self.stuck_values = values.copy()
        values[self.stuck] = self.stuck_values[self.stuck]
        values[:, :4] = np.maximum(values[:, :4], 0.0)
        values[:, 5] = np.clip(values[:, 5], 0.0, 100.0)
        values = np.where(self.declared, np.round(values, 2), np.nan)
        keep = self.rng.random(n) >= self.faults.dropout
        index = np.flatnonzero(keep)
        return Chunk(
            ids=[self.sensors[i].id for i in index],
            columns=KNOWN_METRICS,
            time=t + self.skew[index],
            values=values[index],
            lat=self.lat[index],
            lon=self.lon[index],
            recv=np.full(len(index), t),
            trace=new_trace_ids(len(index)),
        )


def city_sensors(
    count: int, site: str = "sim", lat: float = 52.52, lon: float = 13.40
) -> list[Sensor]:
    """``count`` sensors spread over about 5 km around (lat, lon), all six metrics."""
    rng = np.random.default_rng(count)
    spread = rng.normal(0, 0.02, (count, 2))
    return [
        Sensor.model_validate(
            {
                "id": f"{site}-{i:05d}",
                "metrics": list(KNOWN_METRICS),
                "location": {"lat": lat + spread[i, 0], "lon": lon + spread[i, 1]},
            }
        )
        for i in range(count)
    ]


def payload_lines(chunk: Chunk) -> list[bytes]:
    """The chunk as sensors would send it over MQTT/HTTP: one JSON object per reading."""
    lines = []
    for i, sensor in enumerate(chunk.ids):
        metrics = {
            m: float(chunk.values[i, c])
            for c, m in enumerate(chunk.columns)
            if not np.isnan(chunk.values[i, c])
        }
        stamp = np.datetime_as_string(np.datetime64(int(chunk.time[i] * 1000), "ms"), unit="ms")
        reading: dict[str, object] = {"sensorId": sensor, "time": f"{stamp}Z", "metrics": metrics}
        if not np.isnan(chunk.lat[i]):
            reading |= {"lat": float(chunk.lat[i]), "lon": float(chunk.lon[i])}
        lines.append(json.dumps(reading).encode())
    return lines
