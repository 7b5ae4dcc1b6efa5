"""The webhook server with the operator's certificates, on a real socket: a renewed
serving certificate is served without a restart; a renewed CA restarts the server and
yields the new bundle for the webhook configuration."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
from pathlib import Path
from typing import Any

from aios.operator.certificates import WebhookCertificates
from aios.operator.handlers.admission import OperatorWebhookServer
from aios.operator.settings import WebhookSettings
from aios.stack.process import free_port


async def served_serial(port: int, ca_bundle: str) -> int:
    """Handshake trusting only ``ca_bundle``; the served certificate's serial."""
    context = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode())
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    cert = writer.get_extra_info("peercert")
    writer.close()
    await writer.wait_closed()
    return int(cert["serialNumber"], 16)


async def test_rotation_on_a_live_server(tmp_path: Path) -> None:
    port = free_port()
    settings = WebhookSettings.from_env(
        {
            "AIOS_WEBHOOK_ADDR": "127.0.0.1",
            "AIOS_WEBHOOK_HOST": "127.0.0.1",
            "AIOS_WEBHOOK_PORT": str(port),
            "AIOS_WEBHOOK_CERT_CHECK_SECONDS": "0.2",
        }
    )
    # Short lives: the serving certificate is due after 2 s, the CA after 4 s.
    certs = WebhookCertificates(tmp_path, settings.hosts(), 3, ca_seconds=6)
    certs.ensure(now())
    server = OperatorWebhookServer(settings, certs)

    async def review(request: Any, **_: Any) -> Any:
        return {}

    configs = server(review)
    first = await anext(configs)
    assert first["url"] == f"https://127.0.0.1:{port}"
    serial = await served_serial(port, first["caBundle"])
    assert serial == current(certs)

    await asyncio.sleep(2.2)
    server.rotate(now())  # a new serving certificate, same CA
    renewed = await served_serial(port, first["caBundle"])
    assert renewed != serial and renewed == current(certs)
    restarted = asyncio.ensure_future(anext(configs))
    await asyncio.sleep(1.0)
    assert not restarted.done(), "a serving renewal needs no restart and no new bundle"

    await asyncio.sleep(1.0)
    server.rotate(now())  # a new CA: the server restarts and yields the new bundle
    second = await asyncio.wait_for(restarted, 10)
    assert second["caBundle"] != first["caBundle"]
    assert await served_serial(port, second["caBundle"]) == current(certs)
    assert sorted(tmp_path.glob("tls-*")) == sorted([certs.cert_path, certs.key_path])
    await configs.aclose()


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def current(certs: WebhookCertificates) -> int:
    assert certs.serving is not None
    return int(certs.serving.certificate.serial_number)
