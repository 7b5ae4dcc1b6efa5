"""Instant queries against a Prometheus server's HTTP API (``GET /api/v1/query``).

The rollout analysis asks the site's Prometheus what each model version's live traffic
measured; the address comes from the chart's ``monitoring.prometheusUrl``.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any

import aiohttp

PROMETHEUS_URL_ENV = "AIOS_PROMETHEUS_URL"

Series = tuple[dict[str, str], float]
"""One element of a query's result: its labels and its value."""


class PrometheusError(Exception):
    """Prometheus could not be asked, or refused the query (its error type and message)."""


class Prometheus:
    """An HTTP session with one Prometheus server."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Prometheus:
        self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._session is not None
        await self._session.close()

    async def query(self, expression: str) -> list[Series]:
        """The instant vector (or scalar) ``expression`` evaluates to now; NaN samples (a
        ratio of nothing to nothing) are left out."""
        assert self._session is not None, "use Prometheus as an async context manager"
        try:
            async with self._session.get(
                f"{self.url}/api/v1/query", params={"query": expression}
            ) as response:
                body: dict[str, Any] = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise PrometheusError(f"{self.url}: {error!r}") from error
        if body.get("status") != "success":
            raise PrometheusError(
                f"{body.get('errorType', 'error')}: {body.get('error', body)} in {expression}"
            )
        data = body["data"]
        found: list[Series]
        if data["resultType"] == "scalar":
            found = [({}, float(data["result"][1]))]
        else:
            found = [(item["metric"], float(item["value"][1])) for item in data["result"]]
        return [(labels, value) for labels, value in found if not math.isnan(value)]
