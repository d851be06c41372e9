"""A line-echo session that exercises every transport feature, for runner tests.

Owns: a tiny line protocol spoken on every service until (and besides) the real
sessions: it greets, echoes lines and has commands for STARTTLS, a body/commit that a
shutdown must let finish (``BUSY``), blocking work in a thread (``BLOCK``), reporting the
peer (``PEER``), one large send (``BIG n``) and ``QUIT``. Must not: be mistaken for
mail; it never touches the store.

Replies start with ``220``/``250``/``221``/``421`` so SMTP-minded tools can drive it.
"""

from __future__ import annotations

import time

import anyio

from nosend_runners.session.boundary import (
    SessionContext,
    SessionFunc,
    ShutdownRequested,
    Stream,
    StreamClosed,
)

__all__ = ["run", "echo_session_factory"]

#: The longest line the echo session holds, terminator included; a longer one is
#: dropped as it arrives and answered with 500 once it ends.
MAX_LINE = 1000


class _Lines:
    """A bounded line splitter (the engines' receive buffer is private to them).

    Lines end at LF; a line longer than ``MAX_LINE`` is discarded as it arrives and
    reported as ``True`` once its LF comes. Searching resumes where it stopped, so a
    trickle of bytes costs linear time."""

    __slots__ = ("_data", "_scanned", "_discarding")

    def __init__(self) -> None:
        self._data = bytearray()
        self._scanned = 0
        self._discarding = False

    def feed(self, data: bytes) -> None:
        self._data += data

    def next_line(self) -> bytes | bool | None:
        """The next line with its terminator, ``True`` for an overlong one, ``None``
        when more bytes are needed."""
        data = self._data
        idx = data.find(b"\n", self._scanned)
        if idx < 0:
            if self._discarding or len(data) > MAX_LINE:
                data.clear()
                self._discarding = True
            self._scanned = len(data)
            return None
        end = idx + 1
        line = bytes(data[:end])
        del data[:end]
        self._scanned = 0
        if self._discarding or end > MAX_LINE:
            self._discarding = False
            return True
        return line


async def _lines(stream: Stream, ctx: SessionContext, buffer: _Lines) -> bytes | None:
    """Next line without its terminator, or ``None`` when the peer left."""
    while True:
        line = buffer.next_line()
        if line is True:
            await stream.send(b"500 line too long\r\n")
            continue
        if isinstance(line, bytes):
            return line.rstrip(b"\r\n")
        data = await stream.receive(4096, timeout=ctx.timeouts.command)
        if not data:
            return None
        buffer.feed(data)


async def run(stream: Stream, ctx: SessionContext) -> None:
    """Serve one echo session on ``stream``."""
    buffer = _Lines()
    try:
        await stream.send(f"220 {ctx.hostname} nosend echo {ctx.service} ready\r\n".encode())
        while True:
            try:
                line = await _lines(stream, ctx, buffer)
            except TimeoutError:
                ctx.log.event("timeout", result="421")
                await stream.send(b"421 4.4.2 Idle timeout, closing\r\n")
                return
            except ShutdownRequested:
                ctx.log.event("shutdown", result="421")
                await stream.send(b"421 4.3.2 Server shutting down\r\n")
                return
            if line is None:
                ctx.log.event("peer_closed")
                return
            verb, _, arg = line.partition(b" ")
            verb = verb.upper()
            if verb == b"QUIT":
                await stream.send(b"221 bye\r\n")
                return
            if verb == b"STARTTLS":
                if not stream.can_start_tls:
                    await stream.send(b"454 4.7.0 TLS not available\r\n")
                    continue
                await stream.send(b"220 2.0.0 Ready to start TLS\r\n")
                # RFC 3207 section 4.2: anything pipelined after STARTTLS is discarded.
                buffer = _Lines()
                await stream.start_tls()
                ctx.log.event("starttls", tls_version=stream.peer.tls_version)
            elif verb == b"PEER":
                peer = stream.peer
                await stream.send(
                    f"250 {peer.address} {peer.port} tls={peer.tls} {peer.tls_version}\r\n".encode()
                )
            elif verb == b"BUSY":
                # Stands in for DATA: a body and commit that a graceful shutdown lets finish.
                with ctx.busy():
                    await anyio.sleep(float(arg or b"0.5"))
                await stream.send(b"250 2.0.0 committed\r\n")
            elif verb == b"BIG":
                # One send call of many bytes, as a RETR of a big message might make.
                size = int(arg or b"1000000")
                await stream.send(b"250-" + b"x" * size + b"\r\n250 2.0.0 sent\r\n")
            elif verb == b"BLOCK":
                await ctx.run_blocking(time.sleep, float(arg or b"0.1"))
                await stream.send(b"250 2.0.0 blocked work done\r\n")
            else:
                await stream.send(b"250 " + line + b"\r\n")
    except StreamClosed as exc:
        ctx.log.event("stream_closed", reason=str(exc))


def echo_session_factory(service: str) -> SessionFunc:
    """Return the line-echo session for every ``service`` (a session factory)."""
    return run
