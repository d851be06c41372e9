"""The in-memory harness: pipes, reply readers, transcripts, TLS and shutdown in memory."""

from __future__ import annotations

import anyio
import pytest

from nosend_runners.serve.tls import server_context
from nosend_runners.session.boundary import SessionContext, Stream, Timeouts
from nosend_runners.testing.echo import run as echo_session
from nosend_runners.testing.harness import (
    Harness,
    HarnessClosed,
    harness_state,
    memory_stream_pair,
    run_script,
)
from tests.runners.conftest import CertFiles

pytestmark = pytest.mark.anyio


async def test_memory_pair_carries_bytes_in_order_and_eof() -> None:
    client, server = memory_stream_pair()
    await client.send(b"hello ")
    await client.send(b"world")
    assert await server.receive(3) == b"hel"
    assert await server.receive() == b"lo "
    assert await server.receive() == b"world"
    await client.send_eof()
    with pytest.raises(anyio.EndOfStream):
        await server.receive()
    await server.send(b"reply")
    assert await client.receive() == b"reply"


async def test_echo_session_transcript() -> None:
    async with Harness(echo_session, "smtp") as h:
        greeting = await h.read_reply()
        assert greeting.code == 220 and "echo smtp ready" in greeting.text
        await h.send_line("hello there")
        assert (await h.read_reply()).lines == ("hello there",)
        await h.send_line("QUIT")
        assert (await h.read_reply()).code == 221
        assert await h.wait_closed() == b""
        assert h.session_done
    text = h.transcript_text().splitlines()
    assert text[0].startswith("S: 220 mx.test")
    assert text[1:] == ["C: hello there", "S: 250 hello there", "C: QUIT", "S: 221 bye"]
    assert [who for who, _ in h.transcript] == ["S", "C", "S", "C", "S"]


async def _multiline(stream: Stream, ctx: SessionContext) -> None:
    await stream.send(b"250-first\r\n250-2.0.0 second\r\n250 2.0.0 last\r\n")


async def test_read_reply_joins_multiline_replies() -> None:
    async with Harness(_multiline, "smtp") as h:
        reply = await h.read_reply()
        assert reply.code == 250
        assert reply.lines == ("first", "2.0.0 second", "2.0.0 last")
        assert reply.enhanced == "2.0.0"
        assert reply.raw.count(b"\r\n") == 3
        with pytest.raises(HarnessClosed):
            await h.read_line()


async def test_run_script_returns_everything() -> None:
    out = await run_script(echo_session, "pop3", [b"one\r\n", b"two\r\nQUIT\r\n"])
    assert out.split(b"\r\n")[1:] == [b"250 one", b"250 two", b"221 bye", b""]


async def test_timeout_reaches_the_session() -> None:
    state = harness_state(timeouts=Timeouts(command=0.1))
    async with Harness(echo_session, "smtp", state=state) as h:
        await h.read_reply()
        reply = await h.read_reply()
        assert reply.code == 421 and "timeout" in reply.text.lower()


async def test_graceful_shutdown_reaches_an_idle_session() -> None:
    async with Harness(echo_session, "smtp") as h:
        await h.read_reply()
        h.request_shutdown()
        assert (await h.read_reply()).code == 421


async def test_starttls_over_memory(tls_cert: CertFiles) -> None:
    context = server_context(tls_cert.cert, tls_cert.key)
    async with Harness(echo_session, "smtp", server_ssl=context) as h:
        await h.read_reply()
        await h.send(b"STARTTLS\r\nPEER injected\r\n")
        assert (await h.read_reply()).code == 220
        await h.start_tls()
        await h.send_line("PEER")
        peer = await h.read_reply()
        assert "tls=True" in peer.text and "TLSv1" in peer.text
        await h.send_line("QUIT")
        assert (await h.read_reply()).code == 221


async def test_implicit_tls_with_trusted_client_context(tls_cert: CertFiles) -> None:
    context = server_context(tls_cert.cert, tls_cert.key)
    async with Harness(
        echo_session,
        "smtps",
        server_ssl=context,
        client_ssl=tls_cert.client_context(),
    ) as h:
        assert (await h.read_reply()).code == 220
        await h.send_line("PEER")
        assert "tls=True" in (await h.read_reply()).text


async def _stubborn(stream: Stream, ctx: SessionContext) -> None:
    await stream.send(b"220 never leaves\r\n")
    await anyio.sleep(3600)


async def test_a_session_that_never_ends_is_cancelled_and_reported() -> None:
    started = anyio.current_time()
    with pytest.raises(TimeoutError):
        async with Harness(_stubborn, "smtp", close_timeout=0.2) as h:
            assert (await h.read_reply()).code == 220
    assert anyio.current_time() - started < 5
