"""The sensor simulator's pollution episodes (what makes a demo's intent act)."""

from __future__ import annotations

import numpy as np

from aios.api.edge_gateway import Sensor
from aios.edge.simulator import Episodes, Faults, Simulator

SENSORS = [
    Sensor(id=f"s{i}", metrics=["pm25", "pm10", "no2", "o3", "temperature", "humidity"])
    for i in range(4)
]
CALM = Faults(stuck=0, spike=0, dropout=0, skewed=0)


def particles(simulator: Simulator, seconds: int) -> np.ndarray:
    return np.array([simulator.tick(float(t)).values[:, 0] for t in range(seconds)])


def test_without_episodes_particles_stay_at_city_levels() -> None:
    pm25 = particles(Simulator(SENSORS, faults=CALM), 600)
    assert pm25.max() < 40


def test_an_episode_raises_particles_for_its_duration_only() -> None:
    episodes = Episodes(every_seconds=30, seconds=60, factor=7)
    pm25 = particles(Simulator(SENSORS, faults=CALM, episodes=episodes), 600)
    polluted = pm25 > 50
    assert polluted.any(), "episodes happen"
    assert not polluted.all(), "and end"
    # An episode lasts its duration: a sensor that starts one stays polluted for 60 ticks.
    sensor = int(np.flatnonzero(polluted.any(axis=0))[0])
    start = int(np.flatnonzero(polluted[:, sensor])[0])
    assert polluted[start : start + 60, sensor].all()
