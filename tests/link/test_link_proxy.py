"""The test link itself: what it counts and where it cuts, checked against an echo server."""

from __future__ import annotations

import socket
import threading

from tests.link.link_proxy import LinkProxy


def _echo_server() -> tuple[socket.socket, list[bytes], threading.Event]:
    """A listener echoing what each connection sends, what it received, and an event set
    whenever the server has finished with a connection (also one the proxy dropped)."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    finished = threading.Event()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    while data := conn.recv(4096):
                        received.append(data)
                        conn.sendall(data)
                except OSError:
                    pass  # the proxy reset the connection
                finally:
                    finished.set()

    threading.Thread(target=serve, daemon=True).start()
    return listener, received, finished


def _exchange(port: int, messages: list[bytes]) -> bytes:
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for message in messages:
            sock.sendall(message)
            want = len(got) + len(message)
            while len(got) < want:
                chunk = sock.recv(4096)
                if not chunk:
                    return got
                got += chunk
    return got


def test_counts_bytes_and_one_turnaround_per_lock_step_exchange() -> None:
    listener, _, _ = _echo_server()
    with listener, LinkProxy("127.0.0.1", listener.getsockname()[1], delay=0.01) as proxy:
        assert _exchange(proxy.port, [b"one\r\n", b"two\r\n", b"three\r\n"]) == (
            b"one\r\ntwo\r\nthree\r\n")
        counts = proxy.counters.snapshot()
    assert counts["connections"] == 1
    assert counts["bytes_up"] == counts["bytes_down"] == 17
    assert counts["turnarounds"] == 3


def test_cut_up_delivers_exactly_n_bytes_then_drops_the_connection() -> None:
    listener, received, finished = _echo_server()
    with listener, LinkProxy("127.0.0.1", listener.getsockname()[1], cut_up=7) as proxy:
        got = _exchange(proxy.port, [b"0123456789"])
        assert proxy.counters.snapshot()["cuts"] == 1
        # The client sees the cut as soon as the proxy makes it; the echo server's thread
        # may not have read its 7 bytes yet.
        assert finished.wait(10)
    assert b"".join(received) == b"0123456"
    assert len(got) < 10


def test_cut_down_truncates_what_the_client_sees() -> None:
    listener, _, _ = _echo_server()
    with listener, LinkProxy("127.0.0.1", listener.getsockname()[1], cut_down=4) as proxy:
        got = _exchange(proxy.port, [b"abcdefgh"])
    assert got == b"abcd"
