"""The two errors that may escape a ``nosend_proto`` engine.

``RemoteProtocolError`` means the peer broke the protocol in a way the engine cannot answer
and continue (the application should send ``reply`` if there is one, then close).
``LocalProtocolError`` means the application broke it: sent a reply nobody asked for,
sent in the wrong state, or passed a malformed value. Nothing else escapes an engine.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "LocalProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class of the engines' errors."""


class LocalProtocolError(ProtocolError):
    """The application used the engine in a way the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol beyond recovery.

    ``reply`` holds the wire bytes to send before closing, or ``None`` when nothing
    should be sent (for example after the peer already closed).
    """

    def __init__(self, message: str, reply: bytes | None = None) -> None:
        super().__init__(message)
        self.reply = reply
