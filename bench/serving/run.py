"""Serving benchmark: three comparisons in one run, side by side, printed as ratios.

1. Triton dynamic batching vs unbatched requests, on the anomaly model (throughput of
   single-row requests from concurrent callers);
2. Triton vs KServe's ModelServer on the same model (p50/p99 latency of one caller,
   throughput of concurrent callers);
3. the client overhead of tritonclient HTTP vs gRPC, against Triton;
4. with ``--cluster``: the same ModelDeployment on a local site, served in raw mode
   (aios's Deployment and Service) and then through the KServe controller
   (InferenceService, RawDeployment), called through each one's Service.

The first three run both servers as host processes on loopback, started here from the
example model repository the build trains (``aios.stack.models``); every request goes
through ``aios.connectors.inference.InferenceClient``, the client aios's own callers use.

    .venv/bin/python bench/serving/run.py [--seconds 5] [--concurrency 16] [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from aios.connectors.inference import InferenceClient, Protocol_
from aios.stack import components, release
from aios.stack.models import SOURCES, repository
from aios.stack.platform import EXAMPLES
from aios.stack.process import ManagedProcess, free_port
from aios.stack.site import Site, kserve

MODEL, VERSION = "pm25-anomaly", "2024.11.2"
BATCHED = f"{MODEL}-batched"
ROW = np.array([[12, 20, 25, 45, 14, 65]], dtype=np.float32)


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def build_config() -> object:
    """The build's config.pbtxt renderer (one source of model configs)."""
    spec = importlib.util.spec_from_file_location("aios_model_build", SOURCES / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_repository(directory: Path) -> Path:
    """The deployed model, and the same model with Triton's dynamic batching."""
    source = repository(MODEL, VERSION) / MODEL
    shutil.copytree(source, directory / MODEL)
    shutil.copytree(source, directory / BATCHED)
    build = build_config()
    signature = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 6]}],
        "outputs": [
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "confidence", "datatype": "FP32", "shape": [-1]},
        ],
    }
    config = build.triton_config(BATCHED, signature, max_batch_size=256)  # type: ignore[attr-defined]
    (directory / BATCHED / "config.pbtxt").write_text(config)
    return directory


def wait_ready(process: ManagedProcess, http: str) -> None:
    def probe() -> bool:
        with urllib.request.urlopen(f"{http}/v2/health/ready", timeout=2) as answer:
            return bool(answer.status == 200)

    process.wait_healthy(probe, 120)


def start_triton(models: Path, logs: Path) -> tuple[ManagedProcess, str, str]:
    dist = components.triton()
    http, grpc = free_port(), free_port()
    process = ManagedProcess(
        "triton",
        [
            str(dist.binary),
            f"--model-repository={models}",
            f"--backend-directory={dist.backends}",
            "--http-address=127.0.0.1",
            f"--http-port={http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc}",
            "--allow-metrics=false",
        ],
        logs / "triton.log",
        env=dist.environment(),
    ).start()
    wait_ready(process, f"http://127.0.0.1:{http}")
    return process, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}"


def start_kserve(models: Path, logs: Path) -> tuple[ManagedProcess, str, str]:
    http, grpc = free_port(), free_port()
    only = models.parent / "kserve"
    shutil.copytree(models / MODEL, only / MODEL)
    process = ManagedProcess(
        "kserve",
        [
            sys.executable,
            "-m",
            "aios.connectors.model_server",
            f"--model-repository={only}",
            "--host=127.0.0.1",
            f"--http-port={http}",
            f"--grpc-port={grpc}",
        ],
        logs / "kserve.log",
    ).start()
    wait_ready(process, f"http://127.0.0.1:{http}")
    return process, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}"


async def load(
    name: str, url: str, protocol: Protocol_, model: str, seconds: float, concurrency: int
) -> Result:
    """``concurrency`` callers, each sending one row at a time, for ``seconds``."""
    latencies: list[float] = []
    clients = [InferenceClient(url, protocol) for _ in range(concurrency)]
    for client in clients:  # connect and warm up outside the measurement
        await client.infer(model, {"features": ROW}, timeout=10)
    deadline = time.perf_counter() + seconds

    async def caller(client: InferenceClient) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await client.infer(model, {"features": ROW}, timeout=10)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in clients))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.close()
    return Result(name, len(latencies), elapsed, latencies)


def row(result: Result) -> str:
    return (
        f"  {result.name:<38} {result.throughput:>9.0f} req/s   p50 {result.percentile(50):6.2f} ms"
        f"   p99 {result.percentile(99):7.2f} ms"
    )


def ratio(label: str, value: float) -> str:
    return f"  -> {label}: {value:.2f}x"


async def bench(seconds: float, concurrency: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="aios-bench-serving-"))
    models = model_repository(work / "models")
    triton, t_http, t_grpc = start_triton(models, work)
    kserve, _, k_grpc = start_kserve(models, work)
    try:
        print(f"serving benchmark: {seconds:g}s per measurement, model {MODEL} {VERSION}\n")

        print(f"1. Triton dynamic batching vs unbatched ({concurrency} callers, 1 row each)")
        unbatched = await load(
            "unbatched (max_batch_size 0)", t_grpc, "grpc", MODEL, seconds, concurrency
        )
        batched = await load(
            "dynamic batching (max 256)", t_grpc, "grpc", BATCHED, seconds, concurrency
        )
        print(row(unbatched), row(batched), sep="\n")
        print(
            ratio(
                "dynamic batching / unbatched throughput", batched.throughput / unbatched.throughput
            )
        )

        print(
            f"\n2. Triton vs KServe ModelServer, gRPC (latency: 1 caller; {concurrency} for load)"
        )
        triton_one = await load("Triton, 1 caller", t_grpc, "grpc", MODEL, seconds, 1)
        kserve_one = await load("KServe ModelServer, 1 caller", k_grpc, "grpc", MODEL, seconds, 1)
        triton_many = await load(
            f"Triton, {concurrency} callers", t_grpc, "grpc", MODEL, seconds, concurrency
        )
        kserve_many = await load(
            f"KServe ModelServer, {concurrency} callers",
            k_grpc,
            "grpc",
            MODEL,
            seconds,
            concurrency,
        )
        for result in (triton_one, kserve_one, triton_many, kserve_many):
            print(row(result))
        print(
            ratio(
                "KServe / Triton p50 latency", kserve_one.percentile(50) / triton_one.percentile(50)
            )
        )
        print(
            ratio(
                "KServe / Triton p99 latency", kserve_one.percentile(99) / triton_one.percentile(99)
            )
        )
        print(ratio("Triton / KServe throughput", triton_many.throughput / kserve_many.throughput))

        print("\n3. tritonclient HTTP vs gRPC against Triton (1 caller)")
        http = await load("HTTP (binary tensors)", t_http, "http", MODEL, seconds, 1)
        grpc = triton_one
        print(row(http), row(grpc), sep="\n")
        print(ratio("HTTP / gRPC p50 latency", http.percentile(50) / grpc.percentile(50)))
        print(ratio("gRPC / HTTP throughput", grpc.throughput / http.throughput))
        print("\n(client and servers share this machine's cores; ratios, not absolutes, travel)")
    finally:
        triton.stop()
        kserve.stop()
        shutil.rmtree(work, ignore_errors=True)


def served_grpc(site: Site, through: str, timeout: float = 600) -> str:
    """The ModelDeployment's gRPC address once it is Ready behind ``through`` (a Service
    name), as the host reaches it: the Service's ClusterIP (the host routes the range)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = yaml.safe_load(site.kubectl(["get", "md", MODEL, "-o", "yaml"]))
        status = found.get("status") or {}
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
        )
        grpc = (status.get("endpoints") or {}).get("grpc", "")
        if ready and grpc.startswith(f"{through}."):
            service = yaml.safe_load(site.kubectl(["get", "service", through, "-o", "yaml"]))
            return f"{service['spec']['clusterIP']}:{grpc.rsplit(':', 1)[1]}"
        time.sleep(1)
    raise TimeoutError(f"{MODEL} not served through {through} in {timeout:.0f}s")


async def cluster(seconds: float, concurrency: int) -> None:
    """Comparison 4: one ModelDeployment (one replica), raw mode, then KServe."""
    site = Site(Path(tempfile.mkdtemp(prefix="aios-bench-serving-site-")))
    site.start(only={"kubernetes", "kafka", "temporal", "opa"})
    try:
        release.install(site, {"operator": {"replicas": 1}})
        manifest = yaml.safe_load((EXAMPLES / f"{MODEL}.yaml").read_text())
        manifest["spec"]["autoscaling"].update(minReplicas=1, maxReplicas=1)
        site.kubectl(["apply", "--server-side", "-f", "-"], stdin=yaml.safe_dump(manifest))
        raw = served_grpc(site, MODEL)
        results = [
            await load("raw mode, 1 caller", raw, "grpc", MODEL, seconds, 1),
            await load(
                f"raw mode, {concurrency} callers", raw, "grpc", MODEL, seconds, concurrency
            ),
        ]
        kserve.start_kserve(site)
        release.install(site, {"operator": {"replicas": 1}})  # its serving runtimes
        # applied again: the operator chooses KServe when it renders a ModelDeployment
        site.kubectl(["delete", "md", MODEL, "--wait=true"])
        site.kubectl(["apply", "--server-side", "-f", "-"], stdin=yaml.safe_dump(manifest))
        through = served_grpc(site, f"{MODEL}-predictor")
        results += [
            await load("KServe, 1 caller", through, "grpc", MODEL, seconds, 1),
            await load(
                f"KServe, {concurrency} callers", through, "grpc", MODEL, seconds, concurrency
            ),
        ]
        print(f"\n4. raw mode vs KServe {components.KSERVE.version} (RawDeployment), one Triton "
              f"replica each, gRPC through the Service")  # fmt: skip
        for result in results:
            print(row(result))
        raw_one, raw_many, kserve_one, kserve_many = results
        print(ratio("KServe / raw p50 latency", kserve_one.percentile(50) / raw_one.percentile(50)))
        print(ratio("KServe / raw p99 latency", kserve_one.percentile(99) / raw_one.percentile(99)))
        print(ratio("KServe / raw throughput", kserve_many.throughput / raw_many.throughput))
    finally:
        site.stop()
        shutil.rmtree(site.directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--cluster", action="store_true", help="also compare raw mode and KServe on a local site"
    )
    args = parser.parse_args()
    asyncio.run(bench(args.seconds, args.concurrency))
    if args.cluster:
        asyncio.run(cluster(args.seconds, args.concurrency))


if __name__ == "__main__":
    main()
