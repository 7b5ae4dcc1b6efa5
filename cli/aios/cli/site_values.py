"""The Helm chart's values for the local site: its endpoints, the webhook on each replica's
own address (the local site's Services have no data path from the API server), and the
example models' mirror. ``aiosctl env --helm-values`` prints them; the Helm tests use them."""

from __future__ import annotations

from typing import Any

from aios.stack.models import mirror_environment
from aios.stack.site import Endpoints


def local_site_values(endpoints: Endpoints, site: str = "local") -> dict[str, Any]:
    return {
        "site": {"name": site},
        "kafka": {"bootstrap": endpoints.kafka_bootstrap},
        "temporal": {"address": endpoints.temporal_address},
        "opa": {"url": endpoints.opa_url},
        "mqtt": {"url": endpoints.mqtt_url},
        "webhook": {"endpoint": "podIP"},
        "operator": {
            "extraEnv": [{"name": k, "value": v} for k, v in sorted(mirror_environment().items())]
        },
    }
