"""How a new model version is judged against the stable one. Pure: numbers in, verdict out.

Both versions answer the same probe requests; the new version must keep its error rate,
its p99 latency and its mean confidence within the gates, its score distribution must
not drift from the stable one's (population stability index), and, where asked, it must
decide as the stable version does. A shadow is judged the same way; it only never serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from aios.api.model_deployment import Analysis, AnalysisReport

EPSILON = 1e-4


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
    # Half a count in every bin (Laplace smoothing): an empty bin is "rare", not "never".
    e = (np.histogram(reference, edges)[0] + 0.5) / (len(reference) + 0.5 * (len(edges) - 1))
    a = (np.histogram(observed, edges)[0] + 0.5) / (len(observed) + 0.5 * (len(edges) - 1))
    return float(np.sum((a - e) * np.log(a / e)))


def decides_alike(a: float, b: float) -> bool:
    """Scores in [0, 1] decide alike on the same side of 0.5; other outputs (a forecast)
    agree within 5 %."""
    if 0 <= a <= 1 and 0 <= b <= 1:
        return (a >= 0.5) == (b >= 0.5)
    return abs(a - b) <= 0.05 * max(abs(a), abs(b), EPSILON)


def judge(stable: Sample, candidate: Sample, gates: Analysis) -> AnalysisReport:
    """The analysis report of ``candidate`` vs ``stable``."""
    requests = len(candidate.scores)
    error_rate = candidate.errors / requests if requests else 1.0
    p99 = percentile(candidate.latencies_ms, 99)
    stable_p99 = percentile(stable.latencies_ms, 99)
    confidences = [c for c in candidate.confidences if c is not None]
    confidence_mean = float(np.mean(confidences)) if confidences else None
    paired = [
        (s, c)
        for s, c in zip(stable.scores, candidate.scores, strict=True)
        if s is not None and c is not None
    ]
    drift = psi([s for s, _ in paired], [c for _, c in paired])
    agreement = sum(decides_alike(s, c) for s, c in paired) / len(paired) if paired else None

    reasons = []
    if error_rate > gates.max_error_rate:
        reasons.append(f"error rate {error_rate:.1%} above {gates.max_error_rate:.1%}")
    if p99 is not None and p99 > gates.max_p99_latency_ms:
        reasons.append(f"p99 latency {p99:.0f} ms above {gates.max_p99_latency_ms:g} ms")
    if drift is not None and drift > gates.max_drift_psi:
        reasons.append(f"score drift PSI {drift:.2f} above {gates.max_drift_psi:g}")
    if gates.min_confidence_mean is not None and (
        confidence_mean is None or confidence_mean < gates.min_confidence_mean
    ):
        shown = "none" if confidence_mean is None else f"{confidence_mean:.2f}"
        reasons.append(f"mean confidence {shown} below {gates.min_confidence_mean:g}")
    if gates.min_decision_agreement is not None and (
        agreement is None or agreement < gates.min_decision_agreement
    ):
        shown = "none" if agreement is None else f"{agreement:.1%}"
        reasons.append(f"agreement {shown} below {gates.min_decision_agreement:.0%}")
    if not reasons and requests < gates.min_requests:
        reasons.append(f"only {requests} requests, {gates.min_requests} needed")
    return AnalysisReport(
        requests=requests,
        error_rate=round(error_rate, 4),
        p99_latency_ms=_round(p99),
        stable_p99_latency_ms=_round(stable_p99),
        confidence_mean=_round(confidence_mean, 4),
        drift_psi=_round(drift, 4),
        agreement=_round(agreement, 4),
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
