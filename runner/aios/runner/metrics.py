"""Prometheus metrics of the intent runner (``aios_runner_*``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

READINGS = Counter(
    "aios_runner_readings_total", "Records consumed, by outcome.", ["intent", "outcome"]
)
DECISIONS = Counter(
    "aios_runner_decisions_total",
    "Decisions published, by rule and kind.",
    ["intent", "rule", "fallback", "reason"],
)
HANDOFFS = Counter(
    "aios_runner_action_handoffs_total",
    "Actions handed to Temporal, by result (started, duplicate).",
    ["intent", "result"],
)
INFERENCE = Histogram(
    "aios_runner_inference_duration_seconds",
    "Model call latency per batch, by the ModelDeployment and the version that answered"
    " (none: no answer).",
    ["intent", "model", "model_deployment", "version", "role"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
)
# What a rollout's analysis reads of each version's live traffic (aios.workflows.live_analysis).
VERSION_LABELS = ["intent", "model_deployment", "version", "role"]
UNIT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MODEL_ANSWERS = Counter(
    "aios_runner_model_answers_total",
    "Readings routed to a ModelDeployment's version (a mirrored copy too), by outcome: ok, or"
    " error (it failed, or its circuit breaker was open).",
    [*VERSION_LABELS, "outcome"],
)
MODEL_SCORE = Histogram(
    "aios_runner_model_score",
    "The score in [0, 1] each version gave a reading.",
    VERSION_LABELS,
    buckets=UNIT_BUCKETS,
)
MODEL_CONFIDENCE = Histogram(
    "aios_runner_model_confidence",
    "The confidence in [0, 1] each version gave a reading.",
    VERSION_LABELS,
    buckets=UNIT_BUCKETS,
)
MODEL_PAIRS = Counter(
    "aios_runner_model_paired_answers_total",
    "Readings both the stable and a new version answered (a canary's, copied to the stable;"
    " a shadow's copy), by whether they decided alike (agree, disagree); version: the new one.",
    ["intent", "model_deployment", "version", "agreement"],
)
DECISION_LATENCY = Histogram(
    "aios_runner_decision_latency_seconds",
    "Reading time to decision published.",
    ["intent"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
BATCH = Histogram(
    "aios_runner_batch_size",
    "Records per processed batch.",
    ["intent"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
MODEL_UP = Gauge(
    "aios_runner_model_available", "1 when the model call answers.", ["intent", "model"]
)
PAUSED = Gauge(
    "aios_runner_paused", "1 while partitions are paused (hand-off retrying).", ["intent"]
)
CONSUMER_LAG = Gauge(
    "aios_runner_consumer_lag_records",
    "Records of a held source partition not yet decided: its high watermark less the next"
    " offset to decide.",
    ["intent", "topic", "partition"],
)
