"""Counters (what heartbeats and Prometheus report, kept across restarts in checkpoints),
the Prometheus endpoint, and structured JSON logs."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

OUTCOMES = ("received", "accepted", "quarantined", "dropped", "emitted", "forwarded")
"""received: parsed at ingest; accepted: journaled (acknowledged); quarantined/dropped:
with a reason; emitted: records the chain wrote to the buffer; forwarded: delivered."""


class Counters:
    """Monotonic counts by (outcome, reason), shared by every thread of the agent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Counter[tuple[str, str]] = Counter()

    def add(self, outcome: str, count: int, reason: str = "") -> None:
        if count:
            with self._lock:
                self._values[(outcome, reason)] += count

    def add_all(self, outcome: str, reasons: Counter[str]) -> None:
        with self._lock:
            for reason, count in reasons.items():
                self._values[(outcome, reason)] += count

    def total(self, outcome: str) -> int:
        with self._lock:
            return sum(v for (o, _), v in self._values.items() if o == outcome)

    def reasons(self) -> dict[str, int]:
        """Dropped and quarantined counts by reason (the heartbeat's breakdown)."""
        with self._lock:
            out: Counter[str] = Counter()
            for (outcome, reason), value in self._values.items():
                if outcome in ("dropped", "quarantined") and reason:
                    out[reason] += value
            return dict(out)

    def snapshot(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return [(o, r, v) for (o, r), v in sorted(self._values.items())]

    def restore(self, items: list[list[Any]]) -> None:
        with self._lock:
            self._values = Counter({(str(o), str(r)): int(v) for o, r, v in items})


Gauges = Callable[[], dict[str, float]]


class AgentCollector(Collector):
    """Exposes the counters and the agent's gauges at scrape time (no double bookkeeping)."""

    def __init__(self, counters: Counters, gauges: Gauges) -> None:
        self.counters, self.gauges = counters, gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        readings = CounterMetricFamily(
            "aios_edge_readings", "Readings by outcome and reason.", labels=["outcome", "reason"]
        )
        for outcome, reason, value in self.counters.snapshot():
            readings.add_metric([outcome, reason], value)
        yield readings
        for name, number in self.gauges().items():
            if name.endswith("_total"):
                yield CounterMetricFamily(name.removesuffix("_total"), name, value=number)
            else:
                yield GaugeMetricFamily(name, name, value=number)


def serve_metrics(host: str, port: int, counters: Counters, gauges: Gauges) -> int:
    """Serve /metrics; return the port (useful when ``port`` is 0)."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(counters, gauges))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    _standard = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._standard})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
