"""The SMTP server engine: the command state table and ``ServerConnection``.

Interface draft (implementation follows in the next commits).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nosend_proto._errors import LocalProtocolError
from nosend_proto._sasl import SERVER_MECHANISMS
from nosend_proto.smtp_events import NEED_DATA, Reply, Sentinel, SMTPEvent

__all__ = ["SMTPServerConfig", "SMTPState", "ServerConnection", "BARE_NEWLINE_POLICIES"]

#: ``"reject"``: a body with a bare CR or LF is read to its real ``CRLF.CRLF`` and refused
#: with 550 5.6.0. ``"normalise"``: each bare CR or LF becomes CRLF in the DataChunks.
BARE_NEWLINE_POLICIES: tuple[str, ...] = ("reject", "normalise")


@dataclass(frozen=True, slots=True)
class SMTPServerConfig:
    """What one SMTP server connection needs to know; limits default to RFC 5321 values.

    ``max_command_line`` (RFC 5321 section 4.5.3.1.4: 512 octets with CRLF; MAIL and RCPT
    may add the extensions' parameter allowances), ``max_text_line`` (section 4.5.3.1.6:
    1000 octets with CRLF; 0 accepts any length), ``max_recipients`` (section 4.5.3.1.8;
    more get 452), ``max_message_size`` (octets after unstuffing, advertised as SIZE,
    RFC 1870; 0 = no limit), ``max_errors`` (protocol errors before a 421 and close;
    0 = never), ``max_auth_line`` (RFC 4954 section 4: 12288).
    ``tls_available`` offers STARTTLS; ``tls_active`` means the connection is already
    TLS (SMTPS). ``auth_mechanisms`` (subset of PLAIN, LOGIN, CRAM-MD5) offers AUTH,
    only over TLS when ``auth_requires_tls``. ``bare_newlines`` is one of
    ``BARE_NEWLINE_POLICIES``.
    """

    hostname: str
    max_command_line: int = 512
    max_text_line: int = 1000
    max_auth_line: int = 12288
    max_recipients: int = 100
    max_message_size: int = 35 * 1024 * 1024
    max_errors: int = 10
    pipelining: bool = True
    eightbitmime: bool = True
    smtputf8: bool = True
    chunking: bool = True
    dsn: bool = True
    enhanced_status_codes: bool = True
    tls_available: bool = False
    tls_active: bool = False
    auth_mechanisms: tuple[str, ...] = ()
    auth_requires_tls: bool = True
    bare_newlines: str = "reject"

    def __post_init__(self) -> None:
        if not self.hostname or not self.hostname.isprintable() or " " in self.hostname:
            raise LocalProtocolError("hostname must be printable without spaces")
        if self.max_command_line < 512:
            raise LocalProtocolError("RFC 5321 section 4.5.3.1.4 requires 512 octets")
        for mech in self.auth_mechanisms:
            if mech not in SERVER_MECHANISMS:
                raise LocalProtocolError(f"unsupported SASL mechanism {mech!r}")
        if self.bare_newlines not in BARE_NEWLINE_POLICIES:
            raise LocalProtocolError(f"bare_newlines must be one of {BARE_NEWLINE_POLICIES}")
        if min(self.max_text_line, self.max_recipients, self.max_message_size) < 0:
            raise LocalProtocolError("limits must not be negative")
        if self.max_recipients < 1 or self.max_auth_line < 512:
            raise LocalProtocolError("max_recipients must be >= 1, max_auth_line >= 512")


class SMTPState(enum.Enum):
    """Where the conversation stands (see the diagram in ``smtp_events``)."""

    GREETING = "greeting"
    REFUSED = "refused"
    CONNECTED = "connected"
    READY = "ready"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    BDAT = "bdat"
    AUTH = "auth"
    TLS_PENDING = "tls-pending"
    CLOSED = "closed"


class ServerConnection:
    """One SMTP server connection, sans I/O.

    ``receive_data(bytes)`` (``b""`` when the peer closed), ``next_event()`` (an event or
    ``NEED_DATA``), ``send(reply)`` returns the bytes to write. ``should_flush`` says when
    buffered reply bytes must be written (RFC 2920 section 3.1). ``nonce`` is a random
    per-connection string used for CRAM-MD5 challenges (``<nonce.N@hostname>``).
    """

    def __init__(self, config: SMTPServerConfig, *, nonce: str) -> None:
        self.config = config
        self._nonce = nonce
        self._state = SMTPState.GREETING

    def receive_data(self, data: bytes) -> None:
        """Take bytes the peer sent; ``b""`` means the peer closed its side."""
        raise NotImplementedError

    def next_event(self) -> SMTPEvent | Sentinel:
        """Return the next event, or ``NEED_DATA``."""
        return NEED_DATA

    def send(self, reply: Reply | object) -> bytes:
        """Render the application's reply to the pending event; return the wire bytes."""
        raise NotImplementedError

    def start_tls_done(self) -> None:
        """The runner finished the TLS handshake after a 220 to StartTLS (RFC 3207 4.2)."""
        raise NotImplementedError

    @property
    def should_flush(self) -> bool:
        """True when reply bytes returned so far must be written before anything else."""
        return True
