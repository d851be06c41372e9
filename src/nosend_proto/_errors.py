"""The engines' errors: what may escape a ``nosend_proto`` engine, and what does not.

``LocalProtocolError`` means the application broke the protocol: sent a reply nobody
asked for, sent in the wrong state, built a malformed value (a ``Reply`` with a bad code,
a configuration out of range). It is the only error the server engines raise.

The peer's mistakes do not raise: the server engines answer them as protocol events that
carry the reply to send (SMTP: ``ProtocolViolation``, whose ``close`` says when the
connection cannot go on, and ``DataRejected``; POP3: the ``-ERR`` reply the engine writes
itself, and ``TooManyErrors``). ``RemoteProtocolError`` is for an engine that cannot answer the peer
and go on, such as a client that cannot parse the server's reply; no server engine raises
it.

Must not: carry secrets (a password, a SASL response) in a message.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "LocalProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class of the engines' errors."""


class LocalProtocolError(ProtocolError):
    """The application used the engine in a way the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol beyond recovery (not raised by the server engines).

    ``reply`` holds the wire bytes to send before closing, or ``None`` when nothing
    should be sent (for example after the peer already closed).
    """

    def __init__(self, message: str, reply: bytes | None = None) -> None:
        super().__init__(message)
        self.reply = reply
