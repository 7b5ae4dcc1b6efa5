"""A gateway's declared metrics through the agent's processor: journal, chain, buffer, and
a restart that keeps every column where the journal and the kept state expect it."""

from __future__ import annotations

import json
from pathlib import Path

from aios.api.edge_gateway import KNOWN_METRICS
from aios.api.events import Reading
from aios.edge.agent import Options, Processor
from aios.edge.parse import parse_payload
from aios.edge.protocol import AgentConfig
from aios.edge.records import Record
from aios.edge.telemetry import Counters

NOW = 1_780_000_000.0
CONFIG = AgentConfig.model_validate(
    {
        "gateway": "city/uci-device",
        "generation": 1,
        "digest": "sha256:test",
        "site": "city",
        "sensors": [{"id": "uci-1", "metrics": ["no2_raw", "co_raw", "temperature"]}],
        "filters": [{"validate": {"ranges": {"no2_raw": {"min": 0, "max": 3000}}}}],
        "sink": {"kafkaTopic": "readings"},
        "buffer": {"maxBytes": 64 << 20},
    }
)


def started(root: Path) -> Processor:
    processor = Processor(Options("city/uci-device", root), Counters())
    processor.offer(CONFIG)
    processor.step()  # applies the offered configuration
    return processor


def journal(processor: Processor, seconds: int, no2_raw: float) -> None:
    reading = {
        "sensorId": "uci-1",
        "time": NOW + seconds,
        "metrics": {"co_raw": 1360.0, "no2_raw": no2_raw, "temperature": 13.6},
    }
    chunk, rejected = parse_payload(
        json.dumps(reading).encode(), NOW + seconds, 1 << 20, processor.metrics
    )
    assert not rejected
    processor.journal.append([chunk.encode()])


def buffered(processor: Processor) -> list[Reading]:
    frames = processor.outbox.read(0, 1000)[1]
    return [Reading.model_validate_json(Record.unframe(f).value) for f in frames]


def test_declared_metrics_are_forwarded_by_name_and_survive_a_restart(tmp_path: Path) -> None:
    processor = started(tmp_path)
    assert processor.metrics.ids == [*KNOWN_METRICS, "no2_raw", "co_raw"]
    journal(processor, 0, 1046.0)
    journal(processor, 1, 9999.0)  # out of the declared range
    processor.step()
    processor.checkpoint()
    journal(processor, 2, 1100.0)  # journaled, not processed: the agent stops here

    again = Processor(Options("city/uci-device", tmp_path), Counters())
    assert again.metrics.ids == processor.metrics.ids
    again.step()
    readings = buffered(again)
    assert [r.metrics for r in readings] == [
        {"no2_raw": 1046.0, "co_raw": 1360.0, "temperature": 13.6},
        {"no2_raw": 1100.0, "co_raw": 1360.0, "temperature": 13.6},
    ]
    assert ("quarantined", "out_of_range", 1) in again.counters.snapshot()
