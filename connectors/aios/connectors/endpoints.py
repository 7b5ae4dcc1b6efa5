"""Service addresses as a cluster would resolve them, with the local site's overrides.

In a cluster, ``pm25-anomaly.city.svc:8000`` is resolved by DNS and kube-proxy. The local
site runs pods as host processes on per-pod loopback addresses, and its supervisor
writes the Service → address table to the file named by ``AIOS_SERVICE_MAP``; every aios
client resolves through here, so the same rendered URLs work in both places.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SERVICE_MAP_ENV = "AIOS_SERVICE_MAP"

_cache: tuple[float, dict[str, list[str]]] = (-1.0, {})


def _table() -> dict[str, list[str]]:
    global _cache
    path = os.environ.get(SERVICE_MAP_ENV)
    if not path:
        return {}
    try:
        mtime = Path(path).stat().st_mtime
    except FileNotFoundError:
        return {}
    if mtime != _cache[0]:
        _cache = (mtime, json.loads(Path(path).read_text() or "{}"))
    return _cache[1]


def resolve(address: str) -> str:
    """``host:port`` → the address to connect to (unchanged outside the local site)."""
    targets = _table().get(address)
    return random.choice(targets) if targets else address


def resolve_url(url: str) -> str:
    """The URL with its authority resolved; scheme, path and query kept."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    if parts.port is None or parts.hostname is None:
        return url
    target = resolve(f"{parts.hostname}:{parts.port}")
    if target == f"{parts.hostname}:{parts.port}":
        return url
    resolved = urlunsplit(parts._replace(netloc=target))
    return resolved if "//" in url else resolved.removeprefix("//")
