"""Public values of the POP3 server engine: configuration, events and the application's answers.

The state machine first (RFC 1939 section 3), because every value below belongs to a step of it::

    GREETING ──Greeting──▶ AUTHORIZATION ──AuthAttempt──▶ (LoginAccepted) ──▶ TRANSACTION
       │                    │    ▲   │                       (LoginRejected: back)    │
       │ GreetingRefused    │    │   └─StartTLS─▶ (TLSReady / TLSRefused: back)       │
       ▼                    │    └──────────────────────────────────────┘             │
     CLOSED ◀──── QUIT ─────┘                                                         │
       ▲                                  Retrieve / Top ─▶ MessageChunk… MessageEnd  │
       │                                  (or MessageUnavailable), back to TRANSACTION│
       └── UpdateApplied / UpdateFailed ◀── UPDATE ◀── Quit ◀────── QUIT ─────────────┘

* The engine answers CAPA, USER, NOOP, STAT, LIST, UIDL, DELE, RSET and every error by
  itself, from the listing the application supplied in :class:`LoginAccepted`. Those bytes
  wait in the connection until the application collects them with ``data_to_send()`` (or
  with the next ``send()``, which always returns pending bytes first, so order is kept).
* It asks the application (an *event*) only when a decision or message content is needed:
  :class:`AuthAttempt` (USER/PASS, APOP and AUTH alike), :class:`Retrieve`, :class:`Top`,
  :class:`Quit` (TRANSACTION only: the deletions to apply), :class:`StartTLS`.
* Each such event must be answered with ``send()`` before ``next_event()`` is called again.
* :class:`ConnectionClosed` and :class:`TooManyErrors` are final: write ``data_to_send()``
  (after a delay, for the latter), then close. A connection that drops without QUIT in
  TRANSACTION never yields :class:`Quit`, so nothing is deleted (RFC 1939 section 6).

* Pipelining (RFC 2449 section 6.6): replies come out in command order whatever the
  chunking. A runner may coalesce what ``send()`` returns while ``conn.should_flush`` is
  false; ``NEED_FLUSH`` bounds what the engine buffers for many pipelined commands.

Message sizes (LIST, STAT, the RETR status line) are the octets of the message as RETR
transmits it with CRLF line ends, *without* the byte-stuffing dots and without the final
``.CRLF`` (RFC 1939 section 11; fetchmail and poplib count exactly that). Compute them
with :func:`nosend_proto.pop3_state.wire_size` or
:class:`nosend_proto.pop3_state.WireSizeCounter`; the line-end rules are those of the
store's normaliser, so the store's ``,W=`` sizes agree (a property test checks it).
Stream stored content as it is on disk (LF or CRLF): the engine converts it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from nosend_proto._errors import LocalProtocolError
from nosend_proto._sasl import SERVER_MECHANISMS, Credentials
from nosend_proto._sentinels import NEED_DATA, Sentinel

__all__ = [
    "NEED_DATA",
    "NEED_FLUSH",
    "Sentinel",
    "POP3ServerConfig",
    "MessageInfo",
    "AuthAttempt",
    "Retrieve",
    "Top",
    "Quit",
    "StartTLS",
    "TooManyErrors",
    "ConnectionClosed",
    "Greeting",
    "GreetingRefused",
    "LoginAccepted",
    "LoginRejected",
    "MessageChunk",
    "MessageEnd",
    "MessageUnavailable",
    "UpdateApplied",
    "UpdateFailed",
    "TLSReady",
    "TLSRefused",
    "RESPONSE_CODES",
    "POP3Event",
    "POP3Answer",
]


#: ``next_event()`` stopped because the engine's own replies to pipelined commands passed
#: ``max_output_buffer``: write ``data_to_send()``, then call ``next_event()`` again
#: *without* reading (the next commands are already buffered).
NEED_FLUSH = Sentinel("NEED_FLUSH")

#: Extended response codes the engine and the application may use (RFC 2449 section 8,
#: RFC 3206 section 4 and 5).
RESPONSE_CODES: frozenset[str] = frozenset(
    {"IN-USE", "LOGIN-DELAY", "SYS/TEMP", "SYS/PERM", "AUTH", "UTF8"}
)

# RFC 1939 section 7 (UIDL): 1 to 70 characters in the range 0x21 to 0x7E.
_UID_RE = re.compile(r"[\x21-\x7e]{1,70}")
# RFC 2449 section 6.7: EXPIRE takes a number of days or NEVER.
_EXPIRE_RE = re.compile(r"(?:NEVER|[0-9]{1,9})")
_HOSTNAME_RE = re.compile(r"[\x21-\x7e]{1,255}")


def _check_code(code: str | None) -> None:
    if code is not None and code not in RESPONSE_CODES:
        raise LocalProtocolError(f"unknown POP3 response code {code!r}")


def _check_text(text: str, what: str) -> None:
    # A reply is one line: a CR or LF in it would let the application forge extra replies.
    if "\r" in text or "\n" in text:
        raise LocalProtocolError(f"{what} must be a single line")


@dataclass(frozen=True, slots=True)
class POP3ServerConfig:
    """Everything a POP3 server engine needs to know; limits default to the RFC values.

    ``tls_active`` is true for a connection that starts in TLS (port 995); STLS turns TLS
    on later for one connection without changing the configuration.
    ``auth_requires_tls`` forbids the cleartext methods (USER/PASS, AUTH PLAIN and LOGIN)
    until TLS is active (RFC 2595 section 2.3); APOP and CRAM-MD5 stay allowed.
    ``expire`` (``"NEVER"`` or a number of days) and ``login_delay`` (seconds) are only
    advertised in CAPA (RFC 2449 sections 6.5 and 6.7); enforcing them is the
    application's policy, answered with ``LoginRejected(code="LOGIN-DELAY")``.
    ``max_errors`` bad commands or ``max_auth_failures`` rejected logins end the
    connection with :class:`TooManyErrors`.
    """

    hostname: str
    max_command_line: int = 255  # RFC 2449 section 4: 255 octets including CRLF
    max_sasl_line: int = 4096  # RFC 5034 section 4 lets SASL responses exceed 255
    tls_available: bool = False
    tls_active: bool = False
    user_allowed: bool = True
    auth_requires_tls: bool = True
    sasl_mechanisms: tuple[str, ...] = SERVER_MECHANISMS
    apop_enabled: bool = True
    expire: str | None = None
    login_delay: int | None = None
    implementation: str | None = "nosend"
    utf8: bool = False
    max_errors: int = 10
    max_auth_failures: int = 3
    max_output_buffer: int = 65536

    def __post_init__(self) -> None:
        if not _HOSTNAME_RE.fullmatch(self.hostname):
            raise LocalProtocolError("hostname must be printable ASCII without spaces")
        if self.max_command_line < 255:
            raise LocalProtocolError("RFC 2449 section 4 requires at least 255 octets")
        if self.max_sasl_line < self.max_command_line:
            raise LocalProtocolError("max_sasl_line must not be below max_command_line")
        for mech in self.sasl_mechanisms:
            if mech not in SERVER_MECHANISMS:
                raise LocalProtocolError(f"unsupported SASL mechanism {mech!r}")
        if self.expire is not None and not _EXPIRE_RE.fullmatch(self.expire):
            raise LocalProtocolError("expire must be NEVER or a number of days")
        if self.login_delay is not None and self.login_delay < 0:
            raise LocalProtocolError("login_delay must not be negative")
        if self.implementation is not None:
            _check_text(self.implementation, "implementation")
            if len(self.implementation.encode()) > 400:  # RFC 2449 s4: 512-octet lines
                raise LocalProtocolError("implementation string too long")
        if self.max_errors < 1 or self.max_auth_failures < 1 or self.max_output_buffer < 1:
            raise LocalProtocolError("limits must be positive")


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message of the maildrop as the application lists it at login.

    ``size_octets`` must be :func:`~nosend_proto.pop3_state.wire_size` of the content (the
    engine reports it in STAT, LIST and the RETR status line); ``uid`` is the persistent
    unique-id (RFC 1939 section 7: 1 to 70 characters 0x21-0x7E).
    """

    size_octets: int
    uid: str

    def __post_init__(self) -> None:
        if self.size_octets < 0:
            raise LocalProtocolError("size_octets must not be negative")
        if not _UID_RE.fullmatch(self.uid):
            raise LocalProtocolError(f"invalid POP3 unique-id {self.uid!r}")


# ---------------------------------------------------------------------------------------
# Events: the engine asks the application.


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """A client tried to log in; answer :class:`LoginAccepted` or :class:`LoginRejected`.

    ``credentials.mechanism`` is ``"USER"`` (USER/PASS, RFC 1939 section 7), ``"APOP"``
    (``challenge`` is the greeting's timestamp, RFC 1939 section 7) or the SASL mechanism
    (RFC 5034). Check it with ``credentials.matches_secret(secret)`` or against a hash.
    """

    credentials: Credentials


@dataclass(frozen=True, slots=True)
class Retrieve:
    """RETR: stream message ``msgno`` with :class:`MessageChunk`… :class:`MessageEnd`."""

    msgno: int
    message: MessageInfo


@dataclass(frozen=True, slots=True)
class Top:
    """TOP: stream message ``msgno``; the engine sends the header and ``lines`` body lines.

    The application may stop reading as soon as ``conn.wants_content`` turns false and
    send :class:`MessageEnd` (RFC 1939 section 7, TOP).
    """

    msgno: int
    message: MessageInfo
    lines: int


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT in TRANSACTION: apply these deletions, then answer :class:`UpdateApplied`.

    ``msgnos[i]`` is the message number of ``messages[i]`` (ascending). Answer
    :class:`UpdateFailed` when a deletion could not be applied (RFC 1939 section 6).
    """

    msgnos: tuple[int, ...]
    messages: tuple[MessageInfo, ...]


@dataclass(frozen=True, slots=True)
class StartTLS:
    """STLS (RFC 2595 section 4): answer :class:`TLSReady`, then start the TLS handshake."""


@dataclass(frozen=True, slots=True)
class TooManyErrors:
    """The client passed ``max_errors`` or ``max_auth_failures``.

    Final: delay as policy says, write ``data_to_send()`` (the last ``-ERR``), then close.
    """

    reason: str
    errors: int
    auth_failures: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """Final: the session is over (QUIT answered, or the peer closed); write, then close.

    ``peer_closed`` is true when the peer went away without completing QUIT; no deletion
    happens then (RFC 1939 section 6).
    """

    peer_closed: bool = False


# ---------------------------------------------------------------------------------------
# Answers: the application tells the engine.


@dataclass(frozen=True, slots=True)
class Greeting:
    """The first thing sent: ``+OK <text> <timestamp>`` (RFC 1939 sections 4 and 7)."""

    text: str = "POP3 server ready"

    def __post_init__(self) -> None:
        _check_text(self.text, "greeting text")


@dataclass(frozen=True, slots=True)
class GreetingRefused:
    """Refuse the connection instead of greeting it (``-ERR [code] reason``), then close."""

    reason: str = "service temporarily unavailable"
    code: str | None = "SYS/TEMP"

    def __post_init__(self) -> None:
        _check_text(self.reason, "reason")
        _check_code(self.code)


@dataclass(frozen=True, slots=True)
class LoginAccepted:
    """The credentials are good and the maildrop is locked: enter TRANSACTION.

    ``messages`` lists the maildrop in message-number order (number = index + 1); the
    numbers stay fixed for the session (RFC 1939 section 5). ``expire`` and
    ``login_delay``, when given, are this user's values that CAPA reports from now on
    (RFC 2449 sections 6.5 and 6.7); otherwise the configuration's are kept.
    """

    messages: tuple[MessageInfo, ...]
    expire: str | None
    login_delay: int | None

    def __init__(
        self,
        messages: Sequence[MessageInfo] = (),
        *,
        expire: str | None = None,
        login_delay: int | None = None,
    ) -> None:
        object.__setattr__(self, "messages", tuple(messages))
        object.__setattr__(self, "expire", expire)
        object.__setattr__(self, "login_delay", login_delay)
        if expire is not None and not _EXPIRE_RE.fullmatch(expire):
            raise LocalProtocolError("expire must be NEVER or a number of days")
        if login_delay is not None and login_delay < 0:
            raise LocalProtocolError("login_delay must not be negative")
        uids = {m.uid for m in self.messages}
        if len(uids) != len(self.messages):
            raise LocalProtocolError("unique-ids must be unique within the maildrop")


@dataclass(frozen=True, slots=True)
class LoginRejected:
    """Refuse the login: ``-ERR [code] reason``.

    ``code`` says why (RFC 2449 section 8 / RFC 3206): ``AUTH`` bad credentials (counted
    towards ``max_auth_failures``, as is ``None``), ``IN-USE`` maildrop locked,
    ``LOGIN-DELAY`` too soon, ``SYS/TEMP`` or ``SYS/PERM`` a system problem.
    """

    reason: str = "authentication failed"
    code: str | None = "AUTH"

    def __post_init__(self) -> None:
        _check_text(self.reason, "reason")
        _check_code(self.code)


@dataclass(frozen=True, slots=True)
class MessageChunk:
    """A piece of the stored message for RETR/TOP, as stored (LF or CRLF line ends)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageEnd:
    """The stored message is complete; the engine finishes the line and sends ``.CRLF``."""


@dataclass(frozen=True, slots=True)
class MessageUnavailable:
    """Answer RETR/TOP with ``-ERR`` (the message vanished or cannot be read).

    Only valid before the first :class:`MessageChunk`; after that, close the connection.
    """

    reason: str = "message cannot be read"
    code: str | None = "SYS/TEMP"

    def __post_init__(self) -> None:
        _check_text(self.reason, "reason")
        _check_code(self.code)


@dataclass(frozen=True, slots=True)
class UpdateApplied:
    """The deletions of :class:`Quit` are durable: ``+OK`` and close (RFC 1939 section 6)."""


@dataclass(frozen=True, slots=True)
class UpdateFailed:
    """Some deletions failed: ``-ERR [code] reason`` and close (RFC 1939 section 6)."""

    reason: str = "some deleted messages not removed"
    code: str | None = "SYS/TEMP"

    def __post_init__(self) -> None:
        _check_text(self.reason, "reason")
        _check_code(self.code)


@dataclass(frozen=True, slots=True)
class TLSReady:
    """Accept STLS: ``+OK``; input pipelined after STLS is discarded (RFC 2595 section 4)."""


@dataclass(frozen=True, slots=True)
class TLSRefused:
    """Refuse STLS (for example no certificate): ``-ERR [code] reason``."""

    reason: str = "TLS not available"
    code: str | None = "SYS/TEMP"

    def __post_init__(self) -> None:
        _check_text(self.reason, "reason")
        _check_code(self.code)


#: Everything ``next_event()`` may return besides the sentinels.
POP3Event = AuthAttempt | Retrieve | Top | Quit | StartTLS | TooManyErrors | ConnectionClosed

#: Everything ``send()`` accepts.
POP3Answer = (
    Greeting
    | GreetingRefused
    | LoginAccepted
    | LoginRejected
    | MessageChunk
    | MessageEnd
    | MessageUnavailable
    | UpdateApplied
    | UpdateFailed
    | TLSReady
    | TLSRefused
)
