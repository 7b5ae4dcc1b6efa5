"""Where a site lives and what ``site.json`` records: its endpoints and its processes."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path


def default_site_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME", str(Path.home() / ".local" / "state"))
    return Path(os.environ.get("AIOS_SITE_DIR", Path(state) / "aios" / "site"))


@dataclass
class Endpoints:
    """How to reach each component of a running site (what ``aiosctl env`` prints)."""

    kubeconfig: str = ""
    kube_api: str = ""
    kafka_bootstrap: str = ""
    kafka_config: str = ""
    """The site admin's Kafka client settings, JSON (``AIOS_KAFKA_CONFIG``)."""
    kafka_operator_config: str = ""
    """The operator's: its own super user, so the API server's audit and Kafka's tell them apart."""
    temporal_address: str = ""
    opa_url: str = ""
    triton_http: str = ""
    triton_grpc: str = ""
    mqtt_url: str = ""
    otlp_url: str = ""
    """Where spans go: the site's Jaeger, OTLP over HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
    jaeger_url: str = ""
    """Jaeger's query API and UI."""
    prometheus_url: str = ""
    """The site's Prometheus: its query API, targets and rules."""
    object_store_url: str = ""
    """With KServe: the model mirror as S3 (``AWS_ENDPOINT_URL``; anonymous reads)."""
    tools_path: str = ""
    node_address: str = ""
    host_address: str = ""
    """The host's end of the node's link: how a pod reaches a server run on the host."""


@dataclass
class SiteState:
    """What ``site.json`` holds: endpoints, and who to stop."""

    directory: str
    supervisor_pid: int
    ready: bool = False
    endpoints: Endpoints = field(default_factory=Endpoints)
    processes: dict[str, int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> SiteState:
        raw = json.loads((directory / "site.json").read_text())
        raw["endpoints"] = Endpoints(**raw["endpoints"])
        return cls(**raw)

    def save(self) -> None:
        """Write atomically; components start in parallel threads, so one at a time."""
        with _SAVING:
            self._write()

    def note_process(self, name: str, pid: int, log: Path | None = None) -> None:
        """Record a started process and save, in one step: a save reads the tables that
        another component's thread, starting beside it, would otherwise be writing."""
        with _SAVING:
            self.processes[name] = pid
            if log is not None:
                self.logs[name] = str(log)
            self._write()

    def forget_process(self, name: str) -> None:
        """Drop a stopped process and save."""
        with _SAVING:
            self.processes.pop(name, None)
            self._write()

    def _write(self) -> None:
        path = Path(self.directory) / "site.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


_SAVING = threading.Lock()
