"""The one switch of ``nosend_runners.serve.fastpath``: with it off, the anyio server on
asyncio runs the reference path (plain anyio accept, cancel-scope receives,
``anyio.to_thread``) and a client sees the same as with it on."""

from __future__ import annotations

import anyio
import pytest

from nosend_runners.serve import fastpath
from tests.runners.conftest import LineClient, echo_settings, fast_timeouts, port_of, running_server

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[True, False], ids=["fast", "reference"])
def fast_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    enabled: bool = request.param
    monkeypatch.setattr(fastpath, "ENABLED", enabled)
    return enabled


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_client_sees_the_same_with_the_fast_paths_on_and_off(
    anyio_backend: str, fast_paths: bool
) -> None:
    settings = echo_settings("smtp", timeouts=fast_timeouts(command=0.5))
    async with running_server(settings) as server:
        assert (server.acceptor is not None) is fast_paths
        assert (server.state.thread_pool is not None) is fast_paths
        port = port_of(server, "smtp")
        client = await LineClient.connect(port)
        assert (await client.line()).startswith(b"220 ")
        await client.send(b"one\r\ntwo\r\n")
        assert [await client.line(), await client.line()] == [b"250 one", b"250 two"]
        assert await client.command(b"BLOCK 0.01") == b"250 2.0.0 blocked work done"
        # The idle timeout still ends a silent client.
        assert await client.line(timeout=5) == b"421 4.4.2 Idle timeout, closing"
        assert await client.closed()
        await client.aclose()
        # A graceful shutdown still closes an idle client with 421.
        idle = await LineClient.connect(port)
        await idle.line()
        await anyio.sleep(0.05)
        server.shutdown()
        assert await idle.line() == b"421 4.3.2 Server shutting down"
        await idle.aclose()
