"""The link probe: a banner over TCP, retried until the link routes, never ping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest

from nosend_link.plan import Endpoint
from nosend_link.probe import ProbeResult, probe, wait_for_probe
from tests.link.link_scripts import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def server(port: int, greeting: bytes | None) -> AsyncIterator[list[bytes]]:
    """A listener on ``port`` that sends ``greeting`` (None: says nothing and holds on;
    empty: closes at once) and records what clients sent."""
    received: list[bytes] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if greeting == b"":
                return
            if greeting is not None:
                await stream.send(greeting)
            try:
                while True:
                    received.append(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield received
        finally:
            tg.cancel_scope.cancel()
    await listener.aclose()


async def test_a_banner_line_means_up_and_nothing_is_sent_back() -> None:
    port = free_port()
    async with server(port, b"220 smtp.example.net ESMTP\r\nmore") as received:
        result = await probe(Endpoint("127.0.0.1", port), timeout=30)
        await anyio.sleep(0.1)  # let the server see the close
    assert result.ok and result.banner == "220 smtp.example.net ESMTP"
    assert result.connect_seconds is not None and result.banner_seconds is not None
    assert received == []
    assert result.describe() == f"probe 127.0.0.1:{port}: '220 smtp.example.net ESMTP'"


async def test_a_refused_connection_is_down() -> None:
    port = free_port()
    result = await probe(Endpoint("127.0.0.1", port), timeout=30)
    assert not result.ok and result.error is not None and "cannot connect" in result.error
    assert result.connect_seconds is None


async def test_a_server_that_says_nothing_is_down_after_the_timeout() -> None:
    port = free_port()
    async with server(port, None):
        result = await probe(Endpoint("127.0.0.1", port), timeout=0.5)
    assert not result.ok and result.error == "no banner within 0.5 s"
    assert result.connect_seconds is not None


async def test_a_server_that_closes_at_once_is_down() -> None:
    port = free_port()
    async with server(port, b""):
        result = await probe(Endpoint("127.0.0.1", port), timeout=30)
    assert not result.ok and result.error == "closed without a banner"


async def test_waiting_retries_until_the_link_routes() -> None:
    port = free_port()
    found: list[ProbeResult] = []

    async def wait() -> None:
        found.append(await wait_for_probe(Endpoint("127.0.0.1", port), within=60,
                                          interval=0.05))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.sleep(0.3)  # the "link" comes up a little after up returned
        async with server(port, b"+OK POP3 ready\r\n"):
            while not found:
                await anyio.sleep(0.02)
    (result,) = found
    assert result.ok and result.banner == "+OK POP3 ready"
    assert result.attempts > 1


async def test_waiting_gives_up_at_the_deadline() -> None:
    port = free_port()
    result = await wait_for_probe(Endpoint("127.0.0.1", port), within=0.3, interval=0.05)
    assert not result.ok and result.attempts >= 1 and "cannot connect" in str(result.error)
