"""The local site: a real single-node cluster and the servers aios uses, in one directory.

``Site.start()`` creates the site's node (its own network and mount namespace,
``aios.stack.node``), then brings up, inside it and in parallel, Kubernetes (etcd, the
control plane, containerd, the kubelet, kube-proxy, CoreDNS: ``aios.stack.cluster``),
Kafka (KRaft), the Temporal dev server, OPA, Triton, Mosquitto, Jaeger and Prometheus;
then KEDA (``aios.stack.site.keda``), which needs the cluster, and KServe
(``aios.stack.site.kserve``) when asked for. Each listens on the node's
address on its usual port; it waits for each one's real health and records the endpoints
in ``site.json`` so ``aiosctl env`` and the test fixtures can find them. A component that
fails raises ``ComponentFailed`` with its log tail; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config

from aios.stack import components
from aios.stack.images import BuiltImage
from aios.stack.models import example_models
from aios.stack.node import NODE_NAME, Node
from aios.stack.process import ComponentFailed, ManagedProcess
from aios.stack.site import health, keda, kserve, services
from aios.stack.site.monitor_sync import MonitorSync
from aios.stack.site.probes import http_ok
from aios.stack.site.state import Endpoints, SiteState, default_site_dir


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
        self.monitor_sync: MonitorSync | None = None
        self.state = SiteState(directory=str(self.directory), supervisor_pid=os.getpid())

    @property
    def address(self) -> str:
        return self.node.network.address

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, only: Collection[str] | None = None, extras: Collection[str] = ()) -> Endpoints:
        """Start every component, or ``only`` the named ones (e.g. a benchmark's), and the
        optional add-ons named in ``extras`` (``OPTIONAL_ADDONS``)."""
        from aios.stack.cluster import Cluster

        self.directory.mkdir(parents=True, exist_ok=True)
        self.state.save()
        every: dict[str, Callable[[], None]] = {
            "kubernetes": lambda: Cluster(self).start(),
            "kafka": lambda: services.start_kafka(self),
            "temporal": lambda: services.start_temporal(self),
            "opa": lambda: services.start_opa(self),
            "triton": lambda: services.start_triton(self),
            "mosquitto": lambda: services.start_mosquitto(self),
            "jaeger": lambda: services.start_jaeger(self),
            "prometheus": lambda: services.start_prometheus(self),
        }
        # Add-ons of the cluster, started once Kubernetes and Kafka are up.
        addons: dict[str, Callable[[], None]] = {
            "keda": lambda: keda.start_keda(self),
            "kserve": lambda: kserve.start_kserve(self),
        }
        unknown = (set(only or ()) | set(extras)) - set(every) - set(addons)
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
            if only is None or {"kubernetes", "prometheus"} <= set(only):
                self.monitor_sync = MonitorSync(self, services.PROMETHEUS_INTERVAL_SECONDS)
                self.monitor_sync.start()
            wanted = set(every) | (set(addons) - OPTIONAL_ADDONS) if only is None else set(only)
            for name, start in addons.items():
                if {"kubernetes", name} <= wanted | set(extras):
                    start()
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
        if self.monitor_sync:
            self.monitor_sync.stop()
            self.monitor_sync = None
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
        self.state.note_process(name, process.pid)

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> ManagedProcess:
        """Start a component inside the node's namespaces, its log in ``logs/<name>.log``."""
        process = ManagedProcess(
            name, self.node.enter(argv), self.logs / f"{name}.log", env=env, cwd=cwd
        ).start()
        self.processes[name] = process
        self.state.note_process(name, process.pid, process.log)
        return process

    def problems(self, namespaces: Iterable[str] = ()) -> list[str]:
        """What is wrong with the site now (``health``): its processes that exited, its node
        when it is not Ready, under pressure or tainted, and the pods of ``namespaces`` that
        are not Ready. Quick to give up on a server that hangs: it reports on a failure."""
        found = health.exited(self.processes)
        if "kube-apiserver" not in self.processes:
            return found

        try:
            node = self.get("node", NODE_NAME, request_timeout=10)
            pods = [
                pod
                for ns in namespaces
                for pod in self.get("pods", "-n", ns, request_timeout=10)["items"]
            ]
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            return [*found, f"the cluster could not be read: {error}"]
        return found + health.node_problems(node) + health.unready_pods(pods)

    def inside_ok(self, url: str) -> bool:
        """An HTTP probe from inside the node, for what listens on its loopback only."""
        probe = self.node.enter(["curl", "-sf", "-o", "/dev/null", "--max-time", "2", url])
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0

    def api_ok(self, path: str) -> bool:
        ca = self.directory / "pki" / "ca.crt"
        return http_ok(f"{self.endpoints.kube_api}{path}", self.admin_token, ca)

    def get(self, *args: str, request_timeout: int | None = None) -> Any:
        """What ``kubectl get`` finds for ``args``, parsed from its JSON; raise as ``kubectl``
        does. ``request_timeout`` (seconds) bounds each request to a server that hangs."""
        bound = [f"--request-timeout={request_timeout}s"] if request_timeout else []
        return json.loads(self.kubectl(["get", *args, "-o", "json", *bound]))

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

    def wait_established(self, definitions: Iterable[str], timeout: float = 60) -> None:
        """Until the API server serves each named CustomResourceDefinition. ``kubectl wait
        --for=condition=Established`` fails outright on a definition that has no conditions
        yet, which is how a just-applied one starts, so this reads them itself."""
        extensions = client.ApiextensionsV1Api(
            config.new_client_from_config(config_file=self.endpoints.kubeconfig)
        )
        deadline = time.monotonic() + timeout
        for name in definitions:
            while not _established(extensions.read_custom_resource_definition(name)):
                if time.monotonic() > deadline:
                    raise ComponentFailed("kube-apiserver", f"{name} not established", None)
                time.sleep(0.2)


def _established(definition: client.V1CustomResourceDefinition) -> bool:
    conditions = (definition.status and definition.status.conditions) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


OPTIONAL_ADDONS = {"kserve"}
"""Add-ons a full site starts only when asked (``aiosctl up --with kserve``): with KServe
served, every ModelDeployment becomes an InferenceService."""
CONTROL_PLANE = ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]


def kubectl_argv(kubeconfig: str, directory: Path, args: list[str]) -> list[str]:
    """The site's kubectl, with its discovery cache in the site (not ~/.kube)."""
    return [
        str(components.KUBERNETES.binary("kubectl")),
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={directory / 'kube-cache'}",
        *args,
    ]
