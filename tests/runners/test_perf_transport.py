"""The fast socket path of the transport (``SocketByteStream`` under ``AnyioStream``).

Over a plain TCP socket the stream tries the system call first and arms its deadline
only when it has to wait; these tests pin down that the seam's contract still holds on
that path: bytes in order, EOF as ``b""``, the receive timeout, a graceful shutdown
waking an idle receive, a peer that reads nothing dropped after the send timeout, and
large sends arriving whole. Also that the cached log rendering writes the same lines.
"""

from __future__ import annotations

import gc
import logging
import socket
import time

import anyio
import pytest

from nosend_runners.serve.log import SessionLog
from nosend_runners.serve.streams import AnyioStream, SocketByteStream, peer_from_socket_stream
from nosend_runners.session.boundary import (
    PeerInfo,
    SessionGuard,
    ShutdownRequested,
    ShutdownSignal,
    StreamClosed,
)

pytestmark = pytest.mark.anyio


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    return server, client


def _stream(
    sock: socket.socket, *, signal: ShutdownSignal | None = None, send_timeout: float = 5
) -> AnyioStream:
    raw = SocketByteStream(sock)
    guard = SessionGuard(signal if signal is not None else ShutdownSignal())
    return AnyioStream(raw, peer_from_socket_stream(raw), guard, send_timeout=send_timeout)


async def test_bytes_arrive_in_order_and_eof_is_empty() -> None:
    server, client = _tcp_pair()
    stream = _stream(server)
    assert stream.peer.address == "127.0.0.1"
    assert stream.peer.port == client.getsockname()[1]
    client.sendall(b"EHLO a\r\n")
    assert await stream.receive(timeout=5) == b"EHLO a\r\n"
    big = bytes(range(256)) * 8192  # 2 MB: more than one socket buffer
    got = bytearray()

    async def read_all() -> None:
        client.setblocking(False)
        while len(got) < len(big):
            try:
                got.extend(client.recv(1 << 20))
            except BlockingIOError:
                await anyio.wait_readable(client)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_all)
        await stream.send(big)
    assert bytes(got) == big
    client.close()
    assert await stream.receive(timeout=5) == b""
    await stream.aclose()
    assert stream.closed


async def test_receive_times_out_only_when_nothing_comes() -> None:
    server, client = _tcp_pair()
    stream = _stream(server)
    started = anyio.current_time()
    with pytest.raises(TimeoutError):
        await stream.receive(timeout=0.2)
    assert anyio.current_time() - started >= 0.15
    client.sendall(b"NOOP\r\n")
    assert await stream.receive(timeout=0.2) == b"NOOP\r\n"
    await stream.aclose()
    client.close()


async def test_shutdown_wakes_an_idle_receive() -> None:
    server, client = _tcp_pair()
    signal = ShutdownSignal()
    stream = _stream(server, signal=signal)

    async def stop_soon() -> None:
        await anyio.sleep(0.1)
        signal.request()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_soon)
        with pytest.raises(ShutdownRequested), anyio.fail_after(5):
            await stream.receive(timeout=60)
    await stream.aclose()
    client.close()


async def test_peer_that_reads_nothing_is_dropped_after_the_send_timeout() -> None:
    server, client = _tcp_pair()
    stream = _stream(server, send_timeout=0.3)
    with anyio.fail_after(10), pytest.raises(StreamClosed):
        while True:
            await stream.send(b"x" * 65536)
    assert stream.closed
    client.close()


async def test_many_ready_receives_still_let_other_tasks_run() -> None:
    server, client = _tcp_pair()
    stream = _stream(server)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0)

    client.sendall(b"x" * 200_000)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0)
        start = ticks
        received = 0
        while received < 200_000:
            received += len(await stream.receive(100, timeout=5))
        # 2000 receives that never had to wait: the loop still ran the ticker.
        assert ticks - start >= 2000 // 16 - 1
        tg.cancel_scope.cancel()
    await stream.aclose()
    client.close()


async def test_a_shorter_deadline_after_a_longer_one_still_expires_on_time() -> None:
    # One timer serves many waits; a wait with an earlier deadline must move it.
    server, client = _tcp_pair()
    stream = _stream(server)
    client.sendall(b"A")
    assert await stream.receive(timeout=60) == b"A"

    async def late_send() -> None:
        await anyio.sleep(0.2)
        client.sendall(b"B")

    async with anyio.create_task_group() as tg:
        tg.start_soon(late_send)
        assert await stream.receive(timeout=60) == b"B"  # waited, with a 60 s timer
    # Were the 60 s timer left in place, this wait would outlast fail_after, whose
    # TimeoutError pytest.raises does not catch (it is outside): no stopwatch needed.
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        await stream.receive(timeout=0.2)
    # An early firing timer (left from a shorter wait) does not end a longer one.
    with anyio.move_on_after(0.5) as scope:
        await stream.receive(timeout=60)
    assert scope.cancelled_caught
    await stream.aclose()
    client.close()


async def test_bytes_sent_while_nobody_receives_stay_in_the_kernel() -> None:
    # The stream reads nothing ahead (the STARTTLS contract): data that arrives while the
    # session is busy stays in the socket, where a TLS handshake would find it.
    server, client = _tcp_pair()
    stream = _stream(server)

    async def late_send() -> None:
        await anyio.sleep(0.1)
        client.sendall(b"first")

    async with anyio.create_task_group() as tg:
        tg.start_soon(late_send)
        assert await stream.receive(timeout=5) == b"first"
    client.sendall(b"second")
    # The loop sees the socket readable with nobody waiting: it must neither read nor
    # keep waking up for it (a level-triggered registration left in place would spin).
    # CPU time of this thread (the loop's), with the collector off: neither another
    # thread of the test process nor a full collection of its heap counts as spinning.
    gc.disable()
    try:
        cpu = time.thread_time()
        await anyio.sleep(0.3)
        assert time.thread_time() - cpu < 0.15
    finally:
        gc.enable()
    assert server.recv(100, socket.MSG_PEEK) == b"second"
    assert await stream.receive(timeout=5) == b"second"
    await stream.aclose()
    client.close()


async def test_a_closed_stream_leaves_no_registration_behind() -> None:
    # The socket registered across waits must be unregistered before its fd is closed,
    # or a new connection reusing the number would inherit a stale registration.
    for _ in range(3):
        server, client = _tcp_pair()
        stream = _stream(server)

        async def late_send(sock: socket.socket = client) -> None:
            await anyio.sleep(0.05)
            sock.sendall(b"x")

        async with anyio.create_task_group() as tg:
            tg.start_soon(late_send)
            assert await stream.receive(timeout=5) == b"x"
        await stream.aclose()
        client.close()


def test_log_lines_are_the_same_with_cached_bound_fields() -> None:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("nosend.test_perf_transport")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    log = SessionLog(logger, service="smtp", session="s1", peer=str(PeerInfo("10.0.0.1", 25)))
    log.event("connect")
    log.bind(user="bob")
    log.event("auth", password="hunter2", result=235)
    log.event("override", user="eve", note='a "b"\r\n')
    log.event("hidden", level=logging.DEBUG)
    assert lines == [
        "service=smtp session=s1 peer=10.0.0.1:25 event=connect",
        "service=smtp session=s1 peer=10.0.0.1:25 user=bob event=auth password=[redacted]"
        " result=235",
        'service=smtp session=s1 peer=10.0.0.1:25 user=eve event=override note="a \\"b\\"\\r\\n"',
    ]
