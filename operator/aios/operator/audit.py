"""The operator's audit events (reconcile and admission decisions, edge config changes):
one writer per process, its Kafka I/O off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import cache
from typing import Any

from aios.connectors.audit import AuditWriter

writer = cache(AuditWriter)
"""One producer for the process (a producer per event would cost a connection each)."""


async def record(kind: str, subject: str, details: Mapping[str, Any], **extra: Any) -> None:
    """Store one audit event durably; raises ``AuditUnavailable`` when Kafka cannot."""
    await asyncio.to_thread(writer().record, kind, subject, details, **extra)
