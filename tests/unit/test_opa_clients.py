"""One kept-alive OPA client per event loop and URL: a Policy's load asks OPA several
things, and a connection per request was most of what it cost."""

from __future__ import annotations

import asyncio

import pytest

from aios.connectors import opa

UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens


async def clients_of_one_loop() -> None:
    async with opa.client("http://opa.example:8181") as first:
        pass
    async with opa.client("http://opa.example:8181") as again:
        assert again is first, "the same client serves the next request"
    async with opa.client("http://opa.example:8181", timeout=60) as slow:
        assert slow is not first, "a different timeout is a different client"
    await opa.close_clients()
    async with opa.client("http://opa.example:8181") as fresh:
        assert fresh is not first, "closed clients are not handed out again"
    await opa.close_clients()


def test_a_client_is_kept_per_loop_url_and_timeout() -> None:
    asyncio.run(clients_of_one_loop())


async def unreachable_then_fresh() -> None:
    with pytest.raises(opa.PolicyUnavailable, match="unreachable"):
        async with opa.client(UNREACHABLE) as failed:
            await failed.get_data("aios/x")
    assert failed._session is None, "the failed client is closed"
    async with opa.client(UNREACHABLE) as after:
        assert after is not failed, "the next call starts a new client"
    await opa.close_clients()


def test_a_failure_drops_the_client() -> None:
    asyncio.run(unreachable_then_fresh())
