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
    # The rotations are decided at later moments passed in (no waiting for a clock): the
    # serving certificate is due 20 s after its issue, the CA 40 s after its own.
    start = now()
    certs = WebhookCertificates(tmp_path, settings.hosts(), 30, ca_seconds=60)
    certs.ensure(start)
    server = OperatorWebhookServer(settings, certs)

    async def review(request: Any, **_: Any) -> Any:
        return {}

    configs = server(review)
    first = await anext(configs)
    restarted = asyncio.ensure_future(anext(configs))  # kopf watches its files from here
    assert first["url"] == f"https://127.0.0.1:{port}"
    serial = await served_serial(port, first["caBundle"])
    assert serial == current(certs)
    watched = {path: path.read_bytes() for path in server_files(certs)}

    server.rotate(start + datetime.timedelta(seconds=21))  # a new serving certificate, same CA
    renewed = await served_serial(port, first["caBundle"])
    assert renewed != serial and renewed == current(certs)
    # kopf restarts its server only when a file it started with changes: none did.
    assert {path: path.read_bytes() for path in watched} == watched, "no restart, no new bundle"
    assert not restarted.done()

    server.rotate(start + datetime.timedelta(seconds=41))  # a new CA: restart, new bundle
    second = await asyncio.wait_for(restarted, 10)
    assert second["caBundle"] != first["caBundle"]
    assert await served_serial(port, second["caBundle"]) == current(certs)
    assert sorted(tmp_path.glob("tls-*")) == sorted([certs.cert_path, certs.key_path])
    await configs.aclose()


def server_files(certs: WebhookCertificates) -> tuple[Path, Path, Path]:
    return certs.cert_path, certs.key_path, certs.bundle_path


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def current(certs: WebhookCertificates) -> int:
    assert certs.serving is not None
    return int(certs.serving.certificate.serial_number)
