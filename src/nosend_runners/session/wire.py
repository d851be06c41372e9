"""What the SMTP and POP3 sessions share on the wire: receiving under a timer, and ending.

Owns: :class:`WireSession`, the base of both sessions: the command timer (a timeout
covers a whole command, so a client trickling a byte at a time cannot hold a connection
past it: slowloris), the bound on input read without any answer (a client that keeps
sending, say an endless command line or a body without line ends past the size limit,
never falls silent, so no timeout ends it: the engines throw those bytes away and the
session closes once more than :meth:`WireSession.silent_limit` of them went by), the
receive that turns a timeout, a graceful shutdown or such a flood into the session's
goodbye and :class:`Abort`, and :func:`serve_until_done`, which runs a session to its
end and always lets it clean up. Must not: know a protocol; each session says its own
goodbye in :meth:`WireSession.timed_out`, :meth:`WireSession.shutting_down` and
:meth:`WireSession.flooded`.
"""

from __future__ import annotations

import anyio

from nosend_runners.session.boundary import SessionContext, ShutdownRequested, Stream

__all__ = ["Abort", "WireSession", "serve_until_done"]

#: Bytes asked of the stream per receive.
RECEIVE_SIZE = 65536
#: Input read without the engine making anything of it (no event, no reply) after which
#: a session outside a message body gives up: far more than any command line, AUTH
#: exchange or pipelined burst leaves unanswered (each command is answered as it ends).
MAX_SILENT_INPUT = 1 << 20


class Abort(Exception):
    """End the session now (the reason was already answered and logged)."""


class WireSession:
    """The receive loop's shared half; subclasses implement ``serve``, ``close`` and
    the two goodbyes, and may override ``receive_timeout``."""

    def __init__(self, stream: Stream, ctx: SessionContext) -> None:
        self.stream = stream
        self.ctx = ctx
        #: When we began waiting for the command now arriving (None: none under way).
        self.command_started: float | None = None
        #: Octets received since the engine last made something of the input (the
        #: session sets it to 0 on each event or reply).
        self.silent = 0
        #: What the client sent during a :meth:`pause`, not yet handed to the engine.
        self.held = bytearray()
        #: The client closed during a :meth:`pause` (``receive`` returns ``b""`` next).
        self.peer_left = False

    def command_time_left(self, limit: float) -> float:
        """Seconds left of ``limit`` for the command now arriving; starts its timer."""
        now = self.ctx.monotonic()
        started = self.command_started
        if started is None:
            self.command_started = started = now
        return max(0.0, limit - (now - started))

    def receive_timeout(self) -> float:
        """The timeout for the next receive (the whole-command timer by default)."""
        raise NotImplementedError

    async def timed_out(self) -> None:
        """Log and answer a timeout (the session ends after it)."""
        raise NotImplementedError

    async def shutting_down(self) -> None:
        """Log and answer a graceful shutdown (the session ends after it)."""
        raise NotImplementedError

    def silent_limit(self) -> int:
        """Octets the client may send without any answer before the session ends."""
        return MAX_SILENT_INPUT

    async def flooded(self) -> None:
        """Log and answer input past :meth:`silent_limit` (the session ends after it)."""
        raise NotImplementedError

    async def receive(self) -> bytes:
        """Next bytes from the client (``b""`` when it left); raises :class:`Abort`
        after answering a timeout, a shutdown, or more unanswered input than
        :meth:`silent_limit`."""
        if self.held:
            data = bytes(self.held)
            self.held.clear()
        elif self.peer_left:
            return b""
        else:
            data = await self._receive_now()
        self.silent += len(data)
        if self.silent > self.silent_limit():
            await self.flooded()
            raise Abort
        return data

    async def _receive_now(self) -> bytes:
        try:
            return await self.stream.receive(RECEIVE_SIZE, timeout=self.receive_timeout())
        except TimeoutError:
            await self.timed_out()
            raise Abort from None
        except ShutdownRequested:
            await self.shutting_down()
            raise Abort from None

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (a delay after a failed login) unless the client leaves
        first: a client gone is noticed at once, so its session ends and its connection
        slot is free again without sitting out the delay. What the client sends
        meanwhile is kept, in order, for the engine (up to :data:`MAX_SILENT_INPUT`;
        past that the rest of the delay is waited without reading)."""
        deadline = self.ctx.monotonic() + seconds
        while not self.peer_left:
            left = deadline - self.ctx.monotonic()
            if left <= 0:
                return
            if len(self.held) > MAX_SILENT_INPUT:
                await anyio.sleep(left)
                return
            try:
                data = await self.stream.receive(RECEIVE_SIZE, timeout=left)
            except TimeoutError:
                return
            except ShutdownRequested:
                return  # the next receive says goodbye
            if not data:
                self.peer_left = True
                return
            self.held += data

    async def serve(self) -> None:
        """The conversation, from greeting to close."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the session holds, whatever happened (shielded as needed)."""
        raise NotImplementedError


async def serve_until_done(session: WireSession) -> None:
    """Run ``session`` to its end: an :class:`Abort` is a normal end; ``close`` always
    runs."""
    try:
        await session.serve()
    except Abort:
        pass
    finally:
        await session.close()
