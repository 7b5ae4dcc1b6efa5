"""Two weeks of the real year (bench/outcomes) through aios on the site: the device's
readings through an edge gateway, the calibration model on Triton, the intent's alerts,
the reference station's delayed values, and the drift they reveal rolled out as a new
version. The bench runs the whole year the same way."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from outcomes import drift
from outcomes.live import CALL, DEPLOYMENT, FEATURES, METRICS, Replay, first_version
from outcomes.scoring import YEAR, score
from outcomes.year import NO2_LIMIT, REFERENCE, load
from support import wait_for

from aios.api.events import Reading
from aios.connectors import kafka
from aios.connectors.audit import read_log

START = datetime(2005, 2, 15)
"""A fortnight with exceedances, in which the served model drifts once (on 24 February)."""
DAYS = 14


def test_a_fortnight_of_real_readings_alerts_as_scored_and_rolls_out_on_drift(
    site, operator, namespace, model_dir: Path, tmp_path: Path
) -> None:
    year = load()
    hours = [h for h in year if START <= h.time < START + timedelta(days=DAYS)]
    replay = Replay(site, namespace, tmp_path, model_dir, year, seconds_per_hour=0.1)
    try:
        outcome = replay.run(hours)
    finally:
        replay.close()

    # One decision per reading sent, each mapped to its hour: the served estimate of every
    # hour is what the version that answered computes from that hour's device readings.
    assert len(outcome.decisions) == len(outcome.readings) > 0.9 * len(hours)
    (rollout,) = outcome.rollouts
    assert rollout.phase == "Promoted", rollout
    served_by = {f"{START:%Y.%m.%d}": first_version(year, START)}
    served_by[rollout.version] = drift.retrain(year, rollout.at)
    by_time = {h.time: h for h in hours}
    for hour, decision in outcome.decisions.items():
        if not by_time[hour].complete:
            assert decision.fallback and decision.fallback_reason == "incomplete", decision
            continue
        assert decision.model is not None and decision.model.version in served_by, (
            hour,
            decision.fallback_reason,
            decision.outputs,
        )
        expected = served_by[decision.model.version].answer([by_time[hour]])["no2"][0]
        assert np.isclose(decision.outputs[CALL]["no2"], expected, rtol=1e-4), hour
    # The new version answers from its promotion on: none before, and once it has
    # answered, the old one never again (right after the promotion the old version may
    # still answer a reading or two while the runner learns of it, named as such above).
    answered = [d.model.version for _, d in sorted(outcome.decisions.items()) if d.model]
    switched = answered.index(rollout.version)
    assert set(answered[switched:]) == {rollout.version}
    first_new = min(
        t for t, d in outcome.decisions.items() if d.model and d.model.version == rollout.version
    )
    assert first_new >= rollout.at

    # Scoring against the reference analyzer is exact: each judged hour counted once.
    tally = score(hours, outcome.alerts)[YEAR]
    judged = [h for h in hours if h.no2 is not None]
    alerted = {h.time for h in judged} & set(outcome.alerts)
    assert tally.hours == len(judged)
    assert tally.exceedances == sum(h.no2 > NO2_LIMIT for h in judged if h.no2) > 0
    assert tally.alerts == len(alerted) > 0
    assert tally.false_alerts == sum(
        1 for h in judged if h.time in alerted and h.no2 is not None and h.no2 <= NO2_LIMIT
    )
    assert tally.missed == sum(
        1 for h in judged if h.no2 is not None and h.no2 > NO2_LIMIT and h.time not in alerted
    )
    assert tally.reviewed == sum(outcome.alerts[t] for t in alerted)

    # No reference value ever reaches a decision: the gateway forwarded the device's
    # channels only, exactly as measured.
    forwarded = [
        Reading.model_validate_json(m.value() or b"")
        for m in kafka.read_to_end(site.endpoints.kafka_bootstrap, replay.readings_topic)
    ]
    assert len(forwarded) == len(outcome.readings)
    sent = {r["time"]: r["metrics"] for r in outcome.readings}
    for reading in forwarded:
        assert set(reading.metrics) <= set(FEATURES)
        assert reading.metrics == sent[round(reading.time.timestamp() * 1000)]
    reference_names = {name.lower() for name in REFERENCE} | {"no2"}
    assert not reference_names & set(METRICS.values())

    # The rollout is in the audit trail, with the version it promoted.
    subject = f"modeldeployment/{namespace}/{DEPLOYMENT}"
    promotion = wait_for(
        lambda: next(
            (
                r
                for r in read_log(site.endpoints.kafka_bootstrap)
                if r.kind == "promotion" and r.subject == subject
            ),
            None,
        ),
        timeout=30,
        what="the promotion's audit record",
    )
    assert promotion.details["model"]["version"] == rollout.version
