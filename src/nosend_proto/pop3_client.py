"""The POP3 client engine: state table and :class:`ClientConnection` (sans-IO).

The state machine first. ``state`` says what the application may *send* next; answers
are matched to commands in the order they were sent (a queue of outstanding commands),
so with pipelining the state may run ahead of the answers::

    state           command sent     state once sent   after +OK        after -ERR
    GREETING        (the greeting is awaited; nothing may be sent)   AUTHORIZATION / CLOSED
    AUTHORIZATION   Capa             (unchanged)
                    Stls             STLS_SENT         TLS_HANDSHAKE    AUTHORIZATION
                    UserPass, Apop,  LOGGING_IN        TRANSACTION      AUTHORIZATION
                    Auth
                    Quit             QUITTING          CLOSED           CLOSED
    TLS_HANDSHAKE   start_tls_done() ─────────────────▶ AUTHORIZATION (capabilities forgotten)
    TRANSACTION     Capa, Stat, List, Uidl, Top, Retr, Dele, Rset, Noop   (unchanged)
                    Quit             QUITTING          CLOSED           CLOSED

:data:`TRANSITIONS` is that table, word for word; tests walk it. A command not in it for
the current state is the application's error (``LocalProtocolError``).

Owns: the POP3 client role of RFC 1939, RFC 2449 (CAPA, response codes, pipelining),
RFC 2595 (STLS), RFC 5034 (AUTH, which obsoletes RFC 1734, through ``_sasl.SaslClient``:
any mechanism name it accepts works here) and RFC 1939's USER/PASS and APOP.

Must not: open sockets, read clocks, draw random numbers, log, or keep a secret past
the exchange that needs it.

Decisions:

* Pipelining (RFC 2449 section 6.6): once the last CAPA advertised PIPELINING, any
  number of commands may be outstanding; otherwise ``send()`` refuses a second command
  before the first is answered (``LocalProtocolError``), never queues silently: the
  application sees its round trips. ``outstanding`` counts what awaits an answer.
  STLS and the logins change the state, so nothing may follow them before their
  answer (their "state once sent" accepts no command); QUIT may end a pipeline.
* USER/PASS and AUTH are each one command; the engine writes PASS and the SASL
  responses itself, collected with :meth:`ClientConnection.data_to_send` whenever
  ``next_event()`` returns ``NEED_DATA`` (as the server engine does).
* STLS is refused (``LocalProtocolError``) once TLS is active (RFC 2595 section 4).
* ``require_tls`` refuses a login in clear with a local :class:`LoginFailed`; nothing
  is written. Bytes that follow the ``+OK`` to STLS before the handshake are an
  injection (RFC 2595 section 4 and CVE-2011-0411's lesson): ``RemoteProtocolError``.
* A server that breaks the protocol (no status indicator, a malformed listing, an
  overlong line, unsolicited bytes) raises ``RemoteProtocolError`` from
  ``next_event()``; the connection is then dead and every later call raises it again.

Typical client loop (``plan`` is the application's: what to send next, given events)::

    conn = ClientConnection(POP3ClientConfig(require_tls=True))
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            write(conn.data_to_send())
            if conn.outstanding:
                conn.receive_data(read())  # b"" once the server closed
            else:
                write(conn.send(plan.next_command()))
        elif isinstance(event, StlsAccepted):
            wrap_socket(); conn.start_tls_done()
        elif isinstance(event, MessageData):
            spool.write(event.data)  # make it durable at MessageComplete, before any DELE
        elif isinstance(event, ConnectionClosed):
            close(); break
        else:
            plan.record(event)
"""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from dataclasses import dataclass, field

from nosend_proto._errors import LocalProtocolError, RemoteProtocolError
from nosend_proto._pop3_client_wire import (
    BodyDecoder,
    LineReader,
    Status,
    find_timestamp,
    parse_capabilities,
    parse_scan,
    parse_stat,
    parse_status,
    parse_uid,
    strip_line,
)
from nosend_proto._sasl import SaslClient, decode_sasl_line, encode_sasl_data
from nosend_proto._sentinels import NEED_DATA, Sentinel
from nosend_proto.pop3_client_events import (
    Apop,
    Auth,
    Capa,
    Capabilities,
    CapabilitiesReceived,
    CommandFailed,
    CommandOK,
    ConnectionClosed,
    Dele,
    Greeting,
    GreetingRefused,
    List,
    ListReply,
    LoggedIn,
    LoginFailed,
    MessageBegins,
    MessageComplete,
    MessageData,
    Noop,
    POP3ClientConfig,
    POP3ClientEvent,
    POP3Command,
    Quit,
    Retr,
    Rset,
    ScanEntry,
    SignedOff,
    Stat,
    StatReply,
    Stls,
    StlsAccepted,
    Top,
    UidEntry,
    Uidl,
    UidlReply,
    UserPass,
)

__all__ = ["ClientState", "Transition", "TRANSITIONS", "GREETING_TRANSITION", "ClientConnection"]


class ClientState(enum.Enum):
    """What a POP3 client connection may send next (see the module's table)."""

    GREETING = "GREETING"  # waiting for the server's greeting (RFC 1939 section 4)
    AUTHORIZATION = "AUTHORIZATION"  # RFC 1939 section 4
    STLS_SENT = "STLS_SENT"  # STLS outstanding (RFC 2595 section 4)
    TLS_HANDSHAKE = "TLS_HANDSHAKE"  # +OK to STLS read; the application runs TLS
    LOGGING_IN = "LOGGING_IN"  # USER/PASS, APOP or AUTH outstanding
    TRANSACTION = "TRANSACTION"  # RFC 1939 section 5
    QUITTING = "QUITTING"  # QUIT sent (RFC 1939 section 6: UPDATE if in TRANSACTION)
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the table: states entered on sending and on each answer.

    ``None`` leaves the state as it is (so pipelined answers do not move it).
    """

    sent: ClientState | None
    ok: ClientState | None
    err: ClientState | None


S = ClientState
_STAY = Transition(None, None, None)
_LOGIN = Transition(S.LOGGING_IN, S.TRANSACTION, S.AUTHORIZATION)
_QUIT = Transition(S.QUITTING, S.CLOSED, S.CLOSED)

#: (state, command) -> transition: the whole client protocol by state (RFC 1939 sections
#: 4-7, RFC 2449 section 5, RFC 2595 section 4, RFC 5034 section 4).
TRANSITIONS: dict[tuple[ClientState, type], Transition] = {
    (S.AUTHORIZATION, Capa): _STAY,
    (S.AUTHORIZATION, Stls): Transition(S.STLS_SENT, S.TLS_HANDSHAKE, S.AUTHORIZATION),
    (S.AUTHORIZATION, UserPass): _LOGIN,
    (S.AUTHORIZATION, Apop): _LOGIN,
    (S.AUTHORIZATION, Auth): _LOGIN,
    (S.AUTHORIZATION, Quit): _QUIT,
    (S.TRANSACTION, Capa): _STAY,
    (S.TRANSACTION, Stat): _STAY,
    (S.TRANSACTION, List): _STAY,
    (S.TRANSACTION, Uidl): _STAY,
    (S.TRANSACTION, Top): _STAY,
    (S.TRANSACTION, Retr): _STAY,
    (S.TRANSACTION, Dele): _STAY,
    (S.TRANSACTION, Rset): _STAY,
    (S.TRANSACTION, Noop): _STAY,
    (S.TRANSACTION, Quit): _QUIT,
}

#: The greeting is answered like a command nobody sent (RFC 1939 section 4).
GREETING_TRANSITION = Transition(None, S.AUTHORIZATION, S.CLOSED)


class _Phase(enum.Enum):
    STATUS = "STATUS"  # the status line is awaited
    PASS = "PASS"  # USER accepted, PASS sent: its status line is awaited
    LINES = "LINES"  # a multi-line listing is being read
    BODY = "BODY"  # a RETR/TOP body is streaming


@dataclass(slots=True)
class _Pending:
    """One outstanding command and how far its answer has been read."""

    command: POP3Command | None  # None: the greeting
    transition: Transition
    updating: bool = False  # QUIT sent in TRANSACTION: its answer is the UPDATE result
    phase: _Phase = _Phase.STATUS
    lines: list[bytes] = field(default_factory=list)  # CAPA lines
    scan: list[ScanEntry] = field(default_factory=list)  # LIST entries
    uids: list[UidEntry] = field(default_factory=list)  # UIDL entries
    truncated: bool = False
    decoder: BodyDecoder | None = None
    password: str | None = None  # USER/PASS: kept until PASS is written
    sasl: SaslClient | None = None
    sasl_steps: int = 0
    sasl_initial: bytes | None = None  # an initial response too long for the AUTH line
    local: POP3ClientEvent | None = None  # decided without the server (require_tls)


def _method(command: POP3Command | None) -> str:
    if isinstance(command, UserPass):
        return "USER"
    if isinstance(command, Apop):
        return "APOP"
    if isinstance(command, Auth):
        return command.mechanism.upper()
    return ""


# The keyword of each command without special arguments (RFC 1939 sections 5 and 7,
# RFC 2449 section 5, RFC 2595 section 4).
_KEYWORDS: dict[type, str] = {
    Capa: "CAPA",
    Stls: "STLS",
    Stat: "STAT",
    Retr: "RETR",
    Dele: "DELE",
    Rset: "RSET",
    Noop: "NOOP",
    Quit: "QUIT",
}

# RFC 2449 section 4: a command line is at most 255 octets including CRLF.
_MAX_COMMAND = 255


def _line(text: str) -> bytes:
    data = text.encode() + b"\r\n"
    if len(data) > _MAX_COMMAND:
        raise LocalProtocolError("command longer than 255 octets (RFC 2449 section 4)")
    return data


class ClientConnection:
    """One POP3 client connection, from the server's greeting to close, without I/O.

    Contract (after h11): :meth:`receive_data` takes the server's bytes (``b""``: it
    closed), :meth:`next_event` returns the next event or ``NEED_DATA``, :meth:`send`
    turns a command into bytes to write, :meth:`data_to_send` hands over what the engine
    wrote by itself (PASS, SASL responses).
    """

    def __init__(self, config: POP3ClientConfig | None = None) -> None:
        self.config = config or POP3ClientConfig()
        self._state = S.GREETING
        self._tls_active = self.config.tls_active
        self._capabilities = Capabilities()
        self._timestamp: str | None = None
        self._buf = LineReader()
        self._out = bytearray()
        self._pending: deque[_Pending] = deque([_Pending(None, GREETING_TRANSITION)])
        self._eof = False
        self._injected = False
        self._error: RemoteProtocolError | None = None
        self._closed: ConnectionClosed | None = None

    # -- read-only facts ---------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        """What may be sent next (see :data:`TRANSITIONS`)."""
        return self._state

    @property
    def tls_active(self) -> bool:
        """True once the connection runs over TLS (from the start, or after STLS)."""
        return self._tls_active

    @property
    def capabilities(self) -> Capabilities:
        """The last CAPA answer (``advertised=False`` before one, and after STLS)."""
        return self._capabilities

    @property
    def pipelining(self) -> bool:
        """True when several commands may be outstanding (RFC 2449 section 6.6)."""
        return self._capabilities.pipelining

    @property
    def timestamp(self) -> str | None:
        """The greeting's APOP timestamp (RFC 1939 section 7), once greeted."""
        return self._timestamp

    @property
    def outstanding(self) -> int:
        """Commands sent (the greeting counts, before it arrives) not fully answered."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Octets received and not yet turned into events (bounded: see the config)."""
        return len(self._buf)

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the server; ``b""`` means it closed."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after the peer closed")
            return
        if not data:
            self._eof = True
            return
        if self._state is S.CLOSED:
            return  # the session is over; nothing more is read
        if self._state is S.TLS_HANDSHAKE:
            # RFC 2595 section 4: nothing may come in clear between +OK and the handshake.
            self._injected = True
        self._buf.feed(data)

    def next_event(self) -> POP3ClientEvent | Sentinel:
        """Process buffered input up to the next event, or return ``NEED_DATA``."""
        if self._error is not None:
            raise self._error
        if self._closed is not None:
            return self._closed
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: RemoteProtocolError) -> None:
        self._error = exc
        self._state = S.CLOSED
        self._pending.clear()
        self._buf.take_all()
        self._out.clear()

    # -- output --------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Return (and forget) what the engine wrote by itself: PASS, SASL responses."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def send(self, command: POP3Command) -> bytes:
        """Turn ``command`` into the bytes to write (pending engine bytes first)."""
        if self._error is not None:
            raise LocalProtocolError("the connection failed; close it")
        transition = TRANSITIONS.get((self._state, type(command)))
        if transition is None:
            raise LocalProtocolError(
                f"{type(command).__name__} is not valid in state {self._state.value}"
            )
        if isinstance(command, Stls) and self._tls_active:
            raise LocalProtocolError("TLS is already active")  # RFC 2595 section 4
        if self._pending and not self.pipelining:
            raise LocalProtocolError(
                "the server did not advertise PIPELINING: wait for the answer first"
            )
        pending = _Pending(command, transition, updating=self._state is S.TRANSACTION)
        if isinstance(command, UserPass | Apop | Auth) and self.config.require_tls:
            if not self._tls_active:
                # Delivered in turn, after the answers to commands sent before it.
                pending.local = LoginFailed(
                    _method(command),
                    "refused locally: TLS required and not active"
                    + ("" if self._capabilities.stls else " (server offers no STLS)"),
                    None,
                    tls_required=True,
                )
                self._pending.append(pending)
                return self.data_to_send()
        data = self._command_bytes(command, pending)
        self._pending.append(pending)
        if transition.sent is not None:
            self._state = transition.sent
        return self.data_to_send() + data

    def start_tls_done(self) -> None:
        """The TLS handshake after STLS succeeded: AUTHORIZATION again, over TLS.

        Raises ``RemoteProtocolError`` if the server sent anything in clear after its
        ``+OK`` (RFC 2595 section 4: it would be read as if it came under TLS).
        """
        if self._state is not S.TLS_HANDSHAKE:
            raise LocalProtocolError("start_tls_done() without an accepted STLS")
        if self._injected or len(self._buf):
            exc = RemoteProtocolError("server sent data after +OK to STLS, before TLS")
            self._fail(exc)
            raise exc
        self._tls_active = True
        # RFC 2595 section 4: discard what CAPA said in clear; ask again.
        self._capabilities = Capabilities()
        self._state = S.AUTHORIZATION

    # -- internals: commands -------------------------------------------------------------

    def _command_bytes(self, command: POP3Command, pending: _Pending) -> bytes:
        if isinstance(command, UserPass):
            pending.password = command.password
            _line(f"PASS {command.password}")  # refuse an overlong PASS before USER goes
            return _line(f"USER {command.username}")
        if isinstance(command, Apop):
            if self._timestamp is None:
                raise LocalProtocolError("the greeting carried no APOP timestamp")
            # RFC 1939 section 7: MD5 over the timestamp followed by the shared secret.
            digest = hashlib.md5((self._timestamp + command.secret).encode()).hexdigest()
            return _line(f"APOP {command.username} {digest}")
        if isinstance(command, Auth):
            return self._auth_bytes(command, pending)
        if isinstance(command, List | Uidl):
            name = "LIST" if isinstance(command, List) else "UIDL"
            return _line(name if command.msgno is None else f"{name} {command.msgno}")
        if isinstance(command, Top):
            return _line(f"TOP {command.msgno} {command.lines}")
        if isinstance(command, Retr | Dele):
            return _line(f"{_KEYWORDS[type(command)]} {command.msgno}")
        return _line(_KEYWORDS[type(command)])

    def _auth_bytes(self, command: Auth, pending: _Pending) -> bytes:
        try:
            sasl = SaslClient(command.mechanism, command.username, command.secret, command.authzid)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
        pending.sasl = sasl
        mechanism = command.mechanism.upper()
        initial = sasl.initial_response()
        if initial is None:
            return _line(f"AUTH {mechanism}")
        # RFC 5034 section 4: "=" is an empty initial response. One that would make the
        # line longer than 255 octets is not sent; it answers the first (empty)
        # challenge instead (RFC 4422 section 5.1).
        encoded = encode_sasl_data(initial).decode() or "="
        line = f"AUTH {mechanism} {encoded}\r\n".encode()
        if len(line) <= _MAX_COMMAND:
            return line
        pending.sasl_initial = initial
        return _line(f"AUTH {mechanism}")

    # -- internals: answers --------------------------------------------------------------

    def _next_event(self) -> POP3ClientEvent | Sentinel:
        while True:
            if self._state is S.TLS_HANDSHAKE and (self._injected or len(self._buf)):
                raise RemoteProtocolError("server sent data after +OK to STLS, before TLS")
            if not self._pending:
                if len(self._buf):
                    raise RemoteProtocolError("server sent data nobody asked for")
                if self._eof:
                    return self._close(expected=False)
                return NEED_DATA
            head = self._pending[0]
            if head.local is not None:
                self._pending.popleft()
                return head.local
            event: POP3ClientEvent | Sentinel | None
            if head.phase is _Phase.BODY:
                event = self._body(head)
            else:
                limit = self.config.max_line if head.sasl is None else self.config.max_sasl_line
                line = self._buf.next_line(limit)
                if line is None:
                    if self._eof:
                        return self._close(expected=False)
                    return NEED_DATA
                if head.phase is _Phase.LINES:
                    event = self._listing_line(head, line)
                else:
                    event = self._status(head, line)
            if event is not None:
                return event

    def _close(self, *, expected: bool) -> ConnectionClosed:
        self._closed = ConnectionClosed(expected, len(self._pending))
        self._pending.clear()
        self._state = S.CLOSED
        self._buf.take_all()
        return self._closed

    def _finish(self, pending: _Pending, ok: bool) -> None:
        """The answer to ``pending`` is complete: dequeue it and move the state."""
        self._pending.popleft()
        target = pending.transition.ok if ok else pending.transition.err
        if target is not None:
            self._state = target

    def _status(self, head: _Pending, line: bytes) -> POP3ClientEvent | None:
        command = head.command
        if head.sasl is not None and line[:1] == b"+" and line[:3] != b"+OK":
            self._sasl_challenge(head, line)
            return None
        status = parse_status(line)
        if command is None:
            return self._greeting(head, status)
        if not status.ok:
            return self._failed(head, status)
        if isinstance(command, UserPass) and head.phase is _Phase.STATUS:
            # RFC 1939 section 7: USER accepted; PASS follows at once.
            assert head.password is not None
            self._out += _line(f"PASS {head.password}")
            head.password = None
            head.phase = _Phase.PASS
            return None
        multi = isinstance(command, List | Uidl) and command.msgno is None
        if isinstance(command, Capa) or multi:
            head.phase = _Phase.LINES
            return None
        if isinstance(command, Retr | Top):
            head.phase = _Phase.BODY
            head.decoder = BodyDecoder()
            return MessageBegins(command, status.text)
        self._finish(head, True)
        if isinstance(command, UserPass | Apop | Auth):
            head.sasl = None
            return LoggedIn(_method(command), status.text)
        if isinstance(command, Stls):
            if len(self._buf):
                raise RemoteProtocolError("server sent data after +OK to STLS, before TLS")
            return StlsAccepted(status.text)
        if isinstance(command, Quit):
            return self._signed_off(head, status)
        if isinstance(command, Stat):
            count, octets = parse_stat(status.text)
            return StatReply(count, octets)
        if isinstance(command, List):
            return ListReply(command, (parse_scan(status.text.encode()),))
        if isinstance(command, Uidl):
            return UidlReply(command, (parse_uid(status.text.encode()),))
        return CommandOK(command, status.text)

    def _greeting(self, head: _Pending, status: Status) -> POP3ClientEvent:
        self._finish(head, status.ok)
        if not status.ok:
            self._closed = ConnectionClosed(expected=True)
            return GreetingRefused(status.text, status.code)
        self._timestamp = find_timestamp(status.text)
        return Greeting(status.text, self._timestamp)

    def _failed(self, head: _Pending, status: Status) -> POP3ClientEvent:
        command = head.command
        assert command is not None
        self._finish(head, False)
        head.password = None
        head.sasl = None
        if isinstance(command, UserPass | Apop | Auth):
            return LoginFailed(_method(command), status.text, status.code)
        if isinstance(command, Capa):
            self._capabilities = Capabilities()  # an RFC 1939-only server: nothing known
            return CapabilitiesReceived(self._capabilities)
        if isinstance(command, Quit):
            return self._signed_off(head, status)
        return CommandFailed(command, status.text, status.code)

    def _signed_off(self, head: _Pending, status: Status) -> SignedOff:
        self._closed = ConnectionClosed(expected=True, outstanding=len(self._pending))
        self._pending.clear()
        self._buf.take_all()
        return SignedOff(status.ok, head.updating, status.text, status.code)

    def _sasl_challenge(self, head: _Pending, line: bytes) -> None:
        # RFC 5034 section 4: "+" SP base64 challenge (the space is optional when empty).
        sasl = head.sasl
        assert sasl is not None
        raw = strip_line(line)[1:]
        head.sasl_steps += 1
        decoded = decode_sasl_line(raw[1:] if raw[:1] == b" " else raw) if raw.strip() else b""
        if not isinstance(decoded, bytes) or head.sasl_steps > self.config.max_sasl_steps:
            # A challenge we cannot read, or an exchange that does not end: cancel; the
            # server answers -ERR (RFC 5034 section 4), which becomes LoginFailed.
            self._out += b"*\r\n"
            return None
        if head.sasl_initial is not None:
            response, head.sasl_initial = head.sasl_initial, None
        else:
            try:
                response = sasl.respond(decoded)
            except ValueError:
                self._out += b"*\r\n"
                return None
        self._out += encode_sasl_data(response) + b"\r\n"
        return None

    def _listing_line(self, head: _Pending, line: bytes) -> POP3ClientEvent | None:
        raw = strip_line(line)
        command = head.command
        if raw == b".":
            self._finish(head, True)
            if isinstance(command, Capa):
                self._capabilities = parse_capabilities(head.lines)
                return CapabilitiesReceived(self._capabilities)
            if isinstance(command, List):
                return ListReply(command, tuple(head.scan), head.truncated)
            assert isinstance(command, Uidl)
            return UidlReply(command, tuple(head.uids), head.truncated)
        if raw.startswith(b"."):
            raw = raw[1:]  # RFC 1939 section 3: byte-stuffed
        # Each line is checked as it arrives, even past the cap: a bad one fails at once.
        if isinstance(command, Capa):
            if len(head.lines) < self.config.max_capabilities:
                head.lines.append(raw)
            else:
                head.truncated = True
        elif isinstance(command, List):
            entry = parse_scan(raw)
            if len(head.scan) < self.config.max_listing_entries:
                head.scan.append(entry)
            else:
                head.truncated = True  # read and dropped: memory stays bounded
        else:
            uid = parse_uid(raw)
            if len(head.uids) < self.config.max_listing_entries:
                head.uids.append(uid)
            else:
                head.truncated = True
        return None

    def _body(self, head: _Pending) -> POP3ClientEvent | Sentinel | None:
        decoder = head.decoder
        command = head.command
        assert decoder is not None and isinstance(command, Retr | Top)
        if decoder.done:
            self._finish(head, True)
            return MessageComplete(command)
        if not len(self._buf):
            return self._close(expected=False) if self._eof else NEED_DATA
        raw = self._buf.take_all()
        data, used = decoder.feed(raw)
        # Put back what followed the terminator: the answers to pipelined commands.
        self._buf.unread(raw[used:])
        return MessageData(data) if data else None
