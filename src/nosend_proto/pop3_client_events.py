"""Public values of the POP3 client engine: configuration, commands and events.

The conversation as the client sees it (RFC 1939 section 3); the full table is
``nosend_proto.pop3_client.TRANSITIONS``::

    GREETING ──Greeting──▶ AUTHORIZATION ──UserPass / Apop / Auth──▶ LOGGING_IN
       │                     │  ▲   │                                     │
       │ GreetingRefused     │  │   └─Stls─▶ STLS_SENT ──StlsAccepted─┐   │ LoggedIn
       ▼                     │  └── start_tls_done() ◀ TLS_HANDSHAKE ◀┘   ▼
     CLOSED ◀─SignedOff─ QUITTING ◀────────── Quit ─────────────── TRANSACTION
                                   (LoginFailed goes back to AUTHORIZATION)

* The application *sends commands* (``conn.send(Retr(3))`` returns the bytes to write)
  and *reads events* (``conn.next_event()``): one or more events answer each command, in
  the order the commands were sent, whatever the chunking of the server's bytes.
* A multi-line RETR/TOP answer arrives as :class:`MessageBegins`, any number of
  :class:`MessageData` (already dot-unstuffed, CRLF line ends as on the wire, never the
  whole message at once) and :class:`MessageComplete`.
* A LIST or UIDL without argument arrives as one :class:`ListReply` /
  :class:`UidlReply` holding at most ``max_listing_entries`` entries (``truncated`` says
  the server listed more; the rest was read and dropped, so memory stays bounded).
* ``-ERR`` answers: :class:`GreetingRefused`, :class:`LoginFailed`,
  :class:`CapabilitiesReceived` with ``advertised=False`` (a server without CAPA),
  :class:`SignedOff` with ``ok=False``, and :class:`CommandFailed` for everything else.
  The RFC 2449 section 8 response code (``IN-USE``, ``LOGIN-DELAY``; RFC 3206's
  ``SYS/TEMP``, ``SYS/PERM``, ``AUTH`` ...) is parsed into ``code``.
* :class:`ConnectionClosed` is final: the session is over (after :class:`SignedOff`, or
  the server went away, ``expected=False``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nosend_proto._errors import LocalProtocolError
from nosend_proto._sentinels import NEED_DATA, Sentinel

__all__ = [
    "NEED_DATA",
    "Sentinel",
    "POP3ClientConfig",
    "Capabilities",
    # commands
    "Capa",
    "Stls",
    "UserPass",
    "Apop",
    "Auth",
    "Stat",
    "List",
    "Uidl",
    "Top",
    "Retr",
    "Dele",
    "Rset",
    "Noop",
    "Quit",
    "POP3Command",
    # events
    "Greeting",
    "GreetingRefused",
    "CapabilitiesReceived",
    "StlsAccepted",
    "LoggedIn",
    "LoginFailed",
    "StatReply",
    "ScanEntry",
    "ListReply",
    "UidEntry",
    "UidlReply",
    "MessageBegins",
    "MessageData",
    "MessageComplete",
    "CommandOK",
    "CommandFailed",
    "SignedOff",
    "ConnectionClosed",
    "POP3ClientEvent",
]

# Names and secrets go on one command line: no CR, LF or NUL (command injection).
_LINE_BREAKING = re.compile(r"[\r\n\x00]")
_MECHANISM_RE = re.compile(r"[A-Z0-9_-]{1,20}")  # RFC 4422 section 3.1


def _check_field(value: str, what: str, *, spaces: bool = True) -> None:
    if not value:
        raise LocalProtocolError(f"{what} must not be empty")
    if _LINE_BREAKING.search(value) or (not spaces and " " in value):
        raise LocalProtocolError(f"{what} contains a character a POP3 line cannot carry")


def _check_msgno(msgno: int) -> None:
    if msgno < 1:
        raise LocalProtocolError("message numbers start at 1 (RFC 1939 section 5)")


@dataclass(frozen=True, slots=True)
class POP3ClientConfig:
    """What a POP3 client engine needs to know; limits default to the RFC values.

    ``tls_active``: the connection starts in TLS (port 995). ``require_tls``: never send
    a name or secret outside TLS; a login attempted in clear is answered locally with
    :class:`LoginFailed` (``tls_required=True``) and nothing goes on the wire.
    ``max_line`` bounds a status or listing line (RFC 2449 section 4: 512 octets),
    ``max_sasl_line`` a SASL challenge (RFC 5034 section 4 lifts the limit for them);
    ``max_listing_entries`` and ``max_capabilities`` bound multi-line listings.
    """

    require_tls: bool = False
    tls_active: bool = False
    max_line: int = 512
    max_sasl_line: int = 8192
    max_listing_entries: int = 100_000
    max_capabilities: int = 100
    max_sasl_steps: int = 10

    def __post_init__(self) -> None:
        if self.max_line < 512:
            raise LocalProtocolError("RFC 2449 section 4 requires at least 512 octets")
        if self.max_sasl_line < self.max_line:
            raise LocalProtocolError("max_sasl_line must not be below max_line")
        if self.max_listing_entries < 1 or self.max_capabilities < 1 or self.max_sasl_steps < 1:
            raise LocalProtocolError("limits must be positive")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the server said in its CAPA answer (RFC 2449 sections 5 and 6).

    ``advertised`` is false before any CAPA, after STLS (RFC 2595 section 4: capabilities
    learnt in clear are forgotten) and when the server answered ``-ERR`` (an RFC 1939-only
    server): then every flag is false and the application probes by trying.
    ``expire`` is ``"NEVER"`` or a number of days; ``expire_per_user`` and
    ``login_delay_per_user`` are the ``USER`` suffix of RFC 2449 sections 6.5 and 6.7.
    ``other`` keeps the lines this engine does not interpret, as sent.
    """

    advertised: bool = False
    top: bool = False
    uidl: bool = False
    user: bool = False
    pipelining: bool = False
    stls: bool = False
    resp_codes: bool = False
    auth_resp_code: bool = False
    utf8: bool = False
    sasl: tuple[str, ...] = ()
    expire: str | None = None
    expire_per_user: bool = False
    login_delay: int | None = None
    login_delay_per_user: bool = False
    implementation: str | None = None
    other: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# Commands: the application asks the engine to send them.


@dataclass(frozen=True, slots=True)
class Capa:
    """CAPA (RFC 2449 section 5); answered by :class:`CapabilitiesReceived`."""


@dataclass(frozen=True, slots=True)
class Stls:
    """STLS (RFC 2595 section 4); answered by :class:`StlsAccepted` or :class:`CommandFailed`.

    After :class:`StlsAccepted` run the TLS handshake, then call ``start_tls_done()``.
    """


@dataclass(frozen=True, slots=True)
class UserPass:
    """USER then PASS (RFC 1939 section 7); the engine sends PASS once USER is accepted.

    Answered by :class:`LoggedIn` or :class:`LoginFailed`.
    """

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        _check_field(self.username, "username")
        _check_field(self.password, "password")


@dataclass(frozen=True, slots=True)
class Apop:
    """APOP name digest (RFC 1939 section 7): MD5 of the greeting's timestamp and ``secret``.

    Only valid when the greeting carried a timestamp (``conn.timestamp``).
    """

    username: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        _check_field(self.username, "username", spaces=False)
        _check_field(self.secret, "secret")


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH (RFC 5034) with any mechanism ``nosend_proto._sasl.SaslClient`` knows.

    ``secret`` is the password (PLAIN, LOGIN, CRAM-MD5) or token (OAuth mechanisms);
    the engine answers the server's challenges itself.
    """

    mechanism: str
    username: str
    secret: str = field(repr=False)
    authzid: str = ""

    def __post_init__(self) -> None:
        if not _MECHANISM_RE.fullmatch(self.mechanism.upper()):
            raise LocalProtocolError(f"invalid SASL mechanism name {self.mechanism!r}")
        _check_field(self.username, "username")
        if _LINE_BREAKING.search(self.authzid):
            raise LocalProtocolError("authzid contains CR, LF or NUL")


@dataclass(frozen=True, slots=True)
class Stat:
    """STAT (RFC 1939 section 5); answered by :class:`StatReply`."""


@dataclass(frozen=True, slots=True)
class List:
    """LIST [msg] (RFC 1939 section 5); answered by :class:`ListReply`."""

    msgno: int | None = None

    def __post_init__(self) -> None:
        if self.msgno is not None:
            _check_msgno(self.msgno)


@dataclass(frozen=True, slots=True)
class Uidl:
    """UIDL [msg] (RFC 1939 section 7); answered by :class:`UidlReply`."""

    msgno: int | None = None

    def __post_init__(self) -> None:
        if self.msgno is not None:
            _check_msgno(self.msgno)


@dataclass(frozen=True, slots=True)
class Top:
    """TOP msg n (RFC 1939 section 7): the header and ``lines`` body lines, streamed."""

    msgno: int
    lines: int

    def __post_init__(self) -> None:
        _check_msgno(self.msgno)
        if self.lines < 0:
            raise LocalProtocolError("TOP takes a non-negative number of lines")


@dataclass(frozen=True, slots=True)
class Retr:
    """RETR msg (RFC 1939 section 5): the message, streamed."""

    msgno: int

    def __post_init__(self) -> None:
        _check_msgno(self.msgno)


@dataclass(frozen=True, slots=True)
class Dele:
    """DELE msg (RFC 1939 section 5); the server deletes at QUIT (UPDATE state)."""

    msgno: int

    def __post_init__(self) -> None:
        _check_msgno(self.msgno)


@dataclass(frozen=True, slots=True)
class Rset:
    """RSET (RFC 1939 section 5): unmark every message marked deleted."""


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP (RFC 1939 section 5)."""


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT (RFC 1939 sections 4 and 6); answered by :class:`SignedOff`."""


#: Everything ``send()`` accepts.
POP3Command = (
    Capa | Stls | UserPass | Apop | Auth | Stat | List | Uidl | Top | Retr | Dele | Rset | Noop
) | Quit


# ---------------------------------------------------------------------------------------
# Events: the engine tells the application what the server answered.


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's ``+OK`` greeting; ``timestamp`` is its APOP ``<...>`` if any."""

    text: str
    timestamp: str | None


@dataclass(frozen=True, slots=True)
class GreetingRefused:
    """The server greeted with ``-ERR`` (RFC 2449 section 8 code in ``code``); close."""

    text: str
    code: str | None


@dataclass(frozen=True, slots=True)
class CapabilitiesReceived:
    """The answer to CAPA; ``capabilities.advertised`` is false if it was ``-ERR``."""

    capabilities: Capabilities


@dataclass(frozen=True, slots=True)
class StlsAccepted:
    """``+OK`` to STLS: run the TLS handshake now, then call ``start_tls_done()``."""

    text: str


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """The login succeeded: TRANSACTION state. ``method`` is USER, APOP or the mechanism."""

    method: str
    text: str


@dataclass(frozen=True, slots=True)
class LoginFailed:
    """The login failed; ``code`` is ``AUTH``, ``IN-USE``, ``LOGIN-DELAY``, ``SYS/TEMP``...

    ``tls_required`` is true when the engine refused it itself, without sending anything,
    because the configuration requires TLS and the connection is in clear.
    """

    method: str
    text: str
    code: str | None
    tls_required: bool = False


@dataclass(frozen=True, slots=True)
class StatReply:
    """STAT: ``count`` messages of ``octets`` octets in total (RFC 1939 section 5)."""

    count: int
    octets: int


@dataclass(frozen=True, slots=True)
class ScanEntry:
    """One line of a LIST answer: message ``msgno`` has ``octets`` octets."""

    msgno: int
    octets: int


@dataclass(frozen=True, slots=True)
class ListReply:
    """LIST: one entry per message (one only for ``LIST msg``).

    ``truncated``: the server listed more than ``max_listing_entries``; the rest was
    dropped.
    """

    command: List
    entries: tuple[ScanEntry, ...]
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class UidEntry:
    """One line of a UIDL answer: message ``msgno`` has unique-id ``uid``."""

    msgno: int
    uid: str


@dataclass(frozen=True, slots=True)
class UidlReply:
    """UIDL: one entry per message (one only for ``UIDL msg``); see :class:`ListReply`."""

    command: Uidl
    entries: tuple[UidEntry, ...]
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class MessageBegins:
    """``+OK`` to RETR or TOP: :class:`MessageData` events follow."""

    command: Retr | Top
    text: str


@dataclass(frozen=True, slots=True)
class MessageData:
    """A piece of the message, dot-unstuffed, with its CRLF line ends (RFC 1939 s3)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """The terminating ``.CRLF`` arrived: the message of ``command`` is whole."""

    command: Retr | Top


@dataclass(frozen=True, slots=True)
class CommandOK:
    """``+OK`` to DELE, RSET or NOOP."""

    command: POP3Command
    text: str


@dataclass(frozen=True, slots=True)
class CommandFailed:
    """``-ERR`` to a command that has no failure event of its own."""

    command: POP3Command
    text: str
    code: str | None


@dataclass(frozen=True, slots=True)
class SignedOff:
    """The answer to QUIT; the connection is over.

    ``updated`` is true for a QUIT sent in TRANSACTION: then ``ok`` means the server
    removed every message marked deleted, and ``ok=False`` that some deletions failed
    (RFC 1939 section 6).
    """

    ok: bool
    updated: bool
    text: str
    code: str | None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """Final: nothing more will come. ``expected`` is false when the server went away
    with ``outstanding`` commands unanswered (a half-streamed message is incomplete)."""

    expected: bool = True
    outstanding: int = 0


#: Everything ``next_event()`` may return besides ``NEED_DATA``.
POP3ClientEvent = (
    Greeting
    | GreetingRefused
    | CapabilitiesReceived
    | StlsAccepted
    | LoggedIn
    | LoginFailed
    | StatReply
    | ListReply
    | UidlReply
    | MessageBegins
    | MessageData
    | MessageComplete
    | CommandOK
    | CommandFailed
    | SignedOff
    | ConnectionClosed
)
