"""A TCP proxy that behaves like a slow, costly link: delay, a cut after N bytes, counters.

Transport tests and ``benchmarks/bench_transport.py`` put it between nosend and an
upstream server on loopback. It forwards each direction through its own queue so that
every chunk arrives ``delay`` seconds after it was read (like a geostationary hop, whose
cost is per turnaround, not per byte), can drop the connection after a given number of
bytes in either direction (a call that drops mid-message), and counts what a bill would:
bytes each way and *turnarounds* -- the times the server starts answering after the
client spoke. A lock-step exchange costs one turnaround; a pipelined batch costs one for
the whole batch, so a test can assert that round trips do not grow with the message count.

Threads, not anyio: the proxy must keep working while the code under test runs its own
event loop in the same process, and it must never share that loop's fate.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["LinkProxy", "LinkCounters"]

_CHUNK = 64 * 1024


@dataclass
class LinkCounters:
    """What crossed the link, added up over every connection since the proxy started."""

    connections: int = 0
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client
    turnarounds: int = 0
    cuts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict, read consistently."""
        with self._lock:
            return {
                "connections": self.connections,
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down,
                "turnarounds": self.turnarounds,
                "cuts": self.cuts,
            }


class _Pipe:
    """One connection's two directions, each delayed through a queue of (due, bytes)."""

    def __init__(self, proxy: LinkProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.sockets = {"up": (client, server), "down": (server, client)}
        self.sent = {"up": 0, "down": 0}
        self.last_direction = "down"  # the server speaks first (banner) after the connect
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        threads = []
        for direction in ("up", "down"):
            queue: collections.deque[tuple[float, bytes]] = collections.deque()
            ready = threading.Condition()
            threads.append(threading.Thread(
                target=self._read, args=(direction, queue, ready), daemon=True))
            threads.append(threading.Thread(
                target=self._write, args=(direction, queue, ready), daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._close()

    def _count(self, direction: str, size: int) -> None:
        counters = self.proxy.counters
        with counters._lock:
            if direction == "up":
                counters.bytes_up += size
            else:
                counters.bytes_down += size
                if self.last_direction == "up":
                    counters.turnarounds += 1
            self.last_direction = direction

    def _read(
        self,
        direction: str,
        queue: collections.deque[tuple[float, bytes]],
        ready: threading.Condition,
    ) -> None:
        source, _ = self.sockets[direction]
        while True:
            try:
                data = source.recv(_CHUNK)
            except OSError:
                data = b""
            cut = False
            # Read afresh for each chunk: a test may cut at a moment of its choosing.
            limit = self.proxy.cut_up if direction == "up" else self.proxy.cut_down
            with self.lock:
                if data and limit is not None:
                    room = limit - self.sent[direction]
                    if len(data) >= room:
                        data, cut = data[: max(room, 0)], True
                self.sent[direction] += len(data)
            if data:
                with self.lock:
                    self._count(direction, len(data))
            with ready:
                queue.append((time.monotonic() + self.proxy.delay, data))
                if cut:
                    queue.append((time.monotonic() + self.proxy.delay, b"<cut>"))
                ready.notify()
            if not data or cut:
                return

    def _write(
        self,
        direction: str,
        queue: collections.deque[tuple[float, bytes]],
        ready: threading.Condition,
    ) -> None:
        _, sink = self.sockets[direction]
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.popleft()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if data == b"<cut>":
                with self.proxy.counters._lock:
                    self.proxy.counters.cuts += 1
                self._close(abort=True)
                return
            if not data:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                sink.sendall(data)
            except OSError:
                self._close(abort=True)
                return

    def _close(self, abort: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in self.sockets["up"]:
            try:
                if abort:
                    # RST, as a dropped call looks to TCP once the modem hangs up.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                                    b"\x00\x00\x00\x00")
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class LinkProxy:
    """Listen on 127.0.0.1 and forward every connection to ``(host, port)``.

    ``delay`` is added to each direction (so a round trip costs ``2 * delay``);
    ``cut_up``/``cut_down`` drop every connection once that many bytes went that way
    (``None``: never), counted per connection. Settings may be changed at any time; a
connection reads them afresh for each chunk. Use as a context
    manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        delay: float = 0.0,
        cut_up: int | None = None,
        cut_down: int | None = None,
    ) -> None:
        self.target = (host, port)
        self.delay = delay
        self.cut_up = cut_up
        self.cut_down = cut_down
        self.counters = LinkCounters()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._pipes: list[_Pipe] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> LinkProxy:
        """Begin accepting connections."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and drop every open connection."""
        self._stopped.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for pipe in list(self._pipes):
            pipe._close(abort=True)
        self._thread.join(timeout=5)

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.counters._lock:
                self.counters.connections += 1
            pipe = _Pipe(self, client, server)
            self._pipes.append(pipe)
            threading.Thread(target=pipe.run, daemon=True).start()
