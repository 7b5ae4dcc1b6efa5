"""Health probes: a component is up when it answers, not when its port opens."""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def http_ok(url: str, token: str | None = None, ca: Path | None = None) -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(request, timeout=2, context=context) as response:
        return bool(response.status == 200)


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


UNREACHED_WEBHOOK = "failed calling webhook"
POLICY_DENIAL = "denied the request"


def admission_reached(kubectl: Callable[..., str], manifest: dict[str, Any]) -> bool:
    """Whether the API server reaches the admission webhooks of ``manifest``'s kind: a
    server-side dry run of it (no side effects, nothing stored), admitted or denied by
    them. A webhook whose Service has no endpoint yet answers False; any other refusal
    raises ``kubectl``'s error."""
    try:
        kubectl(["create", "--dry-run=server", "-f", "-"], stdin=json.dumps(manifest))
    except RuntimeError as error:
        if POLICY_DENIAL in str(error):
            return True
        if UNREACHED_WEBHOOK in str(error):
            return False
        raise
    return True
