"""Operator benchmark: reconciling a city's objects beside the API server's own limit, as
ratios, at 1,000 and 10,000 objects; then the operator's memory, and a restart.

DESIGN.md asks for 10,000 objects per operator with the API server as the bottleneck, so
the peer is the least any operator must do per object against the same API server:

* the limit: a bare client creates the N objects, then writes each one's status
  (``observedGeneration``) with the same concurrency: create + one status write each;
* aios: the same N objects created with the same concurrency while the operator runs (one
  pod installed by the chart, as ``make run`` runs it) with its admission webhook. Each
  create is checked against the Policies in OPA; each gateway's reconcile publishes its
  config record to Kafka and audits it, each paused intent's creates its three topics and
  applies its runner and the namespace's worker, each dryrun Policy's loads it into OPA.
  Time runs from the first create until every object reports
  ``observedGeneration == generation``; a watch records each one's create → reconciled
  latency (p50 / p99).

The mix is a city's: EdgeGateways (one per lamp post) and, per ten of them, a paused
AutomationIntent and a Policy in dryrun. After the largest N:

* memory: the operator's resident set with every object in its stores, once all have
  settled: the median of a minute's readings, with its anonymous and file-backed parts;
* restart: once every object is as far as it gets, the operator's Deployment is
  restarted; time until the new pod leads, holds every object and has nothing to do, and
  until its first periodic pass over all of them, and how many writes it made to them (the
  API server's audit log: ``cluster.AUDIT_LOG``).

    .venv/bin/python bench/operator/run.py [--objects 1000 10000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import yaml
from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families

from aios.api import GROUP, VERSION, AutomationIntent, EdgeGateway, Policy
from aios.operator.runtime.heap import TRIM_EVERY
from aios.stack import release
from aios.stack.cluster import AUDIT_LOG
from aios.stack.site import Site

OPERATOR = release.OPERATOR_SELECTOR + release.RELEASE
EXAMPLES = Path(__file__).parents[2] / "examples" / "city-air-quality"
SINK = "bench.gateways.readings"
PLURALS = {m.crd.kind: m.crd.plural for m in (EdgeGateway, AutomationIntent, Policy)}
WATCH_SECONDS = 300
"""Each watch request's length; the follower resumes where the last one ended."""
POD_NAME = "authentication.kubernetes.io/pod-name"
MEMORY_SECONDS = 2 * TRIM_EVERY
"""How long the settled operator's memory is read: two of its heap trims."""
OPERATOR_VALUES = {
    "replicas": 1,
    # Measured, not capped: the operator's limit is raised so a high reading shows as such.
    "resources": {"limits": {"memory": "2Gi"}},
}


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / name).read_text()))


def gateway(name: str) -> dict[str, Any]:
    """The example's gateway under another name, without a simulated agent."""
    body = example("district-7.yaml")
    body["metadata"] = {"name": name, "labels": body["metadata"]["labels"]}
    body["spec"]["sink"]["kafkaTopic"] = SINK
    return body


def intent(name: str) -> dict[str, Any]:
    """The example's intent, paused (its runner scaled to zero), one partition per topic."""
    body = example("pm25-alerting.yaml")
    body["metadata"] = {"name": name}
    body["spec"]["mode"] = "paused"
    body["spec"]["topics"]["partitions"] = 1
    return body


def policy(name: str) -> dict[str, Any]:
    """The example's Policy in dryrun, checking actions only (nothing to audit)."""
    body = example("actuation-needs-approval.yaml")
    body["metadata"] = {"name": name}
    body["spec"]["enforcement"] = "dryrun"
    body["spec"]["scope"]["kinds"] = ["Action"]
    return body


def city(count: int) -> list[dict[str, Any]]:
    """``count`` objects: per ten, eight gateways, a paused intent and a dryrun Policy."""
    objects = []
    for i in range(count):
        match i % 10:
            case 8:
                objects.append(intent(f"intent-{i:05d}"))
            case 9:
                objects.append(policy(f"policy-{i:05d}"))
            case _:
                objects.append(gateway(f"gw-{i:05d}"))
    return objects


COMPONENTS = ("kube-apiserver", "etcd", "opa", "kafka")
"""The site's processes a create and its reconcile cost CPU in (besides the operator)."""


def component_cpu(site: Site) -> Counter[str]:
    """CPU seconds (user + system) each component has used so far."""
    used: Counter[str] = Counter()
    for name in COMPONENTS:
        process = site.processes.get(name)
        if process is not None and process.pid is not None:
            times = psutil.Process(process.pid).cpu_times()
            used[name] = times.user + times.system
    return used


def cpu_per_object(before: Counter[str], after: Counter[str], count: int) -> str:
    return ", ".join(f"{k} {(after[k] - before[k]) / count * 1000:.1f}" for k in after)


Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(text: str) -> Samples:
    """A Prometheus text exposition's samples by name: labels and value of each."""
    found: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name].append((sample.labels, sample.value))
    return found


def scrape(url: str, timeout: float) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return samples(answer.read().decode())


def api_requests(site: Site) -> Counter[str]:
    """Requests the API server has served so far, by verb and resource (its own
    ``apiserver_request_total``): what each object costs it."""
    served: Counter[str] = Counter()
    text = site.kubectl(["get", "--raw", "/metrics"])
    for labels, value in samples(text)["apiserver_request_total"]:
        resource = "/".join(p for p in (labels.get("resource"), labels.get("subresource")) if p)
        served[f"{labels.get('verb')} {resource}"] += int(value)
    return served


def requests_per_object(before: Counter[str], after: Counter[str], count: int) -> str:
    """The requests served between two readings, per object, most frequent first (those
    under one per hundred objects left out)."""
    served = after - before
    shown = [(k, n / count) for k, n in served.most_common() if n / count >= 0.01]
    return ", ".join(f"{k} {per:.2f}" for k, per in shown)


def opa_requests(site: Site) -> tuple[Counter[str], dict[str, float]]:
    """Requests OPA has served so far and the seconds it spent on them, by method and
    handler (its own ``http_request_duration_seconds``): decisions (``post v1/data``),
    Policy data writes and reads, module loads."""
    served: Counter[str] = Counter()
    seconds: dict[str, float] = {}
    found = scrape(f"{site.endpoints.opa_url}/metrics", timeout=10)
    for labels, value in found["http_request_duration_seconds_count"]:
        served[f"{labels.get('method')} {labels.get('handler')}"] += int(value)
    for labels, value in found["http_request_duration_seconds_sum"]:
        key = f"{labels.get('method')} {labels.get('handler')}"
        seconds[key] = seconds.get(key, 0.0) + value
    return served, seconds


def opa_per_object(
    before: tuple[Counter[str], dict[str, float]],
    after: tuple[Counter[str], dict[str, float]],
    count: int,
) -> str:
    """OPA's requests between two readings per object, with the time each took on
    average, most frequent first."""
    served = after[0] - before[0]

    def each_ms(key: str) -> float:
        return (after[1][key] - before[1].get(key, 0.0)) / served[key] * 1000

    return ", ".join(
        f"{key} {n / count:.2f} ({each_ms(key):.1f} ms each)"
        for key, n in served.most_common()
        if n / count >= 0.01
    )


def in_parallel(work: Callable[[int], Any], count: int, concurrency: int) -> float:
    """Seconds to run ``work(i)`` for every i with ``concurrency`` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work, range(count)))
    return time.perf_counter() - start


class Reconciled:
    """Watches a namespace's kinds; records when each object first reports its generation."""

    def __init__(self, api: client.CustomObjectsApi, namespace: str, expected: int) -> None:
        self.api, self.namespace, self.expected = api, namespace, expected
        self.seen: dict[str, float] = {}
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._watches = [watch.Watch() for _ in PLURALS]
        self._ready = threading.Barrier(len(PLURALS) + 1)
        for plural, stream in zip(PLURALS.values(), self._watches, strict=True):
            threading.Thread(target=self._run, args=(plural, stream), daemon=True).start()
        self._ready.wait(60)

    def _run(self, plural: str, stream: watch.Watch) -> None:
        try:
            self._follow(plural, stream)
        except Exception:
            if not self.done.is_set():  # after the measurement: the site going away
                raise

    def _follow(self, plural: str, stream: watch.Watch) -> None:
        """From the list's version on; a watch the API server ends (its timeout, or a
        definition's update) is resumed from the last version seen, until every object
        has reported."""
        listed: Any = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)
        version = listed["metadata"]["resourceVersion"]
        self._ready.wait(60)
        while not self.done.is_set():
            for event in stream.stream(
                self.api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                plural,
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
            ):
                obj = event["object"]
                meta, status = obj["metadata"], obj.get("status") or {}
                version = meta["resourceVersion"]
                if status.get("observedGeneration") == meta["generation"]:
                    with self._lock:
                        self.seen.setdefault(f"{obj['kind']}/{meta['name']}", time.perf_counter())
                        if len(self.seen) >= self.expected:
                            self.done.set()
                if self.done.is_set():
                    stream.stop()

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            missing = Counter(k.split("/")[0] for k in self.seen)
            raise TimeoutError(f"{len(self.seen)}/{self.expected} reconciled ({missing})")


def key(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def create_all(
    api: client.CustomObjectsApi, namespace: str, objects: list[dict[str, Any]], concurrency: int
) -> tuple[float, dict[str, float]]:
    """Seconds to create every object, and when each create returned."""
    created: dict[str, float] = {}

    def create(i: int) -> None:
        obj = objects[i]
        plural = PLURALS[obj["kind"]]
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, obj)
        created[key(obj)] = time.perf_counter()

    return in_parallel(create, len(objects), concurrency), created


def peer(api: client.CustomObjectsApi, namespace: str, count: int, concurrency: int) -> float:
    """Create, then write each object's status as an operator would at the least."""
    objects = city(count)
    start = time.perf_counter()

    def observe(i: int) -> None:
        obj = objects[i]
        patch = {"status": {"observedGeneration": 1}}
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURALS[obj["kind"]], obj["metadata"]["name"], patch
        )

    creating, _ = create_all(api, namespace, objects, concurrency)
    in_parallel(observe, count, concurrency)
    total = time.perf_counter() - start
    print(f"  bare client: {count} creates in {creating:.1f}s, all observed after {total:.1f}s")
    return total


def aios(
    api: client.CustomObjectsApi, namespace: str, count: int, concurrency: int, timeout: float
) -> tuple[float, list[float]]:
    """Create while the operator runs; time until every object is reconciled."""
    objects = city(count)
    reconciled = Reconciled(api, namespace, count)
    start = time.perf_counter()
    creating, created = create_all(api, namespace, objects, concurrency)
    reconciled.wait(timeout)
    total = max(reconciled.seen.values()) - start
    latencies = [reconciled.seen[key(o)] - created[key(o)] for o in objects]
    print(f"  aios: {count} creates (through admission) in {creating:.1f}s, "
          f"all reconciled after {total:.1f}s")  # fmt: skip
    return total, latencies


def operator_pod(site: Site) -> dict[str, Any]:
    pods = site.get("pods", "-n", release.NAMESPACE, "-l", OPERATOR)["items"]
    return next(p for p in pods if not p["metadata"].get("deletionTimestamp"))


def container_cgroup(site: Site, controller: str, pod: dict[str, Any]) -> Path:
    """The operator container's cgroup directory under ``controller``."""
    (container,) = pod["status"]["containerStatuses"]
    found = Path("/sys/fs/cgroup") / controller / site.node.network.cgroup
    return next(found.rglob(container["containerID"].split("://", 1)[1]))


def cpu_seconds(cgroup: Path) -> float:
    """User + system CPU time of a container so far (``cpuacct.usage``, nanoseconds)."""
    return int((cgroup / "cpuacct.usage").read_text()) / 1e9


RESIDENT_FIELDS = ("VmRSS", "RssAnon", "RssFile")
"""The resident set, and its anonymous (heap, stacks) and file-backed (code) parts."""


def resident_mb(site: Site, pod: dict[str, Any]) -> dict[str, float]:
    """The operator container's processes' ``RESIDENT_FIELDS`` (/proc status), in MB."""
    procs = container_cgroup(site, "pids", pod) / "cgroup.procs"
    total_kb: Counter[str] = Counter()
    for pid in procs.read_text().split():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            field, _, value = line.partition(":")
            if field in RESIDENT_FIELDS:
                total_kb[field] += int(value.split()[0])
    return {field: total_kb[field] / 1024 for field in RESIDENT_FIELDS}


def resident_over(
    site: Site, pod: dict[str, Any], seconds: float, every: float = 1.0
) -> list[dict[str, float]]:
    """``resident_mb`` once every ``every`` seconds for ``seconds``: one reading moves by
    about 10 MB as the operator's heap grows and is trimmed, so a run reports their median."""
    readings = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        readings.append(resident_mb(site, pod))
        time.sleep(every)
    return readings


def memory_summary(readings: list[dict[str, float]]) -> str:
    resident = [r["VmRSS"] for r in readings]
    parts = ", ".join(
        f"{field} {statistics.median(r[field] for r in readings):.0f}"
        for field in RESIDENT_FIELDS[1:]
    )
    return (
        f"median {statistics.median(resident):.0f} MB (min {min(resident):.0f}, "
        f"max {max(resident):.0f}; {parts}) over {len(readings)} readings"
    )


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def operator_metrics(pod: dict[str, Any]) -> Samples:
    return scrape(f"http://{pod['status']['podIP']}:9090/metrics", timeout=5)


def settled(api: client.CustomObjectsApi, namespaces: list[str]) -> bool:
    """Every object as far as it gets without agents: intents and Policies Ready, gateways'
    configs published (their agents run elsewhere)."""
    for namespace in namespaces:
        for kind, plural in PLURALS.items():
            listed: Any = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
            wanted = "ConfigPublished" if kind == "EdgeGateway" else "Ready"
            for item in listed["items"]:
                conditions = (item.get("status") or {}).get("conditions") or []
                if not any(c["type"] == wanted and c["status"] == "True" for c in conditions):
                    return False
    return True


def by_kind(found: Samples, metric: str) -> dict[str, float]:
    """One of the operator's metrics by its ``kind`` label."""
    return {labels["kind"]: value for labels, value in found[f"aios_operator_{metric}"]}


def restart(site: Site, expected: Counter[str], namespaces: list[str], timeout: float) -> None:
    """Restart the operator; report when the new pod is current, and what it wrote."""
    before = operator_pod(site)["metadata"]["name"]
    start = time.perf_counter()
    site.kubectl(["rollout", "restart", "deployment", release.RELEASE, "-n", release.NAMESPACE])
    current = passed = None
    pod: dict[str, Any] = {}
    while passed is None:
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"the restarted operator was not current after {timeout:.0f}s")
        time.sleep(0.2)
        lease = site.get("lease", release.RELEASE, "-n", release.NAMESPACE)
        holder = (lease.get("spec") or {}).get("holderIdentity")
        if holder in (None, before):
            continue
        pod = operator_pod(site)
        if pod["metadata"]["name"] != holder or not pod["status"].get("podIP"):
            continue
        try:
            found = operator_metrics(pod)
        except OSError:
            continue
        held, queued = by_kind(found, "objects"), by_kind(found, "queue_depth")
        holds = all(held.get(k, 0) >= expected[k] for k in expected)
        idle = all(queued.get(k, 1) == 0 for k in expected)
        if current is None and holds and idle:
            current = time.perf_counter() - start
        ticks = by_kind(found, "ticks_total")
        ticked = all(ticks.get(k, 0) >= 1 for k in expected)
        if current is not None and ticked and idle:
            passed = time.perf_counter() - start
    name = pod["metadata"]["name"]
    writes: Counter[str] = Counter()
    for line in (site.logs / AUDIT_LOG).read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        by_new = (event["user"].get("extra") or {}).get(POD_NAME) == [name]
        if by_new and ref.get("namespace") in namespaces:
            resource = "/".join(p for p in (ref.get("resource"), ref.get("subresource")) if p)
            writes[f"{event['verb']} {resource}"] += 1
    total = sum(expected.values())
    print(f"  restart: the new pod leads, holds all {total} objects and has nothing to do "
          f"{current:.1f}s after the restart; its first pass over them all done at "
          f"{passed:.1f}s; writes to them: {sum(writes.values())} {dict(writes)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--workers", type=int, default=None, help="the operator's reconciles per kind (chart)"
    )
    parser.add_argument("--timeout", type=float, default=3600)
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
        namespaces = {n: (f"bench-peer-{n}", f"bench-aios-{n}") for n in args.objects}
        for pair in namespaces.values():
            for namespace in pair:
                core.create_namespace(client.V1Namespace(metadata={"name": namespace}))
        watched = [aios_namespace for _, aios_namespace in namespaces.values()]
        operator = {**OPERATOR_VALUES, "watchNamespaces": watched}
        if args.workers is not None:
            operator["workers"] = args.workers
        release.install(site, {"operator": operator})
        workers = operator.get("workers", "the chart's default")
        print(f"{args.concurrency} concurrent clients; per 10 objects: 8 EdgeGateways, "
              "1 paused AutomationIntent, 1 Policy in dryrun; "
              f"operator workers per kind: {workers}")  # fmt: skip
        for count in args.objects:
            peer_namespace, aios_namespace = namespaces[count]
            print(f"{count} objects")
            start, served = component_cpu(site), api_requests(site)
            limit = peer(api, peer_namespace, count, args.concurrency)
            peered, peer_served = component_cpu(site), api_requests(site)
            print(f"  bare client CPU, ms per object: {cpu_per_object(start, peered, count)}")
            print(f"  bare client API requests per object: "
                  f"{requests_per_object(served, peer_served, count)}")  # fmt: skip
            cpu = container_cgroup(site, "cpuacct", operator_pod(site))
            before, opa_before = cpu_seconds(cpu), opa_requests(site)
            ours, latencies = aios(api, aios_namespace, count, args.concurrency, args.timeout)
            used = cpu_seconds(cpu) - before
            aios_served = api_requests(site)
            print(f"  aios CPU, ms per object: operator {used / count * 1000:.1f} (admission + "
                  f"reconcile), {cpu_per_object(peered, component_cpu(site), count)}; "
                  f"{os.cpu_count()} cores on the machine")  # fmt: skip
            print(f"  aios API requests per object: "
                  f"{requests_per_object(peer_served, aios_served, count)}")  # fmt: skip
            print(f"  OPA requests per object: "
                  f"{opa_per_object(opa_before, opa_requests(site), count)}")  # fmt: skip
            print(f"  create → reconciled: p50 {percentile(latencies, 50) * 1000:.0f} ms, "
                  f"p99 {percentile(latencies, 99) * 1000:.0f} ms")  # fmt: skip
            print(f"  objects/s: aios {count / ours:.1f}, bare client {count / limit:.1f} "
                  f"-> ratio (aios / limit, throughput): {limit / ours:.2f}x")  # fmt: skip
        expected = Counter(o["kind"] for n in args.objects for o in city(n))
        deadline = time.monotonic() + args.timeout
        while not settled(api, watched):  # a restart of an operator with work left is no test
            if time.monotonic() > deadline:
                raise TimeoutError("the objects did not settle")
            time.sleep(5)  # each look LISTs every object
        readings = resident_over(site, operator_pod(site), MEMORY_SECONDS)
        print(f"memory: operator resident set with {sum(args.objects)} objects in its stores, "
              f"settled: {memory_summary(readings)}")  # fmt: skip
        restart(site, expected, watched, args.timeout)
    except BaseException:
        print(f"the site's logs and state are kept in {directory}", file=sys.stderr)
        raise
    finally:
        site.stop()
    shutil.rmtree(directory)  # 1.5-2 GB of etcd, Kafka and logs: kept only after a failure


if __name__ == "__main__":
    main()
