"""How a new version is judged: PSI, percentiles, gates, early failure, probe requests."""

from __future__ import annotations

import numpy as np
import pytest

from aios.api.model_deployment import Analysis, AnalysisReport
from aios.connectors.inference import decides_alike
from aios.workflows.analysis import (
    Sample,
    binned_psi,
    hopeless,
    judge,
    measured,
    probe_inputs,
    psi,
    summarise,
)
from aios.workflows.rollout import describe


def sample(scores, latency: float = 5.0, confidence: float = 0.9) -> Sample:
    found = Sample()
    for score in scores:
        found.add(latency, score, None if score is None else confidence)
    return found


def probed(stable: Sample, candidate: Sample, gates: Analysis) -> AnalysisReport:
    return judge(measured(stable, candidate), gates, "probes")


def test_psi_is_zero_for_the_same_scores_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(3)
    scores = list(rng.beta(2, 5, 400))
    assert psi(scores, scores) == pytest.approx(0.0)
    assert psi(scores, list(rng.beta(2, 5, 400))) < 0.1, "another draw of the same distribution"
    assert psi(scores, list(rng.beta(5, 2, 400))) > 1.0
    forecasts = list(rng.normal(30, 5, 400))
    assert psi(forecasts, [f + 20 for f in forecasts]) > 1.0, "quantile bins off [0, 1]"
    assert psi([0.5], [0.5]) is None


def test_binned_psi_is_the_psi_of_two_histograms_on_the_same_bins() -> None:
    rng = np.random.default_rng(5)
    stable, shifted = rng.beta(2, 5, 400), rng.beta(5, 2, 400)
    edges = np.linspace(0, 1, 11)
    edges[0], edges[-1] = -np.inf, np.inf
    counts = [np.histogram(s, edges)[0] for s in (stable, shifted)]
    assert binned_psi(*counts) == pytest.approx(psi(list(stable), list(shifted)))
    assert binned_psi([1, 0], [5, 5]) is None, "one observation says nothing"


def test_a_version_like_the_stable_passes_every_gate() -> None:
    scores = [i / 100 for i in range(100)]
    report = probed(
        sample(scores), sample(scores, latency=6), Analysis(min_decision_agreement=0.99)
    )
    assert report.passed and report.reasons == []
    assert report.requests == 100 and report.error_rate == 0
    assert report.agreement == 1.0 and report.drift_psi == pytest.approx(0)
    assert report.p99_latency_ms == 6 and report.stable_p99_latency_ms == 5


def test_errors_latency_confidence_and_agreement_each_fail_with_a_reason() -> None:
    stable = sample([0.1] * 60)
    errors = probed(stable, sample([0.1] * 57 + [None] * 3), Analysis(max_error_rate=0.01))
    assert not errors.passed and errors.reasons == ["error rate 5.0% above 1.0%"]
    slow = probed(stable, sample([0.1] * 60, latency=400), Analysis())
    assert slow.reasons == ["p99 latency 400 ms above 250 ms"]
    unsure = probed(stable, sample([0.1] * 60, confidence=0.3), Analysis(min_confidence_mean=0.6))
    assert unsure.reasons == ["mean confidence 0.30 below 0.6"]
    flipped = probed(
        stable, sample([0.9] * 60), Analysis(min_decision_agreement=0.9, max_drift_psi=99)
    )
    assert flipped.reasons == ["agreement 0.0% below 90%"]
    few = probed(sample([0.1] * 5), sample([0.1] * 5), Analysis(min_requests=50))
    assert few.reasons == ["only 5 requests, 50 needed"]


def test_a_hopeless_version_is_not_probed_to_the_end() -> None:
    gates = Analysis(max_error_rate=0.05)
    assert not hopeless(sample([0.1, None]), gates, planned=100)
    assert hopeless(sample([None] * 6), gates, planned=100)
    assert hopeless(sample([0.1, 0.1], latency=900), Analysis(), planned=100)


def test_probes_follow_the_model_signature_and_are_the_same_for_both_versions() -> None:
    metadata = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 6]}]}
    first, again = probe_inputs(metadata, 5), probe_inputs(metadata, 5)
    assert len(first) == 5 and first[0]["features"].shape == (1, 6)
    assert first[0]["features"].dtype == np.float32 and (first[0]["features"] > 0).all()
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["features"], b["features"])


def test_an_answer_is_summarised_as_score_and_confidence() -> None:
    assert summarise({"score": np.array([0.8]), "confidence": np.array([0.6])}) == (
        pytest.approx(0.8),
        pytest.approx(0.6),
    )
    forecast = {"forecast": np.full((1, 24), 20.0), "confidence": np.array([0.9])}
    assert summarise(forecast)[0] == pytest.approx(20.0)
    assert summarise({"y": np.array([3.0])}) == (pytest.approx(3.0), None)
    assert decides_alike(0.7, 0.9) and not decides_alike(0.4, 0.6)
    assert decides_alike(20.0, 20.5) and not decides_alike(20.0, 25.0)


def test_the_report_reads_as_one_line() -> None:
    stable, candidate = sample([0.2] * 50), sample([0.2] * 50, latency=12)
    line = describe(judge(measured(stable, candidate), Analysis(), "probes", live_requests=12))
    assert line.startswith(
        "50 synthetic probes (live traffic: 12 readings), 0.0% errors, p99 12 ms (stable 5 ms)"
    )
    assert "PSI 0.000" in line and "agreement 100.0%" in line
    unasked = describe(judge(measured(stable, candidate), Analysis(), "probes"))
    assert unasked.startswith("50 synthetic probes (no live traffic measured), 0.0% errors")
