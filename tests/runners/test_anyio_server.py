"""The anyio server on real sockets, on asyncio and trio, with the echo session."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from types import SimpleNamespace

import anyio
import anyio.to_thread
import pytest

from nosend_runners.anyio_server import MailServer, ServerSetupError
from nosend_runners.serve.limits import LimitSettings
from nosend_runners.serve.settings import Listen, ServerSettings
from nosend_runners.session.boundary import SessionContext, Stream
from nosend_runners.session.services import SessionsUnavailable
from nosend_runners.testing import echo
from nosend_runners.testing.echo import echo_session_factory
from tests.runners.conftest import (
    CertFiles,
    LineClient,
    echo_settings,
    fast_timeouts,
    port_of,
    running_server,
)

pytestmark = pytest.mark.anyio


async def test_greets_echoes_and_quits_on_smtp_and_pop3() -> None:
    async with running_server(echo_settings("smtp", "pop3")) as server:
        for service in ("smtp", "pop3"):
            client = await LineClient.connect(port_of(server, service))
            assert await client.line() == f"220 test.invalid nosend echo {service} ready".encode()
            assert await client.command(b"hello there") == b"250 hello there"
            assert await client.command(b"QUIT") == b"221 bye"
            assert await client.closed()
            await client.aclose()


async def test_peer_is_the_client_address_without_tls() -> None:
    async with running_server(echo_settings("smtp")) as server:
        client = await LineClient.connect(port_of(server, "smtp"))
        await client.line()
        reply = await client.command(b"PEER")
        assert reply.startswith(b"250 127.0.0.1 ")
        assert b"tls=False" in reply
        await client.aclose()


async def test_pipelined_lines_are_answered_in_order() -> None:
    async with running_server(echo_settings("smtp")) as server:
        client = await LineClient.connect(port_of(server, "smtp"))
        await client.line()
        await client.send(b"one\r\ntwo\r\nthree\r\n")
        assert [await client.line() for _ in range(3)] == [b"250 one", b"250 two", b"250 three"]
        await client.aclose()


async def test_idle_client_is_closed_with_421_at_the_command_timeout() -> None:
    settings = echo_settings("smtp", timeouts=fast_timeouts(command=0.3))
    async with running_server(settings) as server:
        # Taken before connecting: the server's timer starts after the accept, so this
        # bound holds however late this task sees the greeting.
        started = anyio.current_time()
        client = await LineClient.connect(port_of(server, "smtp"))
        await client.line()
        assert await client.line(timeout=5) == b"421 4.4.2 Idle timeout, closing"
        assert anyio.current_time() - started >= 0.25
        assert await client.closed()
        await client.aclose()


async def test_client_that_reads_nothing_is_dropped_and_does_not_block_others() -> None:
    settings = echo_settings("smtp", timeouts=fast_timeouts(send=0.5))
    async with running_server(settings) as server:
        port = port_of(server, "smtp")
        stuck = await LineClient.connect(port)

        async def flood() -> None:
            # Never read: the server's echo replies fill the socket buffers.
            try:
                while True:
                    await stuck.send(b"x" * 998 + b"\r\n")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(flood)
            await anyio.sleep(0.2)
            other = await LineClient.connect(port)
            assert (await other.line()).startswith(b"220 ")
            assert await other.command(b"still served") == b"250 still served"
            with anyio.fail_after(10):
                while server.live_sessions > 1:
                    await anyio.sleep(0.05)
            assert await other.command(b"QUIT") == b"221 bye"
            await other.aclose()
            tg.cancel_scope.cancel()
        await stuck.aclose()


async def test_a_slow_reader_that_keeps_reading_is_not_cut_off() -> None:
    settings = echo_settings("smtp", timeouts=fast_timeouts(send=0.5))
    async with running_server(settings) as server:
        client = await LineClient.connect(port_of(server, "smtp"))
        await client.line()
        await client.send(b"BIG 16000000\r\n")
        received = 0
        started = anyio.current_time()
        while b"250 2.0.0 sent\r\n" not in client.buffer[-20:]:
            chunk = await client.stream.receive(65536)
            received += len(chunk)
            client.buffer = (client.buffer + chunk)[-20:]
            await anyio.sleep(0.008)  # ~8 MB/s: longer than the send timeout, beyond buffers
        assert received >= 16_000_000
        assert anyio.current_time() - started > 1.0
        await client.aclose()


async def test_blocking_work_runs_in_a_thread_without_stalling_other_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # BLOCK's work holds its thread until the other session has been answered: no clock.
    # Were it run on the event loop, the loop would stop and "ping" would not be answered
    # (fail_after only guards against that hang).
    blocking, release = threading.Event(), threading.Event()

    def held(seconds: float) -> None:
        blocking.set()
        release.wait(30)

    monkeypatch.setattr(echo, "time", SimpleNamespace(sleep=held))
    async with running_server(echo_settings("smtp")) as server:
        port = port_of(server, "smtp")
        slow, fast = await LineClient.connect(port), await LineClient.connect(port)
        await slow.line(), await fast.line()
        await slow.send(b"BLOCK 1.0\r\n")
        try:
            with anyio.fail_after(10):
                while not blocking.is_set():
                    await anyio.sleep(0.01)
                assert await fast.command(b"ping") == b"250 ping"
            assert slow.buffer == b""  # the blocking work is still in progress
        finally:
            release.set()
        assert await slow.line() == b"250 2.0.0 blocked work done"
        await slow.aclose(), await fast.aclose()


async def test_session_crash_is_logged_and_only_closes_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(stream: Stream, ctx: SessionContext) -> None:
        await stream.send(b"220 about to fail\r\n")
        raise ValueError("bug in a session")

    async with running_server(echo_settings("smtp"), lambda _service: broken) as server:
        for _ in range(2):
            client = await LineClient.connect(port_of(server, "smtp"))
            assert await client.line() == b"220 about to fail"
            assert await client.closed()
            await client.aclose()
    assert "event=session_crashed" in caplog.text
    assert "error=ValueError" in caplog.text


async def test_a_taken_port_is_a_setup_error_naming_it() -> None:
    async with running_server(echo_settings("smtp")) as server:
        port = port_of(server, "smtp")
        settings = ServerSettings(listen=(Listen("smtp", "127.0.0.1", port),))
        with pytest.raises(ServerSetupError, match=f"127.0.0.1:{port} for smtp"):
            await MailServer(settings, echo_session_factory).serve()


async def test_implicit_tls_service_without_certificate_is_refused_at_start() -> None:
    with pytest.raises(ServerSetupError, match="smtps/pop3s listeners need tls_cert"):
        MailServer(echo_settings("smtps"), echo_session_factory)


async def test_missing_session_module_fails_the_start_with_a_clear_message() -> None:
    def factory(service: str) -> object:
        raise SessionsUnavailable(f"the {service} session is not installed")

    with pytest.raises(SessionsUnavailable, match="the smtp session is not installed"):
        MailServer(echo_settings("smtp"), factory)  # type: ignore[arg-type]


async def test_log_lines_carry_service_peer_and_never_the_password(
    caplog: pytest.LogCaptureFixture, tls_cert: CertFiles
) -> None:
    async def logs_secret(stream: Stream, ctx: SessionContext) -> None:
        ctx.log.bind(user="skipper")
        ctx.log.event("auth", password="hunter2", result="235")
        await stream.send(b"221 done\r\n")

    caplog.set_level(logging.INFO)
    async with running_server(echo_settings("smtp"), lambda _s: logs_secret) as server:
        client = await LineClient.connect(port_of(server, "smtp"))
        assert await client.line() == b"221 done"
        await client.aclose()
    assert "hunter2" not in caplog.text
    assert "service=smtp" in caplog.text and "peer=127.0.0.1:" in caplog.text
    assert "user=skipper" in caplog.text and "password=[redacted]" in caplog.text


async def test_listens_on_ipv6_loopback_and_reports_the_v6_peer() -> None:
    import socket

    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6; the server must still support ::1")
    settings = ServerSettings(listen=(Listen("smtp", "::1", 0),), timeouts=fast_timeouts())
    try:
        server_cm = running_server(settings)
        server = await server_cm.__aenter__()
    except ServerSetupError as exc:  # a container without ::1 configured
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        stream = await anyio.connect_tcp("::1", port_of(server, "smtp"))
        client = LineClient(stream)
        await client.line()
        assert (await client.command(b"PEER")).startswith(b"250 ::1 ")
        await client.aclose()
    finally:
        await server_cm.__aexit__(None, None, None)


def test_the_command_line_offers_exactly_the_session_factories() -> None:
    from nosend import serve
    from nosend_runners.session.services import FACTORIES

    assert set(serve._SESSIONS) == set(FACTORIES)


async def test_an_accept_failure_is_logged_and_accepting_resumes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    # Out of file descriptors (EMFILE): log it, keep serving, and try again shortly
    # rather than spin on a listening socket that stays readable.
    real_accept = socket.socket.accept
    failures = [OSError(errno.EMFILE, "Too many open files")]

    def flaky_accept(self: socket.socket) -> tuple[socket.socket, object]:
        if failures and self.getsockname()[1] == failing_port:
            raise failures.pop()
        return real_accept(self)

    failing_port = -1
    caplog.set_level(logging.ERROR, logger="nosend.server")
    async with running_server(echo_settings("smtp")) as server:
        failing_port = port_of(server, "smtp")
        if anyio_backend == "asyncio":  # trio's listener does not call socket.accept
            monkeypatch.setattr(socket.socket, "accept", flaky_accept)
        client = await LineClient.connect(failing_port)
        with anyio.fail_after(5):
            assert (await client.line()).startswith(b"220 ")
        assert await client.command(b"QUIT") == b"221 bye"
        await client.aclose()
        again = await LineClient.connect(failing_port)
        assert (await again.line()).startswith(b"220 ")
        await again.aclose()
    if anyio_backend == "asyncio":
        assert not failures
        assert any("accept on smtp failed" in r.getMessage() for r in caplog.records)


async def test_session_tasks_are_reused_bounded_and_end_at_shutdown(anyio_backend: str) -> None:
    # On asyncio a task whose session ended waits for the next connection (cheaper than
    # starting one); after a burst at most 32 stay, and a shutdown ends them at once.
    started = anyio.current_time()
    limits = LimitSettings(max_connections=100, max_per_address=100)
    async with running_server(echo_settings("smtp", limits=limits)) as server:
        port = port_of(server, "smtp")

        async def one_session() -> None:
            client = await LineClient.connect(port)
            assert (await client.line()).startswith(b"220 ")
            assert await client.command(b"QUIT") == b"221 bye"
            assert await client.closed()
            await client.aclose()

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(one_session)
        for _ in range(10):  # one at a time: served by the waiting tasks
            await one_session()
        await anyio.sleep(0.1)
        if anyio_backend == "asyncio":
            assert server.acceptor is not None
            assert 1 <= len(server.acceptor.idle) <= 32
    # running_server's exit waited for serve() to return: the idle tasks ended.
    assert anyio.current_time() - started < 10
    assert server.live_sessions == 0


async def test_on_listening_runs_once_bound_and_before_any_connection() -> None:
    # `nosend serve` gives up root here: the ports must be bound already, and no
    # connection accepted yet. A client connecting now waits in the backlog and is
    # greeted once the hook has returned.
    seen: list[tuple[list[tuple[str, str, int]], int]] = []
    probes: list[socket.socket] = []

    def on_listening() -> None:
        port = server.addresses[0][2]
        probes.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        seen.append((list(server.addresses), server.live_sessions))

    server = MailServer(echo_settings("smtp"), echo_session_factory, on_listening=on_listening)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        try:
            assert len(seen) == 1 and seen[0][0] and seen[0][1] == 0
            with probes[0] as probe:
                greeting = await anyio.to_thread.run_sync(probe.recv, 100)
            assert greeting.startswith(b"220 ")
        finally:
            server.shutdown()


async def test_an_error_in_on_listening_stops_the_server_and_closes_its_ports() -> None:
    ports: list[int] = []

    def on_listening() -> None:
        ports.append(server.addresses[0][2])
        raise ServerSetupError("cannot switch user")

    server = MailServer(echo_settings("smtp"), echo_session_factory, on_listening=on_listening)
    with pytest.raises(ServerSetupError, match="cannot switch user"):
        await server.serve()
    with pytest.raises(OSError) as info:
        socket.create_connection(("127.0.0.1", ports[0]), timeout=5).close()
    assert info.value.errno == errno.ECONNREFUSED
