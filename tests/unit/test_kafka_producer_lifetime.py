"""A producer's report thread lives as long as its owner, not as long as the process."""

from __future__ import annotations

import gc
import threading

from aios.connectors import kafka


def reports_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "kafka-reports"]


def test_a_forgotten_producer_stops_serving_reports() -> None:
    before = len(reports_threads())
    producer = kafka.AcknowledgedProducer(kafka.producer("127.0.0.1:1"))
    [thread] = [t for t in reports_threads() if t is producer._reports]
    del producer
    gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the thread kept polling a producer nobody holds"
    assert len(reports_threads()) == before


def test_a_closed_producer_stops_serving_reports() -> None:
    producer = kafka.AcknowledgedProducer(kafka.producer("127.0.0.1:1"))
    producer.close(1)
    assert not producer._reports.is_alive()
