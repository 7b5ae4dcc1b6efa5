"""What the operator knows about its site and passes down to what it renders.

Read once from the operator's environment (the Helm chart's values, or the local site):
the addresses of Kafka, Temporal, OPA and MQTT, the images of aios's own components, and
where and how big the data-plane pods are (``AIOS_DATA_PLANE``, the chart's ``dataPlane``).
Rendering functions take it as an argument, so they stay pure.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from aios.api.base import DEFAULT_SITE, SITE_ENV, ApiModel
from aios.connectors.prometheus import PROMETHEUS_URL_ENV
from aios.operator.certificates import KeyPair, load_ca
from aios.operator.reconcile.children import MANAGED_BY, OPERATOR, PART_OF
from aios.operator.reconcile.kafka_access import (
    CREDENTIALS_KEY,
    KafkaPrincipal,
    autoscaler_keys,
    credentials,
    credentials_secret,
    password,
    secret_data,
    uses_scram,
)

DEFAULT_IMAGE = "ghcr.io/aios-dev/aios:0.1.0"
DEFAULT_EDGE_IMAGE = "ghcr.io/aios-dev/aios-edge:0.1.0"
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, as the site's
KAFKA_CLIENT_SECRET = "aios-kafka-client"
"""The Secret in each data-plane namespace holding the site's Kafka client settings."""
KAFKA_CLIENT_KEY = CREDENTIALS_KEY
TRACING_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG")


class PodPlacement(ApiModel):
    """Which nodes a kind of data-plane pod may run on (Kubernetes PodSpec fields)."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    priority_class_name: str = ""

    def pod_fields(self) -> dict[str, Any]:
        """The PodSpec fields this placement sets (none when it is empty)."""
        fields = PodPlacement.model_fields
        return {k: v for k, v in self.model_dump(by_alias=True, include=set(fields)).items() if v}

    def over(self, base: PodPlacement) -> PodPlacement:
        """This placement merged over ``base``: selectors joined, tolerations added, and
        affinity and priority class replaced where set."""
        return PodPlacement(
            node_selector={**base.node_selector, **self.node_selector},
            tolerations=[*base.tolerations, *self.tolerations],
            affinity=self.affinity or base.affinity,
            priority_class_name=self.priority_class_name or base.priority_class_name,
        )


def _requests(cpu: str, memory: str, memory_limit: str | None = None) -> dict[str, Any]:
    requests = {"requests": {"cpu": cpu, "memory": memory}}
    return {**requests, "limits": {"memory": memory_limit}} if memory_limit else requests


class DataPlaneResources(ApiModel):
    """Requests and limits (Kubernetes ResourceRequirements) of the operator's own data-plane
    containers; a model server's come from its ModelDeployment."""

    intent_runner: dict[str, Any] = Field(default_factory=lambda: _requests("100m", "256Mi", "1Gi"))
    worker: dict[str, Any] = Field(default_factory=lambda: _requests("100m", "256Mi", "512Mi"))
    edge_agent: dict[str, Any] = Field(default_factory=lambda: _requests("50m", "128Mi", "256Mi"))


class DataPlane(PodPlacement):
    """Where the pods the operator renders run, and how big they are: every data-plane pod
    gets this placement; model servers get ``modelServers`` merged over it (GPU nodes and
    their taints, say)."""

    model_servers: PodPlacement = Field(default_factory=PodPlacement)
    resources: DataPlaneResources = Field(default_factory=DataPlaneResources)

    def model_server_placement(self) -> PodPlacement:
        return self.model_servers.over(self)


@dataclass(frozen=True)
class OperatorSettings:
    kafka_bootstrap: str
    temporal_address: str
    temporal_namespace: str = "default"
    opa_url: str = ""
    mqtt_url: str = ""
    kafka_config: str = ""
    kafka_principal_key: str = ""
    """The key each workload's Kafka password is derived from (``kafka_access``); set, and
    with a SCRAM site, every runner, worker and edge gateway gets its own Kafka user."""
    image: str = DEFAULT_IMAGE
    edge_image: str = DEFAULT_EDGE_IMAGE
    triton_image: str = DEFAULT_TRITON_IMAGE
    image_pull_policy: str = "IfNotPresent"
    data_plane: DataPlane = field(default_factory=DataPlane)
    policy_audit_interval: float = 60.0
    """How often each Policy re-checks the existing objects in its scope (seconds)."""
    status_refresh_interval: float = 30.0
    """How often, at most, an intent's counts and consumer lag and a gateway's counters are
    looked up and written (seconds); conditions follow heartbeats at once regardless."""
    audit_file: str = ""
    """Where the audit appender also writes the chain (a file a regulator can take away)."""
    audit_signing_key: str = ""
    """The Ed25519 private key (PEM file, from a Secret only the operator mounts) that
    signs the audit chain's checkpoints; none: the chain is not checkpointed."""
    audit_checkpoint_interval: float = 60.0
    """How often, at most, the chain's head is signed while it moves (seconds)."""
    namespace: str = "default"
    """The operator's own namespace: its Lease and its audit checkpoints."""
    site: str = DEFAULT_SITE
    """The chart's ``site.name``: on every child, pod, decision and audit record."""
    model_mirror: str = ""
    """A directory on the nodes holding copies of the model buckets (an on-premises
    mirror): model servers read ``s3://bucket/key`` from ``<mirror>/bucket/key``."""
    prometheus_url: str = ""
    """The Prometheus that scrapes the site (the chart's ``monitoring.prometheusUrl``):
    rollout analyses ask it what each model version's live traffic measured."""
    tracing: dict[str, str] = field(default_factory=dict)
    """OpenTelemetry's own variables (the OTLP endpoint, the sampler), passed on as they
    are to every data-plane container (``aios.api.tracing``)."""

    @classmethod
    def from_env(cls) -> OperatorSettings:
        env = os.environ
        return cls(
            kafka_bootstrap=env.get("AIOS_KAFKA_BOOTSTRAP", ""),
            temporal_address=env.get("AIOS_TEMPORAL_ADDRESS", ""),
            temporal_namespace=env.get("AIOS_TEMPORAL_NAMESPACE", "default"),
            opa_url=env.get("AIOS_OPA_URL", ""),
            mqtt_url=env.get("AIOS_MQTT_URL", ""),
            kafka_config=env.get("AIOS_KAFKA_CONFIG", ""),
            kafka_principal_key=env.get("AIOS_KAFKA_PRINCIPAL_KEY", ""),
            image=env.get("AIOS_IMAGE", DEFAULT_IMAGE),
            edge_image=env.get("AIOS_EDGE_IMAGE", DEFAULT_EDGE_IMAGE),
            triton_image=env.get("AIOS_TRITON_IMAGE", DEFAULT_TRITON_IMAGE),
            image_pull_policy=env.get("AIOS_IMAGE_PULL_POLICY", "IfNotPresent"),
            data_plane=DataPlane.model_validate_json(env.get("AIOS_DATA_PLANE") or "{}"),
            policy_audit_interval=float(env.get("AIOS_POLICY_AUDIT_INTERVAL") or 60),
            status_refresh_interval=float(env.get("AIOS_STATUS_REFRESH_SECONDS") or 30),
            audit_file=env.get("AIOS_AUDIT_FILE", ""),
            audit_signing_key=env.get("AIOS_AUDIT_SIGNING_KEY", ""),
            audit_checkpoint_interval=float(env.get("AIOS_AUDIT_CHECKPOINT_SECONDS") or 60),
            namespace=env.get("POD_NAMESPACE", "default"),
            site=env.get(SITE_ENV) or DEFAULT_SITE,
            model_mirror=env.get("AIOS_MODEL_MIRROR", ""),
            prometheus_url=env.get(PROMETHEUS_URL_ENV, ""),
            tracing={k: v for k, v in env.items() if k in TRACING_ENV and v},
        )

    @cached_property
    def kafka_principals(self) -> bool:
        """Whether workloads get their own Kafka users (else they share the site's settings)."""
        return bool(self.kafka_principal_key) and uses_scram(json.loads(self.kafka_config or "{}"))

    def kafka_credentials(self, principal: KafkaPrincipal) -> dict[str, Any]:
        """The principal's librdkafka settings: the site's, as the principal."""
        secret = password(self.kafka_principal_key, principal)
        return credentials(json.loads(self.kafka_config), principal, secret)

    def component_env(self, principal: KafkaPrincipal | None = None) -> list[dict[str, Any]]:
        """The environment every aios data-plane container gets: the site's addresses and
        the pod's own identity (its address is what it binds to). The Kafka client
        settings hold a password, so they come by reference from a Secret
        (``component_secrets``): the ``principal``'s own when workloads have Kafka users,
        else the namespace's shared copy of the site's. Their digest changes the pod
        template, so a new value rolls the pods."""
        pairs = {
            "AIOS_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "AIOS_TEMPORAL_ADDRESS": self.temporal_address,
            "AIOS_TEMPORAL_NAMESPACE": self.temporal_namespace,
            "AIOS_OPA_URL": self.opa_url,
            "AIOS_MQTT_URL": self.mqtt_url,
            SITE_ENV: self.site,
            PROMETHEUS_URL_ENV: self.prometheus_url,
            **self.tracing,
        }
        env: list[dict[str, Any]] = [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]
        env += [{"name": k, "value": v} for k, v in pairs.items() if v]
        client = self._kafka_client(principal)
        if client is not None:
            name, settings = client
            reference = {"name": name, "key": CREDENTIALS_KEY}
            digest = hashlib.sha256(settings.encode()).hexdigest()[:16]
            env += [
                {"name": "AIOS_KAFKA_CONFIG", "valueFrom": {"secretKeyRef": reference}},
                {"name": "AIOS_KAFKA_CONFIG_DIGEST", "value": digest},
            ]
        return env

    def component_secrets(
        self, namespace: str, principal: KafkaPrincipal | None = None
    ) -> list[dict[str, Any]]:
        """The Secret ``component_env`` refers to; none when the site has no Kafka client
        settings. A principal's is its workload's alone; the shared copy is the
        namespace's, so no object owns it: it goes with the namespace."""
        if self.kafka_principals and principal is not None:
            return [credentials_secret(namespace, principal, self.kafka_credentials(principal))]
        if not self.kafka_config:
            return []
        return [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": KAFKA_CLIENT_SECRET,
                    "namespace": namespace,
                    "labels": {PART_OF: "aios", MANAGED_BY: OPERATOR},
                },
                "type": "Opaque",
                "data": secret_data(self.kafka_config),
            }
        ]

    def autoscaler_credentials(self, principal: KafkaPrincipal) -> tuple[str, list[str]] | None:
        """The Secret a workload's Kafka credentials come from and the keys in it that
        KEDA's Kafka scaler reads (``autoscaler_keys``); None when Kafka asks for none."""
        client = self._kafka_client(principal)
        if client is None:
            return None
        name, text = client
        keys = sorted(autoscaler_keys(json.loads(text)))
        return (name, keys) if keys else None

    def _kafka_client(self, principal: KafkaPrincipal | None) -> tuple[str, str] | None:
        """The Secret a workload's Kafka settings come from, and those settings."""
        if self.kafka_principals and principal is not None:
            return principal.secret, json.dumps(self.kafka_credentials(principal), sort_keys=True)
        if self.kafka_config:
            return KAFKA_CLIENT_SECRET, self.kafka_config
        return None


@dataclass(frozen=True)
class WebhookSettings:
    addr: str
    port: int
    host: str | None
    service: tuple[str, str] | None
    service_port: int
    failure_policy: Literal["Fail", "Ignore"]
    cert_dir: Path | None
    ca_dir: Path | None
    cert_seconds: int
    check_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WebhookSettings:
        service = env.get("AIOS_WEBHOOK_SERVICE")
        if service is not None and service.count("/") != 1:
            raise ValueError(f"AIOS_WEBHOOK_SERVICE is namespace/name, not {service!r}")
        failure = env.get("AIOS_WEBHOOK_FAILURE_POLICY", "Fail")
        if failure not in ("Fail", "Ignore"):
            raise ValueError(f"AIOS_WEBHOOK_FAILURE_POLICY is Fail or Ignore, not {failure!r}")
        cert_dir = env.get("AIOS_WEBHOOK_CERT_DIR")
        ca_dir = env.get("AIOS_WEBHOOK_CA_DIR")
        return cls(
            addr=env.get("AIOS_WEBHOOK_ADDR", "0.0.0.0"),
            port=int(env.get("AIOS_WEBHOOK_PORT", "9443")),
            host=env.get("AIOS_WEBHOOK_HOST"),
            service=tuple(service.split("/")) if service else None,  # type: ignore[arg-type]
            service_port=int(env.get("AIOS_WEBHOOK_SERVICE_PORT", "443")),
            failure_policy=failure,  # type: ignore[arg-type]
            cert_dir=Path(cert_dir) if cert_dir else None,
            ca_dir=Path(ca_dir) if ca_dir else None,
            cert_seconds=int(env.get("AIOS_WEBHOOK_CERT_SECONDS", str(30 * 86400))),
            check_seconds=float(env.get("AIOS_WEBHOOK_CERT_CHECK_SECONDS", "60")),
        )

    @property
    def enabled(self) -> bool:
        return bool(self.host or self.service)

    def hosts(self) -> list[str]:
        """The names the API server may dial, for the certificate."""
        if self.service:
            namespace, name = self.service
            return [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
        assert self.host is not None
        return [self.host]

    def shared_ca(self) -> KeyPair | None:
        if self.ca_dir is None:
            return None
        return load_ca(
            (self.ca_dir / "tls.crt").read_bytes(), (self.ca_dir / "tls.key").read_bytes()
        )


def task_queue(namespace: str) -> str:
    """The Temporal task queue of a namespace's workflows (one worker Deployment each)."""
    return f"aios.{namespace}"
