"""The POP3 server engine: state table and :class:`ServerConnection` (sans-IO).

Owns: the POP3 server role of RFC 1939 (AUTHORIZATION, TRANSACTION, UPDATE), RFC 2449
(CAPA, response codes, pipelining, line limits), RFC 2595 (STLS), RFC 5034 (AUTH, with the
shared SASL framing of ``_sasl``), RFC 6856 (UTF8) and RFC 1957's lessons. It answers
what it can from the maildrop listing the application supplied and asks the application,
through events, for credentials checks, message content and the deletions at QUIT.

Must not: read files, sockets or clocks, draw random numbers, or decide policy (who may
log in, which messages exist): those are the application's.

Read :mod:`nosend_proto.pop3_events` first: it explains the state machine and the values.
The tables below are the whole protocol grammar by state; tests check the engine against
them.

Typical runner loop::

    conn = ServerConnection(config, nonce=secrets.token_hex(8))
    write(conn.send(Greeting()))
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            write(conn.data_to_send()); conn.receive_data(read())
        elif event is NEED_FLUSH:
            write(conn.data_to_send())
        elif isinstance(event, AuthAttempt):
            write(conn.send(LoginAccepted(listing) if ok else LoginRejected()))
        elif isinstance(event, Retrieve | Top):
            for chunk in open_message(event.message):
                write(conn.send(MessageChunk(chunk)))
                if not conn.wants_content: break
            write(conn.send(MessageEnd()))
        elif isinstance(event, Quit):
            apply(event.messages); write(conn.send(UpdateApplied()))
        elif isinstance(event, StartTLS):
            write(conn.send(TLSReady())); start_tls()
        else:  # ConnectionClosed, TooManyErrors
            write(conn.data_to_send()); close(); break
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable

from nosend_proto._errors import LocalProtocolError
from nosend_proto._pop3_stuffing import MessageEncoder, WireSizeCounter, wire_size
from nosend_proto._receivebuffer import OVERLONG, ReceiveBuffer
from nosend_proto._sasl import (
    Credentials,
    SaslChallenge,
    SaslFailure,
    SaslServer,
    SaslStep,
    SaslSuccess,
    decode_sasl_line,
    encode_sasl_data,
)
from nosend_proto.pop3_events import (
    NEED_DATA,
    NEED_FLUSH,
    AuthAttempt,
    ConnectionClosed,
    Greeting,
    GreetingRefused,
    LoginAccepted,
    LoginRejected,
    MessageChunk,
    MessageEnd,
    MessageInfo,
    MessageUnavailable,
    POP3Answer,
    POP3Event,
    POP3ServerConfig,
    Quit,
    Retrieve,
    Sentinel,
    StartTLS,
    TLSReady,
    TLSRefused,
    TooManyErrors,
    Top,
    UpdateApplied,
    UpdateFailed,
)

__all__ = [
    "POP3State",
    "COMMANDS",
    "ANSWERS",
    "KNOWN_COMMANDS",
    "CLEARTEXT_MECHANISMS",
    "ServerConnection",
    "WireSizeCounter",
    "wire_size",
]


class POP3State(enum.Enum):
    """Where a POP3 server connection is (RFC 1939 section 3, plus waits for the application)."""

    GREETING = "GREETING"  # waiting for the application's Greeting
    AUTHORIZATION = "AUTHORIZATION"  # RFC 1939 section 4
    SASL = "SASL"  # inside an AUTH exchange (RFC 5034 section 4)
    AWAIT_LOGIN = "AWAIT_LOGIN"  # AuthAttempt emitted
    AWAIT_TLS = "AWAIT_TLS"  # StartTLS emitted
    TRANSACTION = "TRANSACTION"  # RFC 1939 section 5
    SENDING = "SENDING"  # Retrieve/Top emitted, content streaming
    UPDATE = "UPDATE"  # RFC 1939 section 6: Quit emitted
    CLOSED = "CLOSED"


S = POP3State

#: Commands each reading state accepts (RFC 1939 sections 4-7, RFC 2449 section 5,
#: RFC 2595 section 4, RFC 5034 section 4, RFC 6856 section 2). Any other known command
#: gets "-ERR ... not valid in this state"; an unknown one "-ERR unknown command".
COMMANDS: dict[POP3State, frozenset[str]] = {
    S.AUTHORIZATION: frozenset({"USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "UTF8", "QUIT"}),
    S.TRANSACTION: frozenset(
        {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "CAPA", "QUIT"}
    ),
}

#: Every command keyword the engine knows.
KNOWN_COMMANDS: frozenset[str] = COMMANDS[S.AUTHORIZATION] | COMMANDS[S.TRANSACTION]

#: The answers ``send()`` takes in each waiting state; anything else is the application's
#: error (``LocalProtocolError``).
ANSWERS: dict[POP3State, tuple[type, ...]] = {
    S.GREETING: (Greeting, GreetingRefused),
    S.AWAIT_LOGIN: (LoginAccepted, LoginRejected),
    S.AWAIT_TLS: (TLSReady, TLSRefused),
    S.SENDING: (MessageChunk, MessageEnd, MessageUnavailable),
    S.UPDATE: (UpdateApplied, UpdateFailed),
}

#: SASL mechanisms that reveal the password, refused before TLS when the configuration
#: says so (RFC 2595 section 2.3: clear-text passwords only under TLS by default).
CLEARTEXT_MECHANISMS: frozenset[str] = frozenset({"PLAIN", "LOGIN"})

_NONCE_RE = re.compile(r"[\x21-\x3b\x3d\x3f\x41-\x7e]{1,200}")  # printable, no < > @
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_HEX32_RE = re.compile(r"[0-9A-Fa-f]{32}")
_MAX_RESPONSE = 512
_MAX_NUMBER_DIGITS = 9  # message numbers and TOP line counts: no huge int parsing

_Handler = Callable[["ServerConnection", list[str], str], "POP3Event | None"]


def _code(code: str | None) -> str:
    return f"[{code}] " if code else ""


def _status_line(text: str) -> bytes:
    line = f"{text}\r\n".encode()
    if len(line) > _MAX_RESPONSE:
        # RFC 2449 section 4: a response line is at most 512 octets including CRLF.
        raise LocalProtocolError("reply text too long for one POP3 response line")
    return line


class ServerConnection:
    """One POP3 server connection, from greeting to close, without I/O.

    ``nonce`` is a per-connection random string the application draws (printable ASCII
    without ``<``, ``>`` or ``@``); the greeting's APOP timestamp is ``<nonce@hostname>``
    (RFC 1939 section 7) and each CRAM-MD5 challenge is ``<n.nonce@hostname>``.

    Contract (after h11): :meth:`receive_data` takes bytes (``b""``: the peer closed),
    :meth:`next_event` returns the next event, ``NEED_DATA`` or ``NEED_FLUSH``,
    :meth:`send` turns the application's answer into bytes (pending engine replies
    first), and :meth:`data_to_send` hands over the replies the engine produced itself.

    Flushing, as in the SMTP engine (RFC 2449 section 6.6): the runner may hold reply
    bytes and write them together, and must write what it holds whenever
    ``next_event()`` returns ``NEED_DATA`` and whenever ``should_flush`` is true after a
    ``send()``. What differs, and why: most POP3 commands (STAT, LIST, UIDL, DELE, NOOP,
    CAPA, errors) are answered by the engine without an event, so the engine holds those
    replies itself (``data_to_send()``; ``send()`` puts them in front of its own result),
    and since a pipelining client may ask for any number of them, ``next_event()``
    returns ``NEED_FLUSH`` once they pass ``max_output_buffer``: write, then go on
    without reading. The SMTP engine needs neither, as every SMTP reply is the
    application's own ``send()`` result.
    """

    def __init__(self, config: POP3ServerConfig, *, nonce: str) -> None:
        if not _NONCE_RE.fullmatch(nonce):
            raise LocalProtocolError("nonce must be 1-200 printable characters without <>@")
        self.config = config
        #: The APOP timestamp of the greeting (RFC 1939 section 7).
        self.timestamp = f"<{nonce}@{config.hostname}>"
        self._nonce = nonce
        self._state = S.GREETING
        self._buf = ReceiveBuffer(config.max_command_line)
        self._out = bytearray()
        self._eof = False
        self._final: POP3Event | None = None  # returned by the next next_event()
        self._closed_event: ConnectionClosed = ConnectionClosed()
        self._tls_active = config.tls_active
        self._utf8 = False
        self._user: str | None = None  # name given by USER, waiting for PASS
        self._sasl: SaslServer | None = None
        self._sasl_count = 0
        self._errors = 0
        self._auth_failures = 0
        self._username: str | None = None
        self._messages: tuple[MessageInfo, ...] = ()
        self._user_expire: str | None = None
        self._user_login_delay: int | None = None
        self._deleted: set[int] = set()  # 0-based indexes marked by DELE
        self._encoder: MessageEncoder | None = None
        self._status_line = b""  # RETR/TOP +OK line, sent with the first content

    # -- read-only facts for the application --------------------------------------------

    @property
    def state(self) -> POP3State:
        """The current state (see :class:`POP3State`)."""
        return self._state

    @property
    def tls_active(self) -> bool:
        """True once the connection runs over TLS (from the start, or after STLS)."""
        return self._tls_active

    @property
    def utf8_enabled(self) -> bool:
        """True after the client issued UTF8 (RFC 6856 section 2)."""
        return self._utf8

    @property
    def errors(self) -> int:
        """How many commands were answered with ``-ERR`` for the client's mistake."""
        return self._errors

    @property
    def auth_failures(self) -> int:
        """How many logins failed (a runner may delay each answer, RFC 1939 section 4)."""
        return self._auth_failures

    @property
    def username(self) -> str | None:
        """The user logged in, once TRANSACTION is reached."""
        return self._username

    @property
    def wants_content(self) -> bool:
        """While RETR/TOP streams: false once TOP has all the lines it needs."""
        return self._state is S.SENDING and self._encoder is not None and not self._encoder.done

    @property
    def should_flush(self) -> bool:
        """True when no complete command waits in the receive buffer.

        A runner that coalesces what ``send()`` returns may hold it while this is false
        (more pipelined commands will be answered right away) and must write it when it
        turns true (RFC 2449 section 6.6: the client may be waiting for these replies).
        The SMTP engine's ``should_flush`` means the same. The line found stays in the
        receive buffer for the next ``next_event()`` (and STLS drops it with the rest).
        """
        return self._state is S.CLOSED or not self._buf.has_line()

    def is_deleted(self, msgno: int) -> bool:
        """True when message ``msgno`` (1-based) is marked deleted in this session."""
        return msgno - 1 in self._deleted

    def deleted_msgnos(self) -> tuple[int, ...]:
        """Message numbers currently marked deleted (ascending)."""
        return tuple(sorted(i + 1 for i in self._deleted))

    # -- input -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the client; ``b""`` means the client closed."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after the peer closed")
            return
        if not data:
            self._eof = True
            return
        if self._state is S.CLOSED:
            return  # nothing more will be read; do not hold it
        self._buf.feed(data)

    def next_event(self) -> POP3Event | Sentinel:
        """Process buffered input up to the next event; or ``NEED_DATA`` / ``NEED_FLUSH``."""
        final = self._final
        if final is not None:
            self._final = None
            return final
        if self._state is S.CLOSED:
            return self._closed_event
        if self._state in ANSWERS:
            raise LocalProtocolError(
                f"answer the pending event first ({self._state.value}) before next_event()"
            )
        while True:
            if len(self._out) >= self.config.max_output_buffer:
                return NEED_FLUSH
            line = self._buf.next_line()
            if line is None:
                if self._eof:
                    return self._close(peer_closed=True)
                return NEED_DATA
            event = self._handle_line(line)
            if event is not None:
                return event
            if self._state in ANSWERS:  # pragma: no cover - handlers always return an event
                raise AssertionError("waiting state entered without an event")

    # -- output ----------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Return (and forget) the replies the engine produced by itself so far."""
        if not self._out:
            return b""
        data = bytes(self._out)
        self._out.clear()
        return data

    def send(self, answer: POP3Answer) -> bytes:
        """Turn the application's answer into bytes; pending engine replies come first."""
        allowed = ANSWERS.get(self._state, ())
        if not isinstance(answer, allowed):
            raise LocalProtocolError(
                f"{type(answer).__name__} is not a valid answer in state {self._state.value}"
            )
        body = self._answer(answer)
        if self._out:
            body = self.data_to_send() + body
        return body

    # -- internals: answers ----------------------------------------------------------

    def _answer(self, answer: POP3Answer) -> bytes:
        # Each branch builds its reply before changing any state: an answer refused
        # with LocalProtocolError (say, a reason too long) leaves the engine as it was.
        if isinstance(answer, MessageChunk):
            encoder = self._encoder
            assert encoder is not None
            data = encoder.feed(answer.data)
            if self._status_line:
                data = self._status_line + data
                self._status_line = b""
            return data
        if isinstance(answer, MessageEnd):
            encoder = self._encoder
            assert encoder is not None
            data = self._status_line + encoder.finish()
            self._status_line = b""
            self._encoder = None
            self._state = S.TRANSACTION
            return data
        if isinstance(answer, MessageUnavailable):
            if not self._status_line:
                raise LocalProtocolError("MessageUnavailable after content was sent: close")
            reply = self._err(answer.reason, answer.code)
            self._status_line = b""
            self._encoder = None
            self._state = S.TRANSACTION
            return reply
        if isinstance(answer, Greeting):
            stamp = f" {self.timestamp}" if self.config.apop_enabled else ""
            reply = self._ok(f"{answer.text}{stamp}")
            self._state = S.AUTHORIZATION
            return reply
        if isinstance(answer, LoginAccepted):
            count = len(answer.messages)
            octets = sum(m.size_octets for m in answer.messages)
            reply = self._ok(f"maildrop has {count} message{'s' * (count != 1)} ({octets} octets)")
            self._messages = answer.messages
            self._user_expire = answer.expire
            self._user_login_delay = answer.login_delay
            self._deleted = set()
            self._state = S.TRANSACTION
            return reply
        if isinstance(answer, LoginRejected):
            reply = self._err(answer.reason, answer.code)
            self._username = None
            self._state = S.AUTHORIZATION
            if answer.code in (None, "AUTH"):
                self._auth_failures += 1
                if self._auth_failures >= self.config.max_auth_failures:
                    self._final = self._too_many("too many authentication failures")
            return reply
        if isinstance(answer, TLSReady):
            # RFC 2595 section 4: whatever the client pipelined after STLS is discarded,
            # and the session restarts its AUTHORIZATION state over TLS.
            self._buf.clear()
            self._tls_active = True
            self._state = S.AUTHORIZATION
            return b"+OK Begin TLS negotiation\r\n"
        if isinstance(answer, UpdateApplied):
            left = len(self._messages) - len(self._deleted)
            note = "maildrop empty" if left == 0 else f"{left} message{'s' * (left != 1)} left"
            reply = self._ok(f"{self.config.hostname} POP3 server signing off ({note})")
            self._state = S.CLOSED
            return reply
        if isinstance(answer, GreetingRefused | TLSRefused | UpdateFailed):
            reply = self._err(answer.reason, answer.code)
            # A refused greeting or a finished UPDATE ends the session; a refused STLS
            # goes back to AUTHORIZATION (RFC 2595 section 4).
            self._state = S.AUTHORIZATION if isinstance(answer, TLSRefused) else S.CLOSED
            return reply
        raise LocalProtocolError(f"unknown answer {answer!r}")  # pragma: no cover

    # -- internals: commands ---------------------------------------------------------

    def _handle_line(self, line: bytes | object) -> POP3Event | None:
        if self._state is S.SASL:
            return self._sasl_line(line)
        # RFC 1939 section 7: PASS must directly follow USER; anything else forgets it.
        user, self._user = self._user, None
        if line is OVERLONG:
            # RFC 2449 section 4: command lines are at most 255 octets including CRLF.
            return self._error("command line too long")
        assert isinstance(line, bytes)
        raw = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._error("command is not valid UTF-8")
        if _CONTROL_RE.search(text):
            return self._error("control characters in command")
        # RFC 1939 section 3: a keyword, then arguments separated by single spaces
        # (runs of spaces are tolerated; other whitespace is part of an argument).
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        if keyword not in COMMANDS[self._state]:
            if keyword in KNOWN_COMMANDS:
                return self._error(f"{keyword} not valid in the {self._state.value} state")
            return self._error("unknown command")
        if keyword == "PASS":
            self._user = user
        args = [arg for arg in rest.split(" ") if arg]
        return _HANDLERS[keyword](self, args, rest)

    # AUTHORIZATION state (RFC 1939 section 4 and 7, RFC 2449, RFC 2595, RFC 5034)

    def _cleartext_allowed(self) -> bool:
        return self._tls_active or not self.config.auth_requires_tls

    def _cmd_user(self, args: list[str], rest: str) -> POP3Event | None:
        if not self.config.user_allowed:
            return self._error("USER/PASS not available; use AUTH or APOP")
        if not self._cleartext_allowed():
            return self._error("[AUTH] plaintext authentication disallowed without TLS")
        if len(args) != 1:
            return self._error("usage: USER name")
        self._user = args[0]
        self._queue_ok("send PASS")
        return None

    def _cmd_pass(self, args: list[str], rest: str) -> POP3Event | None:
        user, self._user = self._user, None
        if user is None:
            return self._error("USER first")
        if not rest:
            return self._error("usage: PASS password")
        # RFC 1939 section 7 allows spaces in the password: the whole rest is the secret.
        return self._attempt(Credentials("USER", user, password=rest))

    def _cmd_apop(self, args: list[str], rest: str) -> POP3Event | None:
        if not self.config.apop_enabled:
            return self._error("APOP not available")
        if len(args) != 2 or not _HEX32_RE.fullmatch(args[1]):
            return self._error("usage: APOP name digest")
        return self._attempt(
            Credentials(
                "APOP",
                args[0],
                challenge=self.timestamp.encode(),
                digest=args[1].lower(),
            )
        )

    def _mechanisms(self) -> tuple[str, ...]:
        allowed = self._cleartext_allowed()
        return tuple(
            m for m in self.config.sasl_mechanisms if allowed or m not in CLEARTEXT_MECHANISMS
        )

    def _cmd_auth(self, args: list[str], rest: str) -> POP3Event | None:
        if not args:
            # Not in RFC 5034, but clients still probe with a bare AUTH (as Dovecot and
            # Cyrus answer it): list the mechanisms like CAPA's SASL line.
            self._queue_multiline("list of SASL mechanisms follows", self._mechanisms())
            return None
        if len(args) > 2:
            return self._error("usage: AUTH mechanism [initial-response]")
        mechanism = args[0].upper()
        if mechanism not in self.config.sasl_mechanisms:
            return self._error("unsupported authentication mechanism")
        if mechanism not in self._mechanisms():
            return self._error("[AUTH] plaintext authentication disallowed without TLS")
        initial: bytes | None = None
        if len(args) == 2:
            # RFC 5034 section 4: "=" is an empty initial response, "*" cancels.
            decoded = decode_sasl_line(args[1].encode())
            if isinstance(decoded, SaslFailure):
                return self._sasl_failed(decoded)
            initial = decoded
        self._sasl_count += 1
        challenge = f"<{self._sasl_count}.{self._nonce}@{self.config.hostname}>".encode()
        self._sasl = SaslServer(mechanism, initial, challenge)
        return self._sasl_step(self._sasl.start())

    def _sasl_line(self, line: bytes | object) -> POP3Event | None:
        sasl = self._sasl
        assert sasl is not None
        if line is OVERLONG:
            return self._sasl_failed(SaslFailure("SASL response too long"))
        assert isinstance(line, bytes)
        raw = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        decoded = decode_sasl_line(raw)
        if isinstance(decoded, SaslFailure):
            return self._sasl_failed(decoded)
        return self._sasl_step(sasl.respond(decoded))

    def _sasl_step(self, step: SaslStep) -> POP3Event | None:
        if isinstance(step, SaslChallenge):
            # RFC 5034 section 4: "+" SP base64 challenge; the response may be long.
            self._state = S.SASL
            self._buf.max_line = self.config.max_sasl_line
            self._out += b"+ " + encode_sasl_data(step.data) + b"\r\n"
            return None
        if isinstance(step, SaslFailure):
            return self._sasl_failed(step)
        assert isinstance(step, SaslSuccess)
        self._end_sasl()
        return self._attempt(step.credentials)

    def _end_sasl(self) -> None:
        self._sasl = None
        self._buf.max_line = self.config.max_command_line
        self._state = S.AUTHORIZATION

    def _sasl_failed(self, failure: SaslFailure) -> POP3Event | None:
        self._end_sasl()
        if failure.cancelled:
            # RFC 5034 section 4: a cancelled exchange is rejected with -ERR.
            return self._error("[AUTH] authentication cancelled")
        return self._error(f"[AUTH] {failure.reason}", auth=True)

    def _attempt(self, credentials: Credentials) -> POP3Event:
        self._state = S.AWAIT_LOGIN
        self._username = credentials.username
        return AuthAttempt(credentials)

    def _cmd_stls(self, args: list[str], rest: str) -> POP3Event | None:
        if args:
            return self._error("usage: STLS")
        if self._tls_active:
            return self._error("command not permitted when TLS active")  # RFC 2595 s4
        if not self.config.tls_available:
            return self._error("STLS not available")
        self._state = S.AWAIT_TLS
        return StartTLS()

    def _cmd_utf8(self, args: list[str], rest: str) -> POP3Event | None:
        if not self.config.utf8:
            return self._error("unknown command")
        if args:
            return self._error("usage: UTF8")
        self._utf8 = True  # RFC 6856 section 2
        self._queue_ok("UTF8 enabled")
        return None

    def _cmd_capa(self, args: list[str], rest: str) -> POP3Event | None:
        if args:
            return self._error("usage: CAPA")
        self._queue_multiline("Capability list follows", self._capabilities())
        return None

    def _capabilities(self) -> list[str]:
        # RFC 2449 section 5: the list may differ by state. STLS, USER and SASL only
        # make sense before login; IMPLEMENTATION (section 6.9) is shown only after it,
        # our choice, so that a scanner learns nothing about the software.
        cfg = self.config
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        # RFC 2449 sections 6.5 and 6.7: after login the values are the user's own.
        expire = self._user_expire if self._user_expire is not None else cfg.expire
        delay = self._user_login_delay if self._user_login_delay is not None else cfg.login_delay
        if expire is not None:
            caps.append(f"EXPIRE {expire}")
        if delay is not None:
            caps.append(f"LOGIN-DELAY {delay}")
        if self._state is S.AUTHORIZATION:
            user = cfg.user_allowed and self._cleartext_allowed()
            if user:
                caps.append("USER")
            mechanisms = self._mechanisms()
            if mechanisms:
                caps.append("SASL " + " ".join(mechanisms))
            if cfg.tls_available and not self._tls_active:
                caps.append("STLS")
            if cfg.utf8:
                caps.append("UTF8 USER" if user else "UTF8")  # RFC 6856 section 2
        elif cfg.implementation:
            caps.append(f"IMPLEMENTATION {cfg.implementation}")
        return caps

    def _cmd_quit(self, args: list[str], rest: str) -> POP3Event | None:
        if args:
            return self._error("usage: QUIT")
        if self._state is S.AUTHORIZATION:
            # RFC 1939 section 4: QUIT before login ends the session, nothing else.
            self._queue_ok(f"{self.config.hostname} POP3 server signing off")
            return self._close(peer_closed=False)
        # RFC 1939 section 6: enter UPDATE; the application removes the marked messages.
        self._state = S.UPDATE
        order = sorted(self._deleted)
        return Quit(tuple(i + 1 for i in order), tuple(self._messages[i] for i in order))

    # TRANSACTION state (RFC 1939 section 5 and 7)

    def _totals(self) -> tuple[int, int]:
        count = 0
        octets = 0
        for i, message in enumerate(self._messages):
            if i not in self._deleted:
                count += 1
                octets += message.size_octets
        return count, octets

    def _msgno(self, arg: str) -> int | str:
        """Return the 0-based index for ``arg``, or the reason it is not a message."""
        if not (arg.isascii() and arg.isdigit()) or len(arg) > _MAX_NUMBER_DIGITS:
            return "invalid message number"
        number = int(arg)
        if not 1 <= number <= len(self._messages):
            return f"no such message, only {len(self._messages)} messages in maildrop"
        if number - 1 in self._deleted:
            # RFC 1939 section 5: deleted messages are invisible, numbers not reused.
            return f"message {number} already deleted"
        return number - 1

    def _cmd_stat(self, args: list[str], rest: str) -> POP3Event | None:
        if args:
            return self._error("usage: STAT")
        count, octets = self._totals()
        self._queue_ok(f"{count} {octets}")  # RFC 1939 section 5: exactly "nn mm"
        return None

    def _listing(self, args: list[str], name: str, what: Callable[[int], str]) -> POP3Event | None:
        if len(args) > 1:
            return self._error(f"usage: {name} [msg]")
        if args:
            index = self._msgno(args[0])
            if isinstance(index, str):
                return self._error(index)
            self._queue_ok(f"{index + 1} {what(index)}")
            return None
        lines = [f"{i + 1} {what(i)}" for i in range(len(self._messages)) if i not in self._deleted]
        if name == "LIST":
            count, octets = self._totals()
            head = f"{count} message{'s' * (count != 1)} ({octets} octets)"
        else:
            head = "unique-id listing follows"
        self._queue_multiline(head, lines)
        return None

    def _cmd_list(self, args: list[str], rest: str) -> POP3Event | None:
        return self._listing(args, "LIST", lambda i: str(self._messages[i].size_octets))

    def _cmd_uidl(self, args: list[str], rest: str) -> POP3Event | None:
        return self._listing(args, "UIDL", lambda i: self._messages[i].uid)

    def _cmd_dele(self, args: list[str], rest: str) -> POP3Event | None:
        if len(args) != 1:
            return self._error("usage: DELE msg")
        index = self._msgno(args[0])
        if isinstance(index, str):
            return self._error(index)
        self._deleted.add(index)
        self._queue_ok(f"message {index + 1} deleted")
        return None

    def _cmd_rset(self, args: list[str], rest: str) -> POP3Event | None:
        if args:
            return self._error("usage: RSET")
        self._deleted.clear()
        count, octets = self._totals()
        self._queue_ok(f"maildrop has {count} message{'s' * (count != 1)} ({octets} octets)")
        return None

    def _cmd_noop(self, args: list[str], rest: str) -> POP3Event | None:
        if args:
            return self._error("usage: NOOP")
        self._queue_ok("NOOP")
        return None

    def _cmd_retr(self, args: list[str], rest: str) -> POP3Event | None:
        if len(args) != 1:
            return self._error("usage: RETR msg")
        index = self._msgno(args[0])
        if isinstance(index, str):
            return self._error(index)
        message = self._messages[index]
        self._state = S.SENDING
        self._encoder = MessageEncoder()
        self._status_line = f"+OK {message.size_octets} octets\r\n".encode()
        return Retrieve(index + 1, message)

    def _cmd_top(self, args: list[str], rest: str) -> POP3Event | None:
        if len(args) != 2:
            return self._error("usage: TOP msg n")
        index = self._msgno(args[0])
        if isinstance(index, str):
            return self._error(index)
        lines = args[1]
        if not (lines.isascii() and lines.isdigit()) or len(lines) > _MAX_NUMBER_DIGITS:
            return self._error("invalid number of lines")  # RFC 1939 s7: non-negative
        message = self._messages[index]
        self._state = S.SENDING
        self._encoder = MessageEncoder(int(lines))
        self._status_line = b"+OK top of message follows\r\n"
        return Top(index + 1, message, int(lines))

    # -- internals: replies and errors -----------------------------------------------

    def _ok(self, text: str) -> bytes:
        # RFC 1957: old clients expect a space after the status indicator, so there is
        # always text after it.
        return _status_line(f"+OK {text}")

    def _err(self, reason: str, code: str | None) -> bytes:
        # RFC 2449 section 8: the response code goes first, in square brackets.
        return _status_line(f"-ERR {_code(code)}{reason}")

    def _queue_ok(self, text: str) -> None:
        self._out += self._ok(text)

    def _queue_multiline(self, head: str, lines: list[str] | tuple[str, ...]) -> None:
        # RFC 1939 section 3: listing lines never start with "." (numbers, keywords).
        body = "".join(f"{line}\r\n" for line in lines)
        self._out += f"+OK {head}\r\n{body}.\r\n".encode()

    def _error(self, reason: str, *, auth: bool = False) -> POP3Event | None:
        self._out += f"-ERR {reason}\r\n".encode()
        if auth:
            self._auth_failures += 1
            if self._auth_failures >= self.config.max_auth_failures:
                return self._too_many("too many authentication failures")
        else:
            self._errors += 1
            if self._errors >= self.config.max_errors:
                return self._too_many("too many bad commands")
        return None

    def _too_many(self, reason: str) -> TooManyErrors:
        self._state = S.CLOSED
        self._buf.clear()
        self._closed_event = ConnectionClosed(peer_closed=False)
        return TooManyErrors(reason, self._errors, self._auth_failures)

    def _close(self, *, peer_closed: bool) -> ConnectionClosed:
        self._state = S.CLOSED
        self._buf.clear()
        self._sasl = None
        self._closed_event = ConnectionClosed(peer_closed=peer_closed)
        return self._closed_event


_HANDLERS: dict[str, _Handler] = {
    "USER": ServerConnection._cmd_user,
    "PASS": ServerConnection._cmd_pass,
    "APOP": ServerConnection._cmd_apop,
    "AUTH": ServerConnection._cmd_auth,
    "CAPA": ServerConnection._cmd_capa,
    "STLS": ServerConnection._cmd_stls,
    "UTF8": ServerConnection._cmd_utf8,
    "QUIT": ServerConnection._cmd_quit,
    "STAT": ServerConnection._cmd_stat,
    "LIST": ServerConnection._cmd_list,
    "UIDL": ServerConnection._cmd_uidl,
    "DELE": ServerConnection._cmd_dele,
    "RSET": ServerConnection._cmd_rset,
    "NOOP": ServerConnection._cmd_noop,
    "RETR": ServerConnection._cmd_retr,
    "TOP": ServerConnection._cmd_top,
}
assert set(_HANDLERS) == KNOWN_COMMANDS
