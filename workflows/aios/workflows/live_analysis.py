"""What the readings each version served measured, asked of Prometheus.

Every intent runner counts what each ModelDeployment version answered (``aios_runner_model_*``,
scraped from every runner pod): readings by outcome, scores and confidences, batch
latency, and, for each reading both the stable and the new version answered (a canary's
copied to the stable, a shadow's copy), whether they decided alike. Over the step's window
these give the same ``Measured`` as the probes do (``aios.workflows.analysis``). The
gates' own queries (``analysis.metrics``) are asked over the same window. Building the
queries and reading their answers is pure; only the ``measure_*`` functions ask.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Template

from aios.api.model_deployment import MetricGate
from aios.connectors.prometheus import Prometheus, Series
from aios.workflows.analysis import Measured, binned_psi


@dataclass(frozen=True)
class Window:
    """Which versions of which ModelDeployment, over how many seconds up to now."""

    namespace: str
    deployment: str
    stable: str
    candidate: str
    seconds: int

    @property
    def range(self) -> str:
        return f"{max(self.seconds, 1)}s"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def queries(window: Window) -> dict[str, str]:
    """The PromQL of each measure over the window, by name."""
    model = f"namespace={_quoted(window.namespace)},model_deployment={_quoted(window.deployment)}"
    new = f"{model},version={_quoted(window.candidate)}"
    old = f"{model},version={_quoted(window.stable)}"

    def total(metric: str, labels: str, by: str = "") -> str:
        return f"sum{f' by ({by})' if by else ''} (increase({metric}{{{labels}}}[{window.range}]))"

    def p99(labels: str) -> str:
        buckets = total("aios_runner_inference_duration_seconds_bucket", labels, "le")
        return f"histogram_quantile(0.99, {buckets})"

    answers = "aios_runner_model_answers_total"
    confidence = "aios_runner_model_confidence"
    return {
        "requests": total(answers, new),
        "errors": total(answers, f'{new},outcome="error"'),
        "p99": p99(new),
        "stable_p99": p99(old),
        "confidence": f"{total(f'{confidence}_sum', new)} / {total(f'{confidence}_count', new)}",
        "scores": total("aios_runner_model_score_bucket", new, "le"),
        "stable_scores": total("aios_runner_model_score_bucket", old, "le"),
        "pairs": total("aios_runner_model_paired_answers_total", new, "agreement"),
    }


def _value(found: list[Series]) -> float | None:
    return found[0][1] if found else None


def _bins(found: list[Series]) -> dict[float, float]:
    """Per-bin counts of a score histogram's cumulative buckets, by upper bound; the
    ``+Inf`` bucket's few (a score above 1) join the top bin, as ``psi`` bins them."""
    cumulative = sorted((float(labels["le"]), value) for labels, value in found)
    counts: dict[float, float] = {}
    below = 0.0
    for bound, value in cumulative:
        top = bound == math.inf and counts
        key = max(counts) if top else bound
        counts[key] = counts.get(key, 0.0) + max(value - below, 0.0)
        below = max(value, below)
    return counts


def measured_live(results: Mapping[str, list[Series]]) -> Measured:
    """``Measured`` from the answers to ``queries`` (a measure with no data is None)."""
    p99, stable_p99 = _value(results["p99"]), _value(results["stable_p99"])
    scores, stable_scores = _bins(results["scores"]), _bins(results["stable_scores"])
    bounds = sorted(scores.keys() | stable_scores.keys())
    pairs = {labels.get("agreement"): value for labels, value in results["pairs"]}
    paired = sum(pairs.values())
    return Measured(
        requests=round(_value(results["requests"]) or 0),
        errors=round(_value(results["errors"]) or 0),
        p99_ms=None if p99 is None else p99 * 1000,
        stable_p99_ms=None if stable_p99 is None else stable_p99 * 1000,
        confidence_mean=_value(results["confidence"]),
        drift_psi=binned_psi(
            [stable_scores.get(b, 0.0) for b in bounds], [scores.get(b, 0.0) for b in bounds]
        ),
        agreement=pairs.get("agree", 0.0) / paired if paired >= 1 else None,
    )


def gate_query(gate: MetricGate, window: Window) -> str:
    """A metric gate's query with its variables ($namespace, $model, $version, $stable,
    $window) filled in."""
    return Template(gate.query).safe_substitute(
        namespace=window.namespace,
        model=window.deployment,
        version=window.candidate,
        stable=window.stable,
        window=window.range,
    )


def single(found: list[Series]) -> float | None:
    """A gate's value: its query's one number (none, or several, is no value)."""
    return found[0][1] if len(found) == 1 else None


async def measure_live(prometheus: Prometheus, window: Window) -> Measured:
    """What the runners measured of the new version next to the stable one."""
    asked = queries(window)
    answers = await asyncio.gather(*(prometheus.query(q) for q in asked.values()))
    return measured_live(dict(zip(asked, answers, strict=True)))


async def measure_gates(
    prometheus: Prometheus, gates: Sequence[MetricGate], window: Window
) -> dict[str, float | None]:
    """Each metric gate's value over the window."""
    answers = await asyncio.gather(*(prometheus.query(gate_query(g, window)) for g in gates))
    return {gate.name: single(found) for gate, found in zip(gates, answers, strict=True)}
