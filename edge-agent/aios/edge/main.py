"""``aios-edge``: the edge agent of one gateway.

    aios-edge --gateway city/district-7 --bootstrap kafka:9092 --data-dir /var/lib/aios-edge \\
        [--mqtt mqtt://127.0.0.1:1883] [--http-port 8080] [--simulate 3] [--metrics-port 9108]

It needs Kafka only: its configuration comes from the compacted ``aios.edge.config`` topic
(see ``aios.edge.protocol``) and is applied without a restart.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from pathlib import Path

from confluent_kafka import Producer

from aios.api import tracing
from aios.edge import spans
from aios.edge.agent import Agent, Options
from aios.edge.forwarder import Forwarder
from aios.edge.ingest import HttpIngest, Inbox, MqttIngest
from aios.edge.kafka import ConfigWatcher, ForwardedPosition, HeartbeatSender, reading_producer
from aios.edge.protocol import AgentConfig
from aios.edge.simulator import Episodes, Simulator, city_sensors
from aios.edge.telemetry import configure_logging, serve_metrics

log = logging.getLogger("aios.edge")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aios-edge", description=__doc__.split("\n")[0])
    parser.add_argument("--gateway", required=True, help="NAMESPACE/NAME of the EdgeGateway.")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("AIOS_KAFKA_BOOTSTRAP"),
        help="Kafka bootstrap servers (default: $AIOS_KAFKA_BOOTSTRAP).",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="Journal, buffer, state.")
    parser.add_argument("--mqtt", help="Subscribe to this broker (mqtt://host:port).")
    parser.add_argument(
        "--mqtt-topic", action="append", default=[], help="Topic filter (default sensors/#)."
    )
    parser.add_argument("--http-host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, help="Serve POST /readings on this port.")
    parser.add_argument("--simulate", type=int, default=0, help="Simulate N sensors.")
    parser.add_argument("--simulate-interval", type=float, default=1.0, help="Seconds per tick.")
    parser.add_argument(
        "--simulate-episodes",
        type=float,
        default=0.0,
        help="Mean seconds between pollution episodes per simulated sensor (0: none).",
    )
    parser.add_argument("--metrics-host", default="127.0.0.1")
    parser.add_argument("--metrics-port", type=int, default=9108, help="Prometheus /metrics.")
    parser.add_argument("--heartbeat-seconds", type=float, help="Override the config's period.")
    parser.add_argument("--checkpoint-seconds", type=float, default=0.5)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error("--bootstrap or $AIOS_KAFKA_BOOTSTRAP is required")
    return args


class SimulatedSensors:
    """Feeds the inbox with simulated readings: the config's sensors, else ``count`` own."""

    def __init__(self, inbox: Inbox, count: int, interval: float, episodes: Episodes) -> None:
        self.inbox, self.count, self.interval = inbox, count, interval
        self.episodes = episodes
        self.simulator: Simulator | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-simulator", daemon=True)

    def configure(self, config: AgentConfig, previous: AgentConfig | None) -> None:
        sensors = config.sensors or city_sensors(self.count, config.site)
        if previous is None or previous.sensors != config.sensors or self.simulator is None:
            self.simulator = Simulator(sensors, episodes=self.episodes)

    def start(self) -> SimulatedSensors:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            simulator = self.simulator
            if simulator is not None:
                chunk = simulator.tick(time.time())
                self.inbox.counters.add("received", len(chunk))
                self.inbox.submit(chunk).done.wait(30)
            self._stop.wait(self.interval)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    tracing.configure("aios-edge", {tracing.GATEWAY_ATTRIBUTE: args.gateway}, spans.IDS)
    options = Options(
        gateway=args.gateway,
        data_dir=args.data_dir,
        checkpoint_seconds=args.checkpoint_seconds,
        heartbeat_seconds=args.heartbeat_seconds,
    )
    agent = Agent(options)
    processor = agent.processor

    def producer() -> Producer:
        config = processor.config
        compression = config.sink.compression if config else "zstd"
        return reading_producer(args.bootstrap, args.gateway, compression)

    forwarder = Forwarder(
        processor.outbox,
        args.data_dir / "outbox.offset",
        producer,
        ForwardedPosition(args.bootstrap, args.gateway),
        lambda: processor.committed_end,
        agent.counters,
    )
    agent.attach_forwarder(forwarder)

    def on_config(config: AgentConfig, previous: AgentConfig | None) -> None:
        if previous is not None and previous.sink.compression != config.sink.compression:
            forwarder.renew_producer()

    processor.on_config.append(on_config)
    inbox = Inbox(
        processor.journal, processor.quarantine, agent.counters, processor.metrics
    ).start()
    parts: list[object] = [inbox]
    if args.simulate:
        simulated = SimulatedSensors(
            inbox,
            args.simulate,
            args.simulate_interval,
            Episodes(every_seconds=args.simulate_episodes),
        )
        processor.on_config.append(simulated.configure)
        if processor.config is not None:
            simulated.configure(processor.config, None)
        parts.append(simulated.start())
    if args.http_port is not None:
        http = HttpIngest(inbox, args.http_host, args.http_port).start()
        log.info("http ingest listening", extra={"port": http.port})
        parts.append(http)
    if args.mqtt:
        client_id = "aios-edge." + args.gateway.replace("/", ".")
        parts.append(
            MqttIngest(inbox, args.mqtt, args.mqtt_topic or ["sensors/#"], client_id).start()
        )

    def config_error(message: str) -> None:
        processor.config_error = message

    watcher = ConfigWatcher(args.bootstrap, args.gateway, processor.offer, config_error).start()
    heartbeats = HeartbeatSender(args.bootstrap, args.gateway, agent.heartbeat)

    def report_config(config: AgentConfig, previous: AgentConfig | None) -> None:
        heartbeats.send()  # the operator sees the new generation at once

    processor.on_config.append(report_config)
    port = serve_metrics(args.metrics_host, args.metrics_port, agent.counters, agent.gauges)
    agent.start()
    forwarder.start()
    heartbeats.start()
    log.info(
        "agent started",
        extra={"gateway": args.gateway, "metrics_port": port, "data_dir": str(args.data_dir)},
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    log.info("stopping")
    for part in reversed(parts):
        part.stop()  # type: ignore[attr-defined]
    watcher.stop()
    agent.stop()
    forwarder.stop()
    heartbeats.stop()
    tracing.shutdown()


if __name__ == "__main__":
    main()
