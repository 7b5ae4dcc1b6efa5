"""The outcomes bench's data, scoring and baselines (bench/outcomes): scoring is exact, and
no approach sees a reference value before the station publishes it."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from outcomes import baselines, drift, live, plot
from outcomes.calibration import RUNTIME, Calibration, channels
from outcomes.scoring import YEAR, score
from outcomes.year import DEVICE, LABEL_DELAY, NO2_LIMIT, REFERENCE, Hour, load, published_by

from aios.api import AutomationIntent, EdgeGateway, ModelDeployment

START = datetime(2004, 3, 10, 18)


def hour(offset: int, no2: float | None, **device: float) -> Hour:
    readings: dict[str, float | None] = {name: 1000.0 for name in DEVICE}
    readings.update(device)
    reference: dict[str, float | None] = {name: None for name in REFERENCE}
    reference["NO2_GT"] = no2
    return Hour(START + timedelta(hours=offset), readings, reference)


def linear_sensor(count: int, noise: float) -> list[Hour]:
    """Hours whose NO2 is 0.1 of the NO2 sensor's response plus 5, with normal noise."""
    rng = np.random.default_rng(7)
    raws = rng.uniform(500, 2500, count)
    errors = rng.normal(0, noise, count)
    return [
        hour(h, 0.1 * r + 5 + e, PT08_S4_NO2=r)
        for h, (r, e) in enumerate(zip(raws, errors, strict=True))
    ]


def test_the_year_loads_as_its_readme_describes() -> None:
    hours = load()
    assert len(hours) == 9357
    assert (hours[0].time, hours[-1].time) == (START, datetime(2005, 4, 4, 14))
    measured = [h for h in hours if h.no2 is not None]
    assert len(measured) == 7715
    assert sum(h.no2 > NO2_LIMIT for h in measured if h.no2) == 386
    assert all(a.time < b.time for a, b in itertools.pairwise(hours)), "in time order"


def test_scoring_counts_each_hour_against_the_reference() -> None:
    hours = [
        hour(0, 250.0),  # caught, reviewed
        hour(1, 150.0),  # false alert
        hour(2, 201.0),  # missed
        hour(3, 200.0),  # at the limit, no alert: right
        hour(4, None),  # not measured: its alert is not judged
        hour(24 * 40, 300.0),  # next month, caught without review
    ]
    alerts = {hours[0].time: True, hours[1].time: False, hours[4].time: True, hours[5].time: False}
    tallies = score(hours, alerts)
    march, april, year = tallies["2004-03"], tallies["2004-04"], tallies[YEAR]
    assert (march.hours, march.exceedances, march.alerts) == (4, 2, 2)
    assert (march.false_alerts, march.missed, march.unjudged, march.reviewed) == (1, 1, 1, 2)
    assert (march.precision, march.recall) == (0.5, 0.5)
    assert (april.alerts, april.false_alerts, april.missed, april.reviewed) == (1, 0, 0, 0)
    assert (year.exceedances, year.alerts, year.false_alerts, year.missed) == (3, 3, 1, 1)
    assert year.precision == pytest.approx(2 / 3) and year.recall == pytest.approx(2 / 3)


def test_scoring_refuses_an_alert_for_an_hour_the_year_lacks() -> None:
    with pytest.raises(ValueError, match="hours the year does not have"):
        score([hour(0, 10.0)], {START + timedelta(minutes=30): False})


def test_a_reference_value_is_known_a_day_after_its_hour() -> None:
    hours = [hour(0, 10.0), hour(1, 20.0)]
    assert published_by(hours, START + LABEL_DELAY) == hours[:1]
    assert published_by(hours, START + LABEL_DELAY - timedelta(seconds=1)) == []


def test_the_static_threshold_is_where_the_first_months_line_reaches_the_limit() -> None:
    # NO2 = 0.1 raw - 50 in the first month: the limit at raw 2,500.
    month = [hour(h, 0.1 * (1000 + h) - 50, PT08_S4_NO2=1000.0 + h) for h in range(0, 700, 7)]
    later = [hour(800, None, PT08_S4_NO2=2600.0), hour(801, None, PT08_S4_NO2=2400.0)]
    hours = month + later
    assert baselines.first_month_threshold(hours) == pytest.approx(2500.0)
    assert set(baselines.static_threshold(hours)) == {later[0].time}


def test_a_calibration_learns_a_linear_sensor_and_its_spread() -> None:
    model = Calibration.train(linear_sensor(400, noise=2.0))
    probe = [hour(0, None, PT08_S4_NO2=1000.0), hour(1, None, PT08_S4_NO2=2000.0)]
    assert model.predict(probe) == pytest.approx([105.0, 205.0], abs=2.0)
    assert 1.5 < model.spread < 2.5 and model.trained_on == 400


def test_no_baseline_reads_a_reference_value_before_it_is_published() -> None:
    """Rewriting every reference value a baseline could not have known changes nothing."""
    hours = load()
    known_by = hours[0].time + baselines.FIRST_TWO_MONTHS
    rewritten = [
        h if h.published <= known_by else dataclasses.replace(h, reference={"NO2_GT": 9999.0})
        for h in hours
    ]
    for approach in (baselines.static_threshold, baselines.calibrated_once):
        assert approach(rewritten) == approach(hours), approach.__name__


def test_the_served_calibration_answers_as_trained_with_its_confidence(tmp_path: Path) -> None:
    """Saved as the serving code loads it (weights.npz), the model says the same NO2; its
    confidence is a coin toss at the limit and near certainty far from it."""
    model = Calibration.train(linear_sensor(300, noise=10.0))
    np.savez(tmp_path / "weights.npz", **model.weights())
    served = RUNTIME.load(tmp_path)
    probe = [hour(0, None, PT08_S4_NO2=raw) for raw in (500.0, 1950.0, 2500.0)]
    outputs = RUNTIME.predict(served, {"features": channels(probe)})
    np.testing.assert_allclose(outputs["no2"], model.predict(probe), rtol=1e-5)
    assert outputs["no2"][1] == pytest.approx(NO2_LIMIT, abs=3.0)
    assert outputs["confidence"][1] < 0.7 < 0.99 < min(outputs["confidence"][[0, 2]])


def test_drift_is_an_error_past_the_tolerance_on_enough_labelled_hours() -> None:
    now = START + timedelta(days=20)
    labels = {START + timedelta(hours=h): 100.0 for h in range(480)}
    off_by = {t: 100.0 + 16.0 for t in labels}  # RMSE 16 against a spread of 10
    assert drift.check(now, off_by, labels, spread=10.0).drifted
    assert not drift.check(now, off_by, labels, spread=11.0).drifted  # 16 <= 1.5 * 11
    recent = {t: v for t, v in off_by.items() if t >= now - drift.ERROR_WINDOW}
    assert drift.check(now, recent, labels, 10.0).judged == 7 * 24, "only the last week"
    few = dict(list(recent.items())[: drift.MIN_LABELLED - 1])
    assert not drift.check(now, few, labels, 10.0).drifted, "too few hours to judge"


def test_a_retrained_version_knows_only_the_last_month_published() -> None:
    hours = linear_sensor(24 * 70, noise=2.0)
    now = hours[-1].time
    model = drift.retrain(hours, now)
    known = [h for h in hours if h.published <= now and h.time >= now - drift.TRAINING_WINDOW]
    assert model.trained_on == len(known) == 30 * 24 - 23


def test_the_city_the_replay_applies_is_valid_and_never_reads_a_reference_value() -> None:
    hours = linear_sensor(24 * 40, noise=2.0)
    gateway = EdgeGateway.model_validate(live.gateway("readings"))
    (sensor,) = gateway.spec.sensors
    assert sensor.metrics == live.FEATURES
    model = ModelDeployment.model_validate(live.model_deployment("2004.03.10", "file:///m"))
    assert model.spec.model.version == "2004.03.10"
    intent = AutomationIntent.model_validate(live.intent(hours, "http://alerts:8080/alerts"))
    (call,) = intent.spec.models
    assert call.features == live.FEATURES and call.model_deployment == model.metadata["name"]
    (fallback,) = intent.spec.fallback
    threshold = baselines.first_month_threshold(hours)  # the static baseline's, ~1,950
    assert fallback.when == f"reading.pt08_s4_no2 > {threshold:.1f}"
    references = {name.lower() for name in REFERENCE}
    assert not references & set(live.FEATURES), "the device's channels only"


def test_the_figure_is_rendered_to_a_png(tmp_path: Path) -> None:
    hours = linear_sensor(24 * 40, noise=2.0)
    tallies = score(hours, {hours[3].time: False})
    plot.render({"one": tallies}, [hours[24 * 35].time], tmp_path / "outcomes.png")
    assert (tmp_path / "outcomes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
