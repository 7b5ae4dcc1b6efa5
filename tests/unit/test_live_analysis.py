"""The live half of a rollout's analysis: the PromQL asked of Prometheus, and what its
answers measure, on answers shaped as Prometheus gives them."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from aios.api.model_deployment import Analysis, MetricGate
from aios.workflows.analysis import judge, psi
from aios.workflows.live_analysis import Window, gate_query, measured_live, queries, single

WINDOW = Window("city", "pm25-anomaly", "2024.11.2", "2024.12.0", 45)

BOUNDS = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0", "+Inf")


def buckets(scores: list[float]) -> list[tuple[dict[str, str], float]]:
    """The cumulative ``le`` buckets of a score histogram, as ``sum by (le)`` answers."""
    return [({"le": b}, float(sum(s <= float(b) for s in scores))) for b in BOUNDS]


def answers(**overrides: list[tuple[dict[str, str], float]]):
    found = {
        "requests": [({}, 200.0)],
        "errors": [({}, 4.0)],
        "p99": [({}, 0.012)],
        "stable_p99": [({}, 0.010)],
        "confidence": [({}, 0.8)],
        "scores": buckets([0.15] * 100 + [0.85] * 100),
        "stable_scores": buckets([0.15] * 100 + [0.85] * 100),
        "pairs": [({"agreement": "agree"}, 90.0), ({"agreement": "disagree"}, 10.0)],
    }
    return {**found, **overrides}


def test_the_queries_select_the_model_and_each_version_over_the_window() -> None:
    asked = queries(WINDOW)
    assert set(asked) == {
        "requests",
        "errors",
        "p99",
        "stable_p99",
        "confidence",
        "scores",
        "stable_scores",
        "pairs",
    }
    new = 'namespace="city",model_deployment="pm25-anomaly",version="2024.12.0"'
    assert asked["requests"] == f"sum (increase(aios_runner_model_answers_total{{{new}}}[45s]))"
    assert f'{new},outcome="error"' in asked["errors"]
    assert 'version="2024.11.2"' in asked["stable_p99"] and "[45s]" in asked["stable_scores"]
    assert asked["p99"].startswith("histogram_quantile(0.99, sum by (le) (increase(")
    assert "by (agreement)" in asked["pairs"]
    assert queries(Window("a", 'b"c', "1", "2", 0))["requests"].count('"b\\"c"') == 1, "quoted"
    assert "[1s]" in queries(Window("a", "b", "1", "2", 0))["requests"], "never an empty window"


def test_live_answers_measure_what_the_probes_would() -> None:
    found = measured_live(answers())
    assert (found.requests, found.errors) == (200, 4)
    assert found.p99_ms == pytest.approx(12) and found.stable_p99_ms == pytest.approx(10)
    assert found.confidence_mean == 0.8 and found.agreement == pytest.approx(0.9)
    assert found.drift_psi == pytest.approx(0.0)


def test_score_drift_is_the_psi_of_the_two_histograms() -> None:
    rng = np.random.default_rng(11)
    stable, shifted = list(rng.beta(2, 5, 300)), list(rng.beta(5, 2, 300))
    found = measured_live(answers(scores=buckets(shifted), stable_scores=buckets(stable)))
    assert found.drift_psi == pytest.approx(psi(stable, shifted), rel=1e-6)
    assert found.drift_psi > 1.0


def test_no_data_is_no_measure_not_zero() -> None:
    found = measured_live(
        answers(requests=[], errors=[], p99=[], confidence=[], scores=[], pairs=[])
    )
    assert (found.requests, found.errors) == (0, 0)
    assert found.p99_ms is None and found.confidence_mean is None
    assert found.drift_psi is None and found.agreement is None


def test_a_metric_gate_is_its_query_with_the_windows_variables_filled_in() -> None:
    gate = MetricGate(
        name="canary-share",
        query='sum(increase(x{namespace="$namespace",model="$model",version="$version"}'
        '[$window])) / sum(increase(x{version="$stable"}[$window]))',
        min=0.1,
    )
    assert gate_query(gate, WINDOW) == (
        'sum(increase(x{namespace="city",model="pm25-anomaly",version="2024.12.0"}[45s]))'
        ' / sum(increase(x{version="2024.11.2"}[45s]))'
    )
    assert single([({}, 0.3)]) == 0.3
    assert single([]) is None and single([({}, 1.0), ({"a": "b"}, 2.0)]) is None


def test_metric_gates_hold_their_bounds_and_fail_unmeasured() -> None:
    gates = Analysis(
        min_requests=0,
        metrics=[
            MetricGate(name="low", query="q", max=1.0),
            MetricGate(name="high", query="q", min=5.0),
            MetricGate(name="unknown", query="q", min=0.0, max=1.0),
        ],
    )
    found = measured_live(answers(errors=[({}, 0.0)]))
    report = judge(found, gates, "live", 200, {"low": 2.5, "high": 7.0})
    assert report.reasons == ["metric low 2.5 above 1", "metric unknown not measured"]
    assert report.metrics == {"low": 2.5, "high": 7.0, "unknown": None}
    passing = judge(found, gates, "live", 200, {"low": 0.5, "high": 7.0, "unknown": 0.0})
    assert passing.passed and passing.reasons == []
    with pytest.raises(ValidationError, match="needs max, min or both"):
        MetricGate(name="unbounded", query="q")
