"""The local site: every real component on loopback ports, in one directory.

``Site.start()`` brings up etcd, the Kubernetes control plane with a kwok node, Kafka
(KRaft), the Temporal dev server, OPA, Triton and Mosquitto in parallel, waits for each
one's real health, and records the endpoints in ``site.json`` so ``aiosctl env`` and the
test fixtures can find them. A component that fails raises ``ComponentFailed`` with its
log tail; nothing is skipped.
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
from aios.stack.pki import SitePki, ensure_site_pki
from aios.stack.process import ComponentFailed, ManagedProcess, free_port, terminate_group

ADMIN_TOKEN_USER = "aios-admin"
FAKE_NODE = "kwok-node-0"


def default_site_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME", str(Path.home() / ".local" / "state"))
    return Path(os.environ.get("AIOS_SITE_DIR", Path(state) / "aios" / "site"))


@dataclass
class Endpoints:
    """How to reach each component of a running site (what ``aiosctl env`` prints)."""

    kubeconfig: str = ""
    kube_api: str = ""
    kafka_bootstrap: str = ""
    temporal_address: str = ""
    opa_url: str = ""
    triton_http: str = ""
    triton_grpc: str = ""
    mqtt_url: str = ""
    tools_path: str = ""


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
        self.processes: dict[str, ManagedProcess] = {}
        self.endpoints = Endpoints()
        self.admin_token = ""
        self.state = SiteState(directory=str(self.directory), supervisor_pid=os.getpid())

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, only: Collection[str] | None = None) -> Endpoints:
        """Start every component, or ``only`` the named ones (e.g. a benchmark's)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.state.save()
        every: dict[str, Callable[[], None]] = {
            "kubernetes": self._start_kubernetes,
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

    def mark_ready(self) -> None:
        """Tell waiters (``aiosctl up --detach``) that the site is ready for users."""
        self.state.ready = True
        self.state.save()

    def stop(self) -> None:
        """Stop in reverse order of dependency: clients of the API server before it."""
        order = ["kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
        rest = [n for n in self.processes if n not in order]
        for name in rest + order:
            if name in self.processes:
                self.processes[name].stop()
        self.state.ready = False
        self.state.processes = {}
        if (self.directory / "site.json").exists():
            self.state.save()

    def _run(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.logs / f"{name}.log", env=env, cwd=cwd).start()
        self.processes[name] = process
        self.state.processes[name] = process.pid
        self.state.logs[name] = str(process.log)
        self.state.save()
        return process

    # -- Kubernetes ----------------------------------------------------------------------
    def _start_kubernetes(self) -> None:
        pki = ensure_site_pki(self.directory / "pki")
        etcd_port, peer_port = free_port(), free_port()
        etcd = self._run(
            "etcd",
            [
                str(components.ETCD.binary()),
                "--name=site",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=site=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ],
        )
        etcd.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{etcd_port}/health"), 60)
        self._start_apiserver(pki, etcd_port)
        kubeconfig = Path(self.endpoints.kubeconfig)
        k8s = components.KUBERNETES
        common = [f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        self._run(
            "kube-controller-manager",
            [
                str(k8s.binary("kube-controller-manager")),
                *common,
                f"--secure-port={free_port()}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                "--use-service-account-credentials=false",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
            ],
        )
        self._run(
            "kube-scheduler",
            [
                str(k8s.binary("kube-scheduler")),
                *common,
                f"--secure-port={free_port()}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
            ],
        )
        kwok = self._run(
            "kwok",
            [
                str(components.KWOK.binary()),
                f"--kubeconfig={kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        self.kubectl(["apply", "-f", "-"], stdin=json.dumps(fake_node(FAKE_NODE)))
        kwok.wait_healthy(self._node_ready, 90)
        self.processes["kube-controller-manager"].wait_healthy(self._default_service_account, 90)

    def _start_apiserver(self, pki: SitePki, etcd_port: int) -> None:
        port = free_port()
        self.admin_token = os.urandom(16).hex()
        tokens = self.directory / "pki" / "tokens.csv"
        tokens.write_text(
            f"{self.admin_token},{ADMIN_TOKEN_USER},{ADMIN_TOKEN_USER},system:masters\n"
        )
        tokens.chmod(0o600)
        apiserver = self._run(
            "kube-apiserver",
            [
                str(components.KUBERNETES.binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={pki.apiserver_cert}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--requestheader-client-ca-file={pki.ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_cert}",
                f"--proxy-client-key-file={pki.front_proxy_key}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
        )
        self.endpoints.kube_api = f"https://127.0.0.1:{port}"
        kubeconfig = self.directory / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                admin_kubeconfig(self.endpoints.kube_api, pki.ca_cert, self.admin_token), indent=2
            )
        )
        kubeconfig.chmod(0o600)
        self.endpoints.kubeconfig = str(kubeconfig)
        apiserver.wait_healthy(
            lambda: http_ok(f"{self.endpoints.kube_api}/readyz", self.admin_token, pki.ca_cert), 120
        )

    def kubectl(self, args: list[str], stdin: str | None = None) -> str:
        """Run the site's kubectl against the site; raise with its stderr on failure."""
        result = subprocess.run(
            [
                str(components.KUBERNETES.binary("kubectl")),
                f"--kubeconfig={self.endpoints.kubeconfig}",
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _node_ready(self) -> bool:
        """Ready, and schedulable: the not-ready taint is gone (the node controller's job)."""
        node = json.loads(self.kubectl(["get", "node", FAKE_NODE, "-o", "json"]))
        conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
        return conditions.get("Ready") == "True" and not node["spec"].get("taints")

    def _default_service_account(self) -> bool:
        self.kubectl(["get", "serviceaccount", "default", "-n", "default"])
        return True

    # -- Kafka ---------------------------------------------------------------------------
    def _start_kafka(self) -> None:
        home = components.KAFKA.ensure()
        broker, controller = free_port(), free_port()
        data = self.directory / "kafka"
        config = self.directory / "kafka.properties"
        config.write_text(kafka_properties(broker, controller, data))
        log4j = self.directory / "kafka-log4j2.properties"
        log4j.write_text(KAFKA_LOG4J)
        classpath = f"{home / 'libs'}/*"
        java = [
            "java",
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
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
                [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise ComponentFailed("kafka", f"storage format failed: {fmt.stderr[-2000:]}", None)
        kafka = self._run("kafka", [*java, "kafka.Kafka", str(config)])
        self.endpoints.kafka_bootstrap = f"127.0.0.1:{broker}"
        kafka.wait_healthy(lambda: kafka_ready(self.endpoints.kafka_bootstrap), 120)

    # -- Temporal ------------------------------------------------------------------------
    def _start_temporal(self) -> None:
        port = free_port()
        binary = components.TEMPORAL.binary()
        temporal = self._run(
            "temporal",
            [
                str(binary),
                "server",
                "start-dev",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--http-port={free_port()}",
                f"--metrics-port={free_port()}",
                "--headless",
                f"--db-filename={self.directory / 'temporal.db'}",
                "--namespace=default",
                "--log-format=json",
                "--log-level=warn",
            ],
        )
        self.endpoints.temporal_address = f"127.0.0.1:{port}"

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
        port = free_port()
        opa = self._run(
            "opa",
            [
                str(components.OPA.binary()),
                "run",
                "--server",
                f"--addr=127.0.0.1:{port}",
                f"--diagnostic-addr=127.0.0.1:{free_port()}",
                "--log-format=json",
                "--log-level=info",
                # Decision ids in every answer, each decision in the log: audit records
                # name the OPA decision that allowed an action.
                "--set=decision_logs.console=true",
            ],
        )
        self.endpoints.opa_url = f"http://127.0.0.1:{port}"
        opa.wait_healthy(lambda: http_ok(f"{self.endpoints.opa_url}/health"), 60)

    # -- Triton --------------------------------------------------------------------------
    def _start_triton(self) -> None:
        dist = components.triton()
        repository = self.directory / "models"
        repository.mkdir(exist_ok=True)
        http, grpc = free_port(), free_port()
        triton = self._run(
            "triton",
            [
                str(dist.binary),
                f"--model-repository={repository}",
                f"--backend-directory={dist.backends}",
                "--model-control-mode=explicit",
                "--exit-on-error=false",
                "--strict-readiness=false",
                "--http-address=127.0.0.1",
                f"--http-port={http}",
                "--grpc-address=127.0.0.1",
                f"--grpc-port={grpc}",
                "--metrics-address=127.0.0.1",
                f"--metrics-port={free_port()}",
                "--allow-cpu-metrics=true",
                "--allow-gpu-metrics=false",
            ],
            env=dist.environment(),
        )
        self.endpoints.triton_http = f"http://127.0.0.1:{http}"
        self.endpoints.triton_grpc = f"127.0.0.1:{grpc}"
        triton.wait_healthy(lambda: http_ok(f"{self.endpoints.triton_http}/v2/health/ready"), 120)

    # -- Mosquitto -----------------------------------------------------------------------
    def _start_mosquitto(self) -> None:
        port = free_port()
        store = self.directory / "mosquitto"
        store.mkdir(exist_ok=True)
        config = self.directory / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {store}/\nlog_dest stdout\nlog_type error\nlog_type warning\n"
            "log_type notice\nlog_type information\n"
        )
        mosquitto = self._run("mosquitto", [str(components.mosquitto()), "-c", str(config)])
        self.endpoints.mqtt_url = f"mqtt://127.0.0.1:{port}"
        mosquitto.wait_healthy(lambda: mqtt_ready("127.0.0.1", port), 30)


def stop_running_site(directory: Path, timeout: float = 60) -> bool:
    """Stop the site a supervisor runs in ``directory``; return False when none runs."""
    try:
        state = SiteState.load(directory)
    except FileNotFoundError:
        return False
    terminate_group(state.supervisor_pid, grace=timeout)
    for pid in state.processes.values():  # anything the supervisor could not stop
        terminate_group(pid, grace=5)
    state.ready, state.processes = False, {}
    state.save()
    return True


def fake_node(name: str) -> dict[str, object]:
    """A node kwok manages: pods bound to it become Running without any container."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "250", "nvidia.com/gpu": "4"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    }


def admin_kubeconfig(server: str, ca: Path, token: str) -> dict[str, object]:
    import base64

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "aios-local",
        "clusters": [
            {
                "name": "aios-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": ADMIN_TOKEN_USER, "user": {"token": token}}],
        "contexts": [
            {
                "name": "aios-local",
                "context": {
                    "cluster": "aios-local",
                    "user": ADMIN_TOKEN_USER,
                    "namespace": "default",
                },
            }
        ],
    }


def kafka_properties(broker: int, controller: int, data: Path) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=6",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.flush.interval.messages=9223372036854775807",
            "",
        ]
    )


KAFKA_LOG4J = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRefs = stdout
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def kafka_ready(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    # log_level 0: connection refusals while the broker starts are expected, not news
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
    metadata = admin.list_topics(timeout=2)
    return len(metadata.brokers) > 0


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
    """Wait until a supervisor reports its site ready (for ``aiosctl up --detach``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = SiteState.load(directory)
            if state.ready:
                return state
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the site in {directory} was not ready after {timeout:.0f}s")
