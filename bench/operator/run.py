"""Operator benchmark: reconciling many objects beside the API server's own limit, as ratios.

DESIGN.md asks for 10,000 objects per operator with the API server as the bottleneck, so
the peer is the least any operator must do per object against the same API server:

* the limit — a bare client creates N EdgeGateways, then writes each one's status
  (``observedGeneration``) with the same concurrency: create + one status write per object;
* aios — the same N EdgeGateways created with the same concurrency while the operator
  runs (one pod installed by the chart, as ``make run`` runs it, watching the benchmark's
  namespace) with its admission webhook: each create is
  checked against the Policies in OPA, and each reconcile publishes the gateway's config
  record to Kafka, audits it and writes the status. Time runs from the first create until
  every object reports ``observedGeneration == generation``; a watch records each one's
  create → reconciled latency (p50 / p99).

EdgeGateways are what a city has in the thousands (one per lamp post). The local site
(Kubernetes, Kafka, Temporal, OPA) is started here.

    .venv/bin/python bench/operator/run.py [--objects 500] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch

from aios.api import GROUP, VERSION
from aios.stack import release
from aios.stack.site import Site

PLURAL = "edgegateways"
OPERATOR = release.OPERATOR_SELECTOR + release.RELEASE
EXAMPLE = Path(__file__).parents[2] / "examples" / "city-air-quality" / "district-7.yaml"
SINK = "bench.gateways.readings"


def gateway(name: str) -> dict[str, Any]:
    """The example's gateway under another name, without a simulated agent."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name, "labels": body["metadata"]["labels"]}
    body["spec"]["sink"]["kafkaTopic"] = SINK
    return dict(body)


def create_namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def in_parallel(work: Callable[[int], Any], count: int, concurrency: int) -> float:
    """Seconds to run ``work(i)`` for every i with ``concurrency`` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work, range(count)))
    return time.perf_counter() - start


class Reconciled:
    """Watches a namespace and records when each object first reports its generation."""

    def __init__(self, api: client.CustomObjectsApi, namespace: str, expected: int) -> None:
        self.api, self.namespace, self.expected = api, namespace, expected
        self.seen: dict[str, float] = {}
        self.done = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream = self._watch.stream(
            self.api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            timeout_seconds=3600,
        )
        for event in stream:
            obj = event["object"]
            meta, status = obj["metadata"], obj.get("status") or {}
            if status.get("observedGeneration") == meta["generation"]:
                self.seen.setdefault(meta["name"], time.perf_counter())
                if len(self.seen) >= self.expected:
                    self.done.set()
                    self._watch.stop()
                    return

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            raise TimeoutError(f"{len(self.seen)}/{self.expected} reconciled in {timeout}s")


def create_all(
    api: client.CustomObjectsApi, namespace: str, names: list[str], concurrency: int
) -> tuple[float, dict[str, float]]:
    """Seconds to create a gateway per name, and when each create returned."""
    created: dict[str, float] = {}

    def create(i: int) -> None:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, gateway(names[i]))
        created[names[i]] = time.perf_counter()

    return in_parallel(create, len(names), concurrency), created


def gateway_names(count: int) -> list[str]:
    return [f"gw-{i:05d}" for i in range(count)]


def peer(api: client.CustomObjectsApi, namespace: str, count: int, concurrency: int) -> float:
    """Create, then write each object's status as an operator would at the least."""
    names = gateway_names(count)
    start = time.perf_counter()

    def observe(i: int) -> None:
        patch = {"status": {"observedGeneration": 1}}
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, names[i], patch
        )

    creating, _ = create_all(api, namespace, names, concurrency)
    in_parallel(observe, count, concurrency)
    total = time.perf_counter() - start
    print(f"  bare client: {count} creates in {creating:.1f}s, all observed after {total:.1f}s")
    return total


def aios(
    api: client.CustomObjectsApi, namespace: str, count: int, concurrency: int, timeout: float
) -> tuple[float, list[float]]:
    """Create while the operator runs; time until every object is reconciled."""
    names = gateway_names(count)
    reconciled = Reconciled(api, namespace, count)
    time.sleep(1)  # the watch is established before the first create
    start = time.perf_counter()
    creating, created = create_all(api, namespace, names, concurrency)
    reconciled.wait(timeout)
    total = max(reconciled.seen.values()) - start
    latencies = [reconciled.seen[n] - created[n] for n in names]
    print(f"  aios: {count} creates (through admission) in {creating:.1f}s, "
          f"all reconciled after {total:.1f}s")  # fmt: skip
    return total, latencies


def operator_cgroup(site: Site) -> Path:
    """The operator container's CPU accounting, found from its pod's container id."""
    pods = json.loads(
        site.kubectl(["get", "pods", "-n", release.NAMESPACE, "-l", OPERATOR, "-o", "json"])
    )["items"]
    (container,) = pods[0]["status"]["containerStatuses"]
    found = Path("/sys/fs/cgroup/cpuacct") / site.node.network.cgroup
    return next(found.rglob(container["containerID"].split("://", 1)[1]))


def cpu_seconds(cgroup: Path) -> float:
    """User + system CPU time of a container so far (``cpuacct.usage``, nanoseconds)."""
    return int((cgroup / "cpuacct.usage").read_text()) / 1e9


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="aios-bench-operator-"))
    site = Site(directory)
    site.start(only={"kubernetes", "kafka", "temporal", "opa"})
    try:
        for crd in sorted((release.CHART / "crds").glob("*.yaml")):
            site.kubectl(["apply", "--server-side", "-f", str(crd)])
        api_client = config.new_client_from_config(config_file=site.endpoints.kubeconfig)
        api_client.configuration.connection_pool_maxsize = args.concurrency
        api, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
        for namespace in ("bench-peer", "bench-aios"):
            create_namespace(core, namespace)
        print(f"{args.objects} EdgeGateways, {args.concurrency} concurrent clients")
        limit = peer(api, "bench-peer", args.objects, args.concurrency)
        release.install(site, {"operator": {"replicas": 1, "watchNamespaces": ["bench-aios"]}})
        operator = operator_cgroup(site)
        before = cpu_seconds(operator)
        ours, latencies = aios(api, "bench-aios", args.objects, args.concurrency, args.timeout)
        cpu = cpu_seconds(operator) - before
        print(
            f"  operator CPU: {cpu:.1f}s, {cpu / args.objects * 1000:.0f} ms per object "
            f"(admission + reconcile), {os.cpu_count()} cores on the machine"
        )
        print(
            f"  reconcile latency (create returned → status observed): "
            f"p50 {percentile(latencies, 50) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.0f} ms"
        )
        print(
            f"objects/s: aios {args.objects / ours:.1f}, bare client {args.objects / limit:.1f} "
            f"-> ratio (aios / limit, throughput): {limit / ours:.2f}x"
        )
    finally:
        site.stop()


if __name__ == "__main__":
    main()
