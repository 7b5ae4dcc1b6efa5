"""The servers a site runs on its node beside Kubernetes, one start function each: Kafka
(KRaft, SASL/SCRAM users), the Temporal dev server, OPA, Triton, Mosquitto, Jaeger and
Prometheus. Each
listens on the node's address on its usual port, and a start returns once it answers."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

import yaml

from aios.stack import components
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
from aios.stack.node import MODEL_MIRROR
from aios.stack.process import ComponentFailed
from aios.stack.site.probes import http_ok, mqtt_ready

if TYPE_CHECKING:
    from aios.stack.site.lifecycle import Site

TEMPORAL_PORT = 7233
OPA_PORT = 8181
TRITON_HTTP_PORT, TRITON_GRPC_PORT, TRITON_METRICS_PORT = 8000, 8001, 8002
MQTT_PORT = 1883
OTLP_HTTP_PORT, JAEGER_QUERY_PORT, JAEGER_HEALTH_PORT = 4318, 16686, 13133
JAEGER_MAX_TRACES = 100_000
PROMETHEUS_PORT = 9090
OBJECT_STORE_PORT = 9000
OBJECT_STORE_LOGBACK = """<configuration>
  <appender name="log" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{ISO8601} %level %logger{24}: %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="log"/></root>
</configuration>
"""
PROMETHEUS_INTERVAL_SECONDS = 5
PROMETHEUS_INTERVAL = f"{PROMETHEUS_INTERVAL_SECONDS}s"
"""How often the site's Prometheus scrapes and evaluates rules, unless a monitor says."""


def start_kafka(site: Site) -> None:
    home = components.KAFKA.ensure()
    data = site.directory / "kafka"
    users_file = site.directory / "kafka-users.json"
    if (data / "meta.properties").exists() and not users_file.exists():
        raise ComponentFailed(
            "kafka",
            f"{data} was formatted before the site's Kafka had users; remove it (its"
            " topics go with it) and start the site again",
            None,
        )
    users = SiteUsers.ensure(users_file)
    config = site.directory / "kafka.properties"
    config.touch(mode=0o600)
    config.write_text(broker_properties(site.address, data, users))
    log4j = site.directory / "kafka-log4j2.properties"
    log4j.write_text(BROKER_LOG4J)
    # Names from this file only: a SASL handshake asks the name of the broker's own
    # address, and the node has no DNS server to answer (each attempt timed out).
    hosts = site.directory / "kafka-hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{site.address} kafka\n")
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
    kafka = site.spawn("kafka", [*java, "kafka.Kafka", str(config)])
    admin = client_settings(ADMIN, users.admin)
    site.endpoints.kafka_bootstrap = f"{site.address}:{KAFKA_PORT}"
    site.endpoints.kafka_config = json.dumps(admin)
    site.endpoints.kafka_operator_config = json.dumps(client_settings(OPERATOR, users.operator))
    kafka.wait_healthy(lambda: kafka_ready(site.endpoints.kafka_bootstrap, admin), 120)


def start_temporal(site: Site) -> None:
    binary = components.TEMPORAL.binary()
    temporal = site.spawn(
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
            f"--db-filename={site.directory / 'temporal.db'}",
            "--namespace=default",
            "--log-format=json",
            "--log-level=warn",
        ],
    )
    site.endpoints.temporal_address = f"{site.address}:{TEMPORAL_PORT}"

    def namespace_ready() -> bool:
        result = subprocess.run(
            [
                str(binary),
                "operator",
                "namespace",
                "describe",
                "--namespace=default",
                f"--address={site.endpoints.temporal_address}",
            ],
            capture_output=True,
            timeout=10,
        )
        return result.returncode == 0

    temporal.wait_healthy(namespace_ready, 120)


def start_opa(site: Site) -> None:
    opa = site.spawn(
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
    site.endpoints.opa_url = f"http://{site.address}:{OPA_PORT}"
    opa.wait_healthy(lambda: http_ok(f"{site.endpoints.opa_url}/health"), 60)


def start_triton(site: Site) -> None:
    """A Triton of the site's own, for clients and benchmarks that load models into it
    directly; ModelDeployments get theirs as pods."""
    dist = components.triton()
    repository = site.directory / "models"
    repository.mkdir(exist_ok=True)
    triton = site.spawn(
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
    site.endpoints.triton_http = f"http://{site.address}:{TRITON_HTTP_PORT}"
    site.endpoints.triton_grpc = f"{site.address}:{TRITON_GRPC_PORT}"
    triton.wait_healthy(lambda: http_ok(f"{site.endpoints.triton_http}/v2/health/ready"), 120)


def start_object_store(site: Site) -> None:
    """The node's model mirror as S3 (s3proxy over the directory, read-only, anonymous
    reads) on the node's port 9000: ``s3://<bucket>/<key>`` resolves to the same files as
    the operator's mirror in raw mode, so KServe's storage initializer fetches models the
    way it would from a city's object store."""
    home = components.S3PROXY.ensure()
    properties = site.directory / "s3proxy.properties"
    properties.write_text(
        "\n".join(
            [
                f"s3proxy.endpoint=http://{site.address}:{OBJECT_STORE_PORT}",
                "s3proxy.authorization=none",
                "s3proxy.read-only-blobstore=true",
                # boto3 asks for checksums (x-amz-checksum-mode), which s3proxy does not know
                "s3proxy.ignore-unknown-headers=true",
                "jclouds.provider=filesystem",
                f"jclouds.filesystem.basedir={MODEL_MIRROR}",
            ]
        )
        + "\n"
    )
    logback = site.directory / "s3proxy-logback.xml"
    logback.write_text(OBJECT_STORE_LOGBACK)
    store = site.spawn(
        "s3proxy",
        [
            *("java", "-Xmx256m", "-Djava.awt.headless=true"),
            f"-Dlogback.configurationFile={logback}",
            *("-cp", f"{home / 'libs'}/*", "org.gaul.s3proxy.Main"),
            *("--properties", str(properties)),
        ],
    )
    site.endpoints.object_store_url = f"http://{site.address}:{OBJECT_STORE_PORT}"
    store.wait_healthy(lambda: http_ok(f"{site.endpoints.object_store_url}/"), 60)


def start_mosquitto(site: Site) -> None:
    store = site.directory / "mosquitto"
    store.mkdir(exist_ok=True)
    config = site.directory / "mosquitto.conf"
    # ``user root``: like every component here it runs as root in the node's namespaces.
    # Dropping to the ``mosquitto`` user left the store (under a 0700 directory)
    # unwritable, so sessions and their queued messages were lost at every restart.
    config.write_text(
        f"listener {MQTT_PORT} 0.0.0.0\nallow_anonymous true\nuser root\npersistence true\n"
        f"persistence_location {store}/\nlog_dest stdout\nlog_type error\nlog_type warning\n"
        "log_type notice\nlog_type information\n"
    )
    mosquitto = site.spawn("mosquitto", [str(components.mosquitto()), "-c", str(config)])
    site.endpoints.mqtt_url = f"mqtt://{site.address}:{MQTT_PORT}"
    mosquitto.wait_healthy(lambda: mqtt_ready(site.address, MQTT_PORT), 30)


def jaeger_config() -> str:
    """Jaeger v2 as the site's trace backend: OTLP in (HTTP), kept in memory (the latest
    ``JAEGER_MAX_TRACES``), its query API out; no metrics endpoint of its own, and it does
    not trace itself (a self-traced query service slows its shutdown)."""
    return f"""\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 0.0.0.0:{JAEGER_HEALTH_PORT}
  jaeger_query:
    storage:
      traces: memory
    enable_tracing: false
    http:
      endpoint: 0.0.0.0:{JAEGER_QUERY_PORT}
    grpc:
      endpoint: 127.0.0.1:16685
  jaeger_storage:
    backends:
      memory:
        memory:
          max_traces: {JAEGER_MAX_TRACES}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 0.0.0.0:{OTLP_HTTP_PORT}
processors:
  batch: {{}}
exporters:
  jaeger_storage_exporter:
    trace_storage: memory
"""


def start_jaeger(site: Site) -> None:
    config = site.directory / "jaeger.yaml"
    config.write_text(jaeger_config())
    jaeger = site.spawn("jaeger", [str(components.JAEGER.binary()), f"--config={config}"])
    site.endpoints.otlp_url = f"http://{site.address}:{OTLP_HTTP_PORT}"
    site.endpoints.jaeger_url = f"http://{site.address}:{JAEGER_QUERY_PORT}"
    health = f"http://{site.address}:{JAEGER_HEALTH_PORT}/status"
    jaeger.wait_healthy(lambda: http_ok(health), 60)


def prometheus_config() -> str:
    """The site's Prometheus: itself, and whatever ``MonitorSync`` translated from the
    monitoring objects in the site (``scrape/``, ``rules/``)."""
    return yaml.safe_dump(
        {
            "global": {
                "scrape_interval": PROMETHEUS_INTERVAL,
                "evaluation_interval": PROMETHEUS_INTERVAL,
            },
            "scrape_config_files": ["scrape/*.yaml"],
            "rule_files": ["rules/*.yaml"],
            "scrape_configs": [
                {
                    "job_name": "prometheus",
                    "static_configs": [{"targets": [f"127.0.0.1:{PROMETHEUS_PORT}"]}],
                }
            ],
        },
        sort_keys=False,
    )


def start_prometheus(site: Site) -> None:
    home = site.directory / "prometheus"
    for folder in ("scrape", "rules", "data"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    config = home / "prometheus.yml"
    config.write_text(prometheus_config())
    prometheus = site.spawn(
        "prometheus",
        [
            str(components.PROMETHEUS.binary()),
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}",
            "--web.enable-lifecycle",  # POST /-/reload: the site's monitors come and go
        ],
        cwd=home,
    )
    site.endpoints.prometheus_url = f"http://{site.address}:{PROMETHEUS_PORT}"
    prometheus.wait_healthy(lambda: http_ok(f"{site.endpoints.prometheus_url}/-/ready"), 60)
