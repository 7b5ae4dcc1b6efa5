"""Ingest: MQTT, HTTP and the simulator hand readings to the inbox, which journals them
(group commit: one write and at most one fsync for everything that arrived meanwhile)
and only then acknowledges: an HTTP 202 or an MQTT PUBACK means the reading is on disk."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from aios.edge.columns import Chunk, NameTable
from aios.edge.parse import MAX_PAYLOAD_BYTES, Rejected, parse_payload
from aios.edge.segments import DiskFull, LogFull, SegmentLog
from aios.edge.telemetry import Counters

log = logging.getLogger("aios.edge.ingest")


@dataclass
class Ticket:
    """An ingest call waiting for its readings to be journaled."""

    chunk: Chunk
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    refusal: str = ""
    """Why the readings were not journaled (the sender is told, and retries)."""
    callback: Callable[[bool], None] | None = None

    def finish(self, ok: bool, refusal: str = "") -> None:
        self.ok, self.refusal = ok, refusal
        self.done.set()
        if self.callback is not None:
            self.callback(ok)


class Inbox:
    """The front door: quarantines what does not parse, journals the rest, acknowledges."""

    def __init__(
        self, journal: SegmentLog, quarantine: SegmentLog, counters: Counters, metrics: NameTable
    ) -> None:
        self.journal, self.quarantine_log, self.counters = journal, quarantine, counters
        self.metrics = metrics
        """The processor's metric table: a reading naming any other metric is rejected."""
        self.max_payload = MAX_PAYLOAD_BYTES
        self._pending: list[Ticket] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="edge-inbox", daemon=True)

    def start(self) -> Inbox:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def receive(
        self,
        payload: bytes,
        trace_id: bytes | None = None,
        callback: Callable[[bool], None] | None = None,
    ) -> tuple[Ticket, list[Rejected]]:
        """Parse a payload; quarantine what is bad; queue the rest for the journal."""
        chunk, rejected = parse_payload(payload, time.time(), self.max_payload, self.metrics)
        if trace_id is not None and len(chunk):
            chunk.trace[:] = np.frombuffer(trace_id, dtype="V16")[0]
        self.counters.add("received", len(chunk) + len(rejected))
        self.record_rejected(rejected)
        return self.submit(chunk, callback), rejected

    def record_rejected(self, rejected: list[Rejected]) -> None:
        if not rejected:
            return
        for item in rejected:
            self.counters.add("quarantined", 1, item.reason)
        entries = [
            json.dumps(
                {"time": time.time(), "reason": r.reason, "detail": r.detail, "raw": r.raw}
            ).encode()
            for r in rejected
        ]
        try:
            self.quarantine_log.append(entries)
        except DiskFull as error:  # the rejections are counted; their copies must wait
            log.warning("quarantine not written: %s", error)

    def submit(self, chunk: Chunk, callback: Callable[[bool], None] | None = None) -> Ticket:
        ticket = Ticket(chunk, callback=callback)
        if not len(chunk):
            ticket.finish(True)
            return ticket
        with self._cond:
            self._pending.append(ticket)
            self._cond.notify()
        return ticket

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop and not self._pending:
                    return
                tickets, self._pending = self._pending, []
            refusal, reason = "", ""
            try:
                self.journal.append([t.chunk.encode() for t in tickets])
            except DiskFull as error:
                refusal, reason = f"disk full, retry later: {error}", "disk_full"
            except LogFull as error:
                refusal, reason = f"buffer full, retry later: {error}", "journal_full"
            if refusal:
                log.warning("readings refused: %s", refusal)
            rows = sum(len(t.chunk) for t in tickets)
            self.counters.add("dropped" if refusal else "accepted", rows, reason)
            for ticket in tickets:
                ticket.finish(not refusal, refusal)


def _trace_id(header: str | None) -> bytes | None:
    """The trace id of a W3C ``traceparent`` header, if it is well formed."""
    if not header:
        return None
    parts = header.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    try:
        return bytes.fromhex(parts[1])
    except ValueError:
        return None


class HttpIngest:
    """``POST /readings`` (one JSON reading or an array): 202 once journaled, 413 when too
    large, 503 when the journal or its disk is full (retry later; the body says which);
    ``GET /healthz``."""

    def __init__(self, inbox: Inbox, host: str, port: int, timeout: float = 30.0) -> None:
        inbox_ = inbox

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._reply(200, {"ok": True})
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self) -> None:
                if self.path != "/readings":
                    self._reply(404, {"error": "not found"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > inbox_.max_payload:
                    self.rfile.read(min(length, inbox_.max_payload * 4))
                    inbox_.counters.add("received", 1)
                    inbox_.record_rejected(
                        [Rejected("oversized", f"{length} bytes", f"<{length} bytes>")]
                    )
                    self._reply(413, {"error": "oversized", "limit": inbox_.max_payload})
                    return
                body = self.rfile.read(length)
                ticket, rejected = inbox_.receive(body, _trace_id(self.headers.get("traceparent")))
                if not ticket.done.wait(timeout):
                    self._reply(503, {"error": "the journal did not answer in time, retry later"})
                    return
                if not ticket.ok:
                    self._reply(503, {"error": ticket.refusal})
                    return
                self._reply(
                    202,
                    {
                        "accepted": len(ticket.chunk),
                        "rejected": [{"reason": r.reason, "detail": r.detail} for r in rejected],
                    },
                )

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 503:
                    self.send_header("Retry-After", "5")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="edge-http", daemon=True
        )

    def start(self) -> HttpIngest:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MqttIngest:
    """Subscribes with QoS 1 and a persistent session, and acknowledges a message only once
    its readings are journaled: after a crash the broker delivers the rest again."""

    def __init__(self, inbox: Inbox, url: str, topics: list[str], client_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.inbox, self.topics = inbox, topics
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            manual_ack=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 10)

    def start(self) -> MqttIngest:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        log.info("mqtt connected", extra={"reason": str(reason), "topics": self.topics})
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
        """Readings sent before the broker acknowledged the subscription reach no one."""
        log.info("mqtt subscribed", extra={"granted": [str(r) for r in reasons]})

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        mid, qos = message.mid, message.qos

        def acknowledge(ok: bool) -> None:
            if ok and qos > 0:
                client.ack(mid, qos)

        self.inbox.receive(message.payload, callback=acknowledge)
