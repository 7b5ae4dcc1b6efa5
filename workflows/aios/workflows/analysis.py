"""How a new model version is judged against the stable one. Pure: numbers in, verdict out.

The new version must keep its error rate, its p99 latency and its mean confidence within
the gates, its score distribution must not drift from the stable one's (population
stability index), and, where asked, it must decide as the stable version does. What is
measured comes from the readings each version served (``aios.workflows.live_analysis``)
or, below the live-traffic floor, from probe requests both versions answer here. A shadow
is judged the same way; it only never serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from aios.api.model_deployment import Analysis, AnalysisReport
from aios.connectors.inference import decides_alike

Traffic = Literal["live", "probes"]


@dataclass
class Sample:
    """One version's answers to the probe requests (None where a request failed)."""

    latencies_ms: list[float] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(score is None for score in self.scores)

    def add(self, latency_ms: float, score: float | None, confidence: float | None) -> None:
        self.latencies_ms.append(latency_ms)
        self.scores.append(score)
        self.confidences.append(confidence)


@dataclass(frozen=True)
class Measured:
    """What an analysis measured of the new version, next to the stable one."""

    requests: int
    errors: int
    p99_ms: float | None = None
    stable_p99_ms: float | None = None
    confidence_mean: float | None = None
    drift_psi: float | None = None
    agreement: float | None = None


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if len(values) else None


def psi(expected: Sequence[float], actual: Sequence[float]) -> float | None:
    """Population stability index of ``actual`` against ``expected`` (0: the same
    distribution; above 0.2 is conventionally a real shift). Scores in [0, 1] are binned
    on fixed equal-width bins (they pile up near 0 and 1, where quantiles collapse), other
    values on ``expected``'s quantiles; about 25 observations per bin (fewer bins are
    noise), 2 to 10 bins."""
    if len(expected) < 2 or len(actual) < 2:
        return None
    reference = np.asarray(expected, dtype=np.float64)
    observed = np.asarray(actual, dtype=np.float64)
    bins = int(np.clip(min(len(reference), len(observed)) // 25, 2, 10))
    if (
        reference.min() >= 0
        and reference.max() <= 1
        and observed.min() >= 0
        and observed.max() <= 1
    ):
        edges = np.linspace(0, 1, bins + 1)
    else:
        edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
        if len(edges) < 2:  # a constant reference: one bin at it, one around it
            edges = np.array([reference[0] - 1e-6, reference[0] + 1e-6])
    edges[0], edges[-1] = -np.inf, np.inf
    return binned_psi(np.histogram(reference, edges)[0], np.histogram(observed, edges)[0])


def binned_psi(
    expected: Sequence[float] | npt.NDArray[Any], actual: Sequence[float] | npt.NDArray[Any]
) -> float | None:
    """The population stability index of two histograms on the same bins (None with
    fewer than two observations on either side)."""
    e, a = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if e.sum() < 2 or a.sum() < 2:
        return None
    # Half a count in every bin (Laplace smoothing): an empty bin is "rare", not "never".
    e = (e + 0.5) / (e.sum() + 0.5 * len(e))
    a = (a + 0.5) / (a.sum() + 0.5 * len(a))
    return float(np.sum((a - e) * np.log(a / e)))


def measured(stable: Sample, candidate: Sample) -> Measured:
    """What the probe requests measured: both versions answered the same inputs, so their
    scores pair up for drift and agreement."""
    confidences = [c for c in candidate.confidences if c is not None]
    paired = [
        (s, c)
        for s, c in zip(stable.scores, candidate.scores, strict=True)
        if s is not None and c is not None
    ]
    return Measured(
        requests=len(candidate.scores),
        errors=candidate.errors,
        p99_ms=percentile(candidate.latencies_ms, 99),
        stable_p99_ms=percentile(stable.latencies_ms, 99),
        confidence_mean=float(np.mean(confidences)) if confidences else None,
        drift_psi=psi([s for s, _ in paired], [c for _, c in paired]),
        agreement=sum(decides_alike(s, c) for s, c in paired) / len(paired) if paired else None,
    )


def judge(
    found: Measured,
    gates: Analysis,
    traffic: Traffic,
    live_requests: int | None = None,
    metrics: Mapping[str, float | None] | None = None,
) -> AnalysisReport:
    """The analysis report of what was ``found`` on ``traffic``; ``live_requests``, when
    probes stood in, is the live traffic that was too little (None: none could be asked);
    ``metrics``, the value of each of the gates' own queries (missing: not measured)."""
    values = {gate.name: (metrics or {}).get(gate.name) for gate in gates.metrics}
    requests = found.requests
    error_rate = found.errors / requests if requests else 1.0
    reasons = []
    if error_rate > gates.max_error_rate:
        reasons.append(f"error rate {error_rate:.1%} above {gates.max_error_rate:.1%}")
    if found.p99_ms is not None and found.p99_ms > gates.max_p99_latency_ms:
        reasons.append(f"p99 latency {found.p99_ms:.0f} ms above {gates.max_p99_latency_ms:g} ms")
    if found.drift_psi is not None and found.drift_psi > gates.max_drift_psi:
        reasons.append(f"score drift PSI {found.drift_psi:.2f} above {gates.max_drift_psi:g}")
    if gates.min_confidence_mean is not None and (
        found.confidence_mean is None or found.confidence_mean < gates.min_confidence_mean
    ):
        shown = "none" if found.confidence_mean is None else f"{found.confidence_mean:.2f}"
        reasons.append(f"mean confidence {shown} below {gates.min_confidence_mean:g}")
    if gates.min_decision_agreement is not None and (
        found.agreement is None or found.agreement < gates.min_decision_agreement
    ):
        shown = "none" if found.agreement is None else f"{found.agreement:.1%}"
        reasons.append(f"agreement {shown} below {gates.min_decision_agreement:.0%}")
    for gate in gates.metrics:
        value = values[gate.name]
        if value is None:
            reasons.append(f"metric {gate.name} not measured")
        elif gate.max is not None and value > gate.max:
            reasons.append(f"metric {gate.name} {value:.4g} above {gate.max:g}")
        elif gate.min is not None and value < gate.min:
            reasons.append(f"metric {gate.name} {value:.4g} below {gate.min:g}")
    if not reasons and requests < gates.min_requests:
        reasons.append(f"only {requests} requests, {gates.min_requests} needed")
    return AnalysisReport(
        traffic=traffic,
        live_requests=live_requests,
        requests=requests,
        error_rate=round(error_rate, 4),
        p99_latency_ms=_round(found.p99_ms),
        stable_p99_latency_ms=_round(found.stable_p99_ms),
        confidence_mean=_round(found.confidence_mean, 4),
        drift_psi=_round(found.drift_psi, 4),
        agreement=_round(found.agreement, 4),
        metrics={name: _round(value, 6) for name, value in values.items()},
        passed=not reasons,
        reasons=reasons,
    )


def hopeless(candidate: Sample, gates: Analysis, planned: int) -> bool:
    """Whether the verdict is already a failure, however the remaining requests go (so a
    slow or failing version is not probed to the end)."""
    slow = sum(t > gates.max_p99_latency_ms for t in candidate.latencies_ms)
    return candidate.errors > gates.max_error_rate * planned or slow > 0.01 * planned


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def probe_inputs(
    metadata: Mapping[str, Any], count: int, seed: int = 7
) -> list[dict[str, npt.NDArray[Any]]]:
    """``count`` single-row requests shaped from the model's V2 metadata: the same,
    seeded, for both versions. Values are positive and spread over a few orders of
    magnitude, as physical readings are."""
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        request = {}
        for tensor in metadata["inputs"]:
            shape = [1 if d == -1 else int(d) for d in tensor["shape"]]
            values = rng.lognormal(mean=3.0, sigma=0.6, size=shape)
            request[tensor["name"]] = values.astype(_dtype(tensor["datatype"]))
        requests.append(request)
    return requests


def _dtype(datatype: str) -> Any:
    return {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}.get(
        datatype, np.float32
    )


def summarise(outputs: Mapping[str, npt.NDArray[Any]]) -> tuple[float, float | None]:
    """A request's answer as (score, confidence): ``score`` if the model has one, else the
    mean of its first other output; ``confidence`` if present."""
    confidence = outputs.get("confidence")
    primary = outputs.get("score")
    if primary is None:
        primary = next(v for k, v in outputs.items() if k != "confidence")
    score = float(np.mean(primary))
    return score, None if confidence is None else float(np.mean(confidence))
