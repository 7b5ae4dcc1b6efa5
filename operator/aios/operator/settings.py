"""What the operator knows about its site and passes down to what it renders.

Read once from the operator's environment (the Helm chart's values, or the local site):
the addresses of Kafka, Temporal, OPA and MQTT, and the images of aios's own components.
Rendering functions take it as an argument, so they stay pure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

DEFAULT_IMAGE = "ghcr.io/aios-dev/aios:0.1.0"


@dataclass(frozen=True)
class OperatorSettings:
    kafka_bootstrap: str
    temporal_address: str
    temporal_namespace: str = "default"
    opa_url: str = ""
    mqtt_url: str = ""
    kafka_config: str = ""
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"

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
            image=env.get("AIOS_IMAGE", DEFAULT_IMAGE),
            image_pull_policy=env.get("AIOS_IMAGE_PULL_POLICY", "IfNotPresent"),
        )

    def component_env(self) -> list[dict[str, Any]]:
        """The environment every aios data-plane container gets: the site's addresses and
        the pod's own identity (its address is what it binds to)."""
        pairs = {
            "AIOS_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "AIOS_KAFKA_CONFIG": self.kafka_config,
            "AIOS_TEMPORAL_ADDRESS": self.temporal_address,
            "AIOS_TEMPORAL_NAMESPACE": self.temporal_namespace,
            "AIOS_OPA_URL": self.opa_url,
            "AIOS_MQTT_URL": self.mqtt_url,
        }
        env: list[dict[str, Any]] = [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]
        return env + [{"name": k, "value": v} for k, v in pairs.items() if v]


def task_queue(namespace: str) -> str:
    """The Temporal task queue of a namespace's workflows (one worker Deployment each)."""
    return f"aios.{namespace}"
