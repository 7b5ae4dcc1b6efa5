"""The local site: a real single-node cluster and the servers aios uses, in one directory.

``Site.start()`` creates the site's node (its own network and mount namespace,
``aios.stack.node``), then brings up, inside it and in parallel, Kubernetes (etcd, the
control plane, containerd, the kubelet, kube-proxy, CoreDNS: ``aios.stack.cluster``),
Kafka (KRaft), the Temporal dev server, OPA, Triton and Mosquitto. Each listens on the
node's address on its usual port; it waits for each one's real health and records the
endpoints in ``site.json`` so ``aiosctl env`` and the test fixtures can find them. A
component that fails raises ``ComponentFailed`` with its log tail; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aios.stack import components
from aios.stack.images import BuiltImage
from aios.stack.kafka_broker import (
    ADMIN,
    BROKER_LOG4J,
    KAFKA_PORT,
    OPERATOR,
    SiteUsers,
    broker_properties,
    client_settings,
    kafka_ready,
)
from aios.stack.models import example_models
from aios.stack.node import Node, NodeState, teardown
from aios.stack.process import ComponentFailed, ManagedProcess, log_tail, terminate_group

TEMPORAL_PORT = 7233
OPA_PORT = 8181
TRITON_HTTP_PORT, TRITON_GRPC_PORT, TRITON_METRICS_PORT = 8000, 8001, 8002
MQTT_PORT = 1883


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
            path = Path(self.directory) / "site.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self), indent=2))
            tmp.replace(path)


_SAVING = threading.Lock()


def http_ok(url: str, token: str | None = None, ca: Path | None = None) -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(request, timeout=2, context=context) as response:
        return bool(response.status == 200)


class Site:
    """A local site rooted at ``directory``; start it, use ``endpoints``, stop it."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = (directory or default_site_dir()).resolve()
        self.logs = self.directory / "logs"
        self.node = Node(self.directory / "node")
        self.processes: dict[str, ManagedProcess] = {}
        self.endpoints = Endpoints()
        self.images: dict[str, BuiltImage] = {}
        """The images its node holds (``aios.stack.images``), once Kubernetes started."""
        self.admin_token = ""
        self.state = SiteState(directory=str(self.directory), supervisor_pid=os.getpid())

    @property
    def address(self) -> str:
        return self.node.network.address

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, only: Collection[str] | None = None) -> Endpoints:
        """Start every component, or ``only`` the named ones (e.g. a benchmark's)."""
        from aios.stack.cluster import Cluster

        self.directory.mkdir(parents=True, exist_ok=True)
        self.state.save()
        every: dict[str, Callable[[], None]] = {
            "kubernetes": lambda: Cluster(self).start(),
            "kafka": self._start_kafka,
            "temporal": self._start_temporal,
            "opa": self._start_opa,
            "triton": self._start_triton,
            "mosquitto": self._start_mosquitto,
        }
        unknown = set(only or ()) - set(every)
        if unknown:
            raise ValueError(f"unknown components: {', '.join(sorted(unknown))}")
        starters = [start for name, start in every.items() if only is None or name in only]
        try:
            network = self.node.create(mirror=self._model_mirror(only))
            self.endpoints.node_address = network.address
            self.endpoints.host_address = network.host_address
            with ThreadPoolExecutor(max_workers=len(starters)) as pool:
                for future in [pool.submit(s) for s in starters]:
                    future.result()
        except BaseException:
            self.stop()
            raise
        # The site's own kubectl first, then the CLIs of its components (temporal, opa).
        tools = [components.KUBERNETES.binary("kubectl").parent]
        if only is None or "temporal" in only:
            tools.append(components.TEMPORAL.binary().parent)
        if only is None or "opa" in only:
            tools.append(components.OPA.binary().parent)
        self.endpoints.tools_path = os.pathsep.join(str(t) for t in tools)
        self.state.endpoints = self.endpoints
        self.state.save()
        return self.endpoints

    @staticmethod
    def _model_mirror(only: Collection[str] | None) -> Path | None:
        """The example models' buckets, for a node that runs model servers."""
        return example_models() if only is None or "kubernetes" in only else None

    def mark_ready(self) -> None:
        """Tell waiters (``aiosctl up --detach``) that the site is ready for users."""
        self.state.ready = True
        self.state.save()

    def stop(self) -> None:
        """The node's agents first, so no pod restarts; then the servers, the API server
        before etcd (the other way round hangs it); then whatever is left of the node."""
        order = ["kubelet", "kube-proxy"]
        order += [n for n in self.processes if n not in (*order, *CONTROL_PLANE)]
        for name in [*order, *CONTROL_PLANE]:
            if name in self.processes:
                self.processes[name].stop()
        self.node.teardown()
        self.state.ready = False
        self.state.processes = {}
        if (self.directory / "site.json").exists():
            self.state.save()

    def restart(self, name: str) -> None:
        """Restart one component process (``kube-apiserver``, ``temporal``, …) in place."""
        process = self.processes[name]
        process.restart()
        self.state.processes[name] = process.pid
        self.state.save()

    def _run(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> ManagedProcess:
        """Start a component inside the node's namespaces, its log in ``logs/<name>.log``."""
        process = ManagedProcess(
            name, self.node.enter(argv), self.logs / f"{name}.log", env=env, cwd=cwd
        ).start()
        self.processes[name] = process
        self.state.processes[name] = process.pid
        self.state.logs[name] = str(process.log)
        self.state.save()
        return process

    def inside_ok(self, url: str) -> bool:
        """An HTTP probe from inside the node, for what listens on its loopback only."""
        probe = self.node.enter(["curl", "-sf", "-o", "/dev/null", "--max-time", "2", url])
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0

    def api_ok(self, path: str) -> bool:
        ca = self.directory / "pki" / "ca.crt"
        return http_ok(f"{self.endpoints.kube_api}{path}", self.admin_token, ca)

    def kubectl(self, args: list[str], stdin: str | None = None) -> str:
        """Run the site's kubectl against the site; raise with its stderr on failure."""
        result = subprocess.run(
            kubectl_argv(self.endpoints.kubeconfig, self.directory, args),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    # -- Kafka ---------------------------------------------------------------------------
    def _start_kafka(self) -> None:
        home = components.KAFKA.ensure()
        data = self.directory / "kafka"
        users_file = self.directory / "kafka-users.json"
        if (data / "meta.properties").exists() and not users_file.exists():
            raise ComponentFailed(
                "kafka",
                f"{data} was formatted before the site's Kafka had users; remove it (its"
                " topics go with it) and start the site again",
                None,
            )
        users = SiteUsers.ensure(users_file)
        config = self.directory / "kafka.properties"
        config.touch(mode=0o600)
        config.write_text(broker_properties(self.address, data, users))
        log4j = self.directory / "kafka-log4j2.properties"
        log4j.write_text(BROKER_LOG4J)
        # Names from this file only: a SASL handshake asks the name of the broker's own
        # address, and the node has no DNS server to answer (each attempt timed out).
        hosts = self.directory / "kafka-hosts"
        hosts.write_text(f"127.0.0.1 localhost\n{self.address} kafka\n")
        classpath = f"{home / 'libs'}/*"
        java = [
            "java",
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Djdk.net.hosts.file={hosts}",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
        ]
        if not (data / "meta.properties").exists():
            cluster_id = subprocess.run(
                [*java, "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            fmt = subprocess.run(
                [
                    *java,
                    *("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)),
                    *users.scram_arguments(),
                ],
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise ComponentFailed("kafka", f"storage format failed: {fmt.stderr[-2000:]}", None)
        kafka = self._run("kafka", [*java, "kafka.Kafka", str(config)])
        admin = client_settings(ADMIN, users.admin)
        self.endpoints.kafka_bootstrap = f"{self.address}:{KAFKA_PORT}"
        self.endpoints.kafka_config = json.dumps(admin)
        self.endpoints.kafka_operator_config = json.dumps(client_settings(OPERATOR, users.operator))
        kafka.wait_healthy(lambda: kafka_ready(self.endpoints.kafka_bootstrap, admin), 120)

    # -- Temporal ------------------------------------------------------------------------
    def _start_temporal(self) -> None:
        binary = components.TEMPORAL.binary()
        temporal = self._run(
            "temporal",
            [
                str(binary),
                "server",
                "start-dev",
                "--ip=0.0.0.0",
                f"--port={TEMPORAL_PORT}",
                "--http-port=7243",
                "--metrics-port=7235",
                "--headless",
                f"--db-filename={self.directory / 'temporal.db'}",
                "--namespace=default",
                "--log-format=json",
                "--log-level=warn",
            ],
        )
        self.endpoints.temporal_address = f"{self.address}:{TEMPORAL_PORT}"

        def namespace_ready() -> bool:
            result = subprocess.run(
                [
                    str(binary),
                    "operator",
                    "namespace",
                    "describe",
                    "--namespace=default",
                    f"--address={self.endpoints.temporal_address}",
                ],
                capture_output=True,
                timeout=10,
            )
            return result.returncode == 0

        temporal.wait_healthy(namespace_ready, 120)

    # -- OPA -----------------------------------------------------------------------------
    def _start_opa(self) -> None:
        opa = self._run(
            "opa",
            [
                str(components.OPA.binary()),
                "run",
                "--server",
                f"--addr=0.0.0.0:{OPA_PORT}",
                "--diagnostic-addr=127.0.0.1:8282",
                "--log-format=json",
                "--log-level=info",
                # Decision ids in every answer, each decision in the log: audit records
                # name the OPA decision that allowed an action.
                "--set=decision_logs.console=true",
            ],
        )
        self.endpoints.opa_url = f"http://{self.address}:{OPA_PORT}"
        opa.wait_healthy(lambda: http_ok(f"{self.endpoints.opa_url}/health"), 60)

    # -- Triton --------------------------------------------------------------------------
    def _start_triton(self) -> None:
        """A Triton of the site's own, for clients and benchmarks that load models into it
        directly; ModelDeployments get theirs as pods."""
        dist = components.triton()
        repository = self.directory / "models"
        repository.mkdir(exist_ok=True)
        triton = self._run(
            "triton",
            [
                str(dist.binary),
                f"--model-repository={repository}",
                f"--backend-directory={dist.backends}",
                "--model-control-mode=explicit",
                "--exit-on-error=false",
                "--strict-readiness=false",
                "--http-address=0.0.0.0",
                f"--http-port={TRITON_HTTP_PORT}",
                "--grpc-address=0.0.0.0",
                f"--grpc-port={TRITON_GRPC_PORT}",
                "--metrics-address=127.0.0.1",
                f"--metrics-port={TRITON_METRICS_PORT}",
                "--allow-cpu-metrics=true",
                "--allow-gpu-metrics=false",
            ],
            env=dist.environment(),
        )
        self.endpoints.triton_http = f"http://{self.address}:{TRITON_HTTP_PORT}"
        self.endpoints.triton_grpc = f"{self.address}:{TRITON_GRPC_PORT}"
        triton.wait_healthy(lambda: http_ok(f"{self.endpoints.triton_http}/v2/health/ready"), 120)

    # -- Mosquitto -----------------------------------------------------------------------
    def _start_mosquitto(self) -> None:
        store = self.directory / "mosquitto"
        store.mkdir(exist_ok=True)
        config = self.directory / "mosquitto.conf"
        # ``user root``: like every component here it runs as root in the node's namespaces.
        # Dropping to the ``mosquitto`` user left the store (under a 0700 directory)
        # unwritable, so sessions and their queued messages were lost at every restart.
        config.write_text(
            f"listener {MQTT_PORT} 0.0.0.0\nallow_anonymous true\nuser root\npersistence true\n"
            f"persistence_location {store}/\nlog_dest stdout\nlog_type error\nlog_type warning\n"
            "log_type notice\nlog_type information\n"
        )
        mosquitto = self._run("mosquitto", [str(components.mosquitto()), "-c", str(config)])
        self.endpoints.mqtt_url = f"mqtt://{self.address}:{MQTT_PORT}"
        mosquitto.wait_healthy(lambda: mqtt_ready(self.address, MQTT_PORT), 30)


CONTROL_PLANE = ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]


def kubectl_argv(kubeconfig: str, directory: Path, args: list[str]) -> list[str]:
    """The site's kubectl, with its discovery cache in the site (not ~/.kube)."""
    return [
        str(components.KUBERNETES.binary("kubectl")),
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={directory / 'kube-cache'}",
        *args,
    ]


def stop_running_site(directory: Path, timeout: float = 60) -> bool:
    """Stop the site a supervisor runs in ``directory``; return False when none runs."""
    try:
        state = SiteState.load(directory)
    except FileNotFoundError:
        return False
    terminate_group(state.supervisor_pid, grace=timeout)
    for pid in state.processes.values():  # anything the supervisor could not stop
        terminate_group(pid, grace=5)
    node = NodeState.load(directory / "node" / "node.json")
    if node is not None:  # a supervisor killed before it could tear its node down
        teardown(node)
        (directory / "node" / "node.json").unlink(missing_ok=True)  # its own teardown won
    state.ready, state.processes = False, {}
    state.save()
    return True


def mqtt_ready(host: str, port: int) -> bool:
    """A full MQTT CONNECT/CONNACK exchange, not just an open port."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"aios-probe-{os.getpid()}")
    client.connect(host, port, keepalive=5)
    try:
        for _ in range(20):
            client.loop(timeout=0.1)
            if client.is_connected():
                return True
        return False
    finally:
        client.disconnect()


def wait_for_site(directory: Path, timeout: float) -> SiteState:
    """Wait until a supervisor reports its site ready (for ``aiosctl up --detach``); fail
    at once, with the end of its log, when the supervisor dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = SiteState.load(directory)
            if state.ready:
                return state
            if state.supervisor_pid and not process_alive(state.supervisor_pid):
                tail = log_tail(directory / "supervisor.log", 30)
                raise RuntimeError(f"the site in {directory} did not start:\n{tail}")
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the site in {directory} was not ready after {timeout:.0f}s")


def process_alive(pid: int) -> bool:
    """Alive and not a zombie (a detached supervisor is reaped by init, not by us)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
