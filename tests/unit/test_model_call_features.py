"""What a model call sends: the metrics it names, in its order; a reading lacking one is
not sent. Any quantity a reading carries can be a feature, not only the example's six."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from aios.api.automation_intent import ANOMALY_FEATURES, ModelCall
from aios.api.events import Reading
from aios.runner.calls import features, unfit

NOW = datetime(2004, 11, 3, 18, tzinfo=UTC)
DEVICE = ["pt08_s1_co", "pt08_s4_no2", "t", "rh"]


def device_reading(**metrics: float) -> Reading:
    return Reading(event_id="h1", sensor_id="roadside-1", time=NOW, metrics=metrics)


def test_a_call_sends_the_anomaly_models_six_unless_it_names_its_own() -> None:
    assert ModelCall(name="anomaly", model_deployment="pm25-anomaly").features == list(
        ANOMALY_FEATURES
    )
    call = ModelCall(name="calibration", model_deployment="no2-calibration", features=DEVICE)
    assert call.features == DEVICE


def test_the_features_matrix_follows_the_calls_order() -> None:
    readings = [
        device_reading(t=13.6, pt08_s4_no2=1692.0, rh=48.9, pt08_s1_co=1360.0),
        device_reading(rh=47.7, t=13.3, pt08_s1_co=1292.0, pt08_s4_no2=1559.0),
    ]
    matrix = features(readings, DEVICE)
    assert matrix.dtype == np.float32 and matrix.shape == (2, 4)
    np.testing.assert_allclose(matrix[1], [1292.0, 1559.0, 13.3, 47.7], rtol=1e-6)


def test_a_reading_lacking_a_named_metric_is_not_sent() -> None:
    call = ModelCall(name="calibration", model_deployment="no2-calibration", features=DEVICE)
    whole = device_reading(pt08_s1_co=1.0, pt08_s4_no2=2.0, t=3.0, rh=4.0)
    assert unfit(call, whole, NOW) is None
    partial = device_reading(pt08_s1_co=1.0, pt08_s4_no2=2.0, t=3.0)
    assert unfit(call, partial, NOW) == "incomplete"
    assert unfit(call, whole, NOW + timedelta(seconds=301)) == "stale"


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["t", "rh", "t"], "repeats t"),
        (["t", "site"], "the reading's own fields"),
        (["T"], "pattern"),
        ([], "at least 1"),
    ],
)
def test_features_are_named_once_each_and_never_a_readings_own_field(
    names: list[str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelCall(name="calibration", model_deployment="no2-calibration", features=names)
