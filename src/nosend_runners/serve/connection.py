"""Run one session on one connection, whichever runner accepted it.

Owns: the life of a single connection once admitted: the ``connect``/``disconnect`` log
lines, the implicit TLS handshake for ``smtps``/``pop3s`` (RFC 8314 section 3.3: TLS
from the first byte, before any greeting), containing a session's failure to that one
connection, and closing the stream. Must not: accept, count or refuse connections (the
runners do) or speak any protocol.
"""

from __future__ import annotations

import logging
import time

from nosend_runners.serve.streams import AnyioStream
from nosend_runners.session.boundary import (
    SessionContext,
    SessionFunc,
    ShutdownRequested,
    StreamClosed,
)

__all__ = ["run_connection"]

_log = logging.getLogger("nosend.server")


async def run_connection(stream: AnyioStream, ctx: SessionContext, session: SessionFunc) -> None:
    """Run ``session`` on ``stream`` to its end; never raises except on cancellation."""
    started = time.monotonic()
    try:
        # At debug level: the disconnect line names the same peer and session and says
        # how long it lasted, so at info a session costs one line plus one per message
        # (as Exim and Dovecot log, rather than Postfix's connect/disconnect pair).
        ctx.log.event("connect", level=logging.DEBUG)
        if ctx.implicit_tls:
            await stream.start_tls()
            ctx.log.event("tls", tls_version=stream.peer.tls_version, cipher=stream.peer.cipher)
        await session(stream, ctx)
    except StreamClosed as exc:
        ctx.log.event("closed", reason=str(exc))
    except (ShutdownRequested, TimeoutError) as exc:
        # A session should answer these itself; never let them crash the runner.
        ctx.log.warning("unhandled", error=type(exc).__name__)
    except Exception as exc:
        ctx.log.error("session_crashed", error=type(exc).__name__)
        _log.exception("session %s crashed", ctx.session_id)
    finally:
        await stream.aclose()
        ctx.log.event("disconnect", seconds=f"{time.monotonic() - started:.3f}")
