"""The SMTP server engine: ``ServerConnection`` and its configuration.

Owns: reading commands and bodies and rendering replies, following the state table of
``_smtp_machine`` (the order of commands, RFC 5321 sections 4.1.4 and 3.3, and every
move a reply makes: read that module first), ESMTP negotiation (EHLO
keywords, parameters), pipelining flush points (RFC 2920 section 3.1), the DATA and BDAT
body streams, STARTTLS session reset (RFC 3207 section 4.2), the AUTH exchange framing
(RFC 4954, through ``_sasl``), and every limit of the configuration.

Must not: do I/O, read a clock or randomness, log, or decide policy (who may send or
receive, which credentials are good): those are answered by the application's replies.
Nor choose a state: every move comes from ``_smtp_machine``'s tables (the handlers run
after a reply keep only its side effects); only a 421 and the peer's end close directly.

Decisions (the RFCs leave them to the implementation):

* The greeting is the application's ``send(Reply(220, ...))`` (or 554, after which only
  QUIT is served, RFC 5321 section 3.1). The EHLO reply is the application's 250 to
  :class:`Hello`; the engine appends the extension keywords from the configuration.
* Syntax, sequence and limit errors are decided by the engine and handed over as
  :class:`ProtocolViolation` with the reply to send; ``max_errors`` of them end in 421.
  A 452 for too many recipients and a cancelled AUTH are not counted as errors.
* HELO/EHLO is required before MAIL (503). A parameter is accepted only when EHLO
  offered its extension (555 otherwise, RFC 5321 section 4.1.1.11).
* DATA ends at ``CRLF.CRLF`` only. Bare CR or LF in a body (DATA or BDAT) follow
  ``bare_newlines``: ``"reject"`` (default) reads to the real end, then 550 5.6.0;
  ``"normalise"`` turns each into CRLF. Dot-unstuffing happens before normalising, so
  only a dot after a real CRLF is removed.
* A body over ``max_message_size`` is read and dropped to its end, then 552 5.3.4
  (RFC 1870 section 6.3); a line over ``max_text_line`` (counted on the unstuffed content,
  CRLF included) gets 550 5.6.0 at the end. Neither is ever buffered.
* A BDAT refused for sequence reasons still has its octets read and dropped (RFC 3030
  section 2); a BDAT whose size cannot be parsed ends the connection with 421, since its
  octets could otherwise be read as commands.
* Replies may be buffered while more complete commands wait (``should_flush``).

How to drive it (the application, or the runner-agnostic session)::

    conn = ServerConnection(config, nonce=secrets.token_hex(8))
    out = conn.send(Reply(220, f"{config.hostname} ESMTP"))  # the greeting
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            write(out); out = b""               # RFC 2920: flush before waiting
            conn.receive_data(read())           # b"" when the peer closed
            continue
        if isinstance(event, ConnectionClosed):
            break
        reply = decide(event)                   # None for DataChunk and Bdat
        if reply is not None:
            out += conn.send(reply)
            if conn.should_flush:               # sync points: DATA, STARTTLS, QUIT, ...
                write(out); out = b""
        if conn.state is SMTPState.TLS_PENDING:
            upgrade(); conn.start_tls_done()
        elif conn.state is SMTPState.CLOSED:
            break
"""

from __future__ import annotations

import base64
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from nosend_proto import _smtp_grammar as grammar
from nosend_proto._errors import LocalProtocolError
from nosend_proto._receivebuffer import OVERLONG, ReceiveBuffer
from nosend_proto._sasl import (
    SERVER_MECHANISMS,
    Credentials,
    SaslChallenge,
    SaslFailure,
    SaslServer,
    SaslStep,
    SaslSuccess,
    decode_sasl_line,
)
from nosend_proto._smtp_data import ContentChecker, DotDecoder
from nosend_proto._smtp_machine import (
    INPUTS,
    LINE_STATES,
    NOT_IMPLEMENTED,
    PIPELINE_STATES,
    REFUSED_SERVES,
    REPLIES,
    SEQUENCE,
    Input,
    SMTPState,
)
from nosend_proto._smtp_machine import Owed as _Owed
from nosend_proto._smtp_machine import OwedReply as _OwedReply
from nosend_proto._smtp_writers import render_reply
from nosend_proto.received import protocol_name
from nosend_proto.smtp_events import (
    NEED_DATA,
    AuthAttempt,
    AuthChallenge,
    Bdat,
    BdatChunkEnd,
    ConnectionClosed,
    DataChunk,
    DataRejected,
    DataStart,
    EndOfData,
    Hello,
    Help,
    MailFrom,
    MailParams,
    Noop,
    ProtocolViolation,
    Quit,
    RcptParams,
    RcptTo,
    Reply,
    Reset,
    Sentinel,
    SMTPEvent,
    StartTLS,
    Verify,
)

__all__ = ["SMTPServerConfig", "SMTPState", "ServerConnection", "BARE_NEWLINE_POLICIES"]

#: ``"reject"``: a body with a bare CR or LF is read to its real ``CRLF.CRLF`` and refused
#: with 550 5.6.0 (like Postfix's ``smtpd_forbid_bare_newline``). ``"normalise"``: each
#: bare CR or LF becomes CRLF in the DataChunks. Neither ever ends the body.
BARE_NEWLINE_POLICIES: tuple[str, ...] = ("reject", "normalise")

# RFC 1870 section 3, RFC 3461 section 5, RFC 4954 section 5 and RFC 6531 let MAIL and
# RCPT lines grow by their parameters (SIZE 26, BODY 14, SMTPUTF8 9, RET/ENVID 108, AUTH
# 500; ORCPT 507, NOTIFY 31): one allowance covers any combination.
_PARAMS_ALLOWANCE = 1024


@dataclass(frozen=True, slots=True)
class SMTPServerConfig:
    """What one SMTP server connection needs to know; limits default to RFC 5321 values.

    ``max_command_line`` (RFC 5321 section 4.5.3.1.4: 512 octets with CRLF; MAIL and RCPT
    may add the extensions' parameter allowances), ``max_text_line`` (section 4.5.3.1.6:
    1000 octets with CRLF, checked on the unstuffed content; 0 accepts any length),
    ``max_recipients`` (section 4.5.3.1.8; more get 452 4.5.3), ``max_message_size``
    (octets after unstuffing, advertised as SIZE, RFC 1870; 0 = no limit), ``max_errors``
    (protocol errors before a 421 and close; 0 = never), ``max_auth_line`` (RFC 4954
    section 4: 12288). ``tls_available`` offers STARTTLS; ``tls_active`` means the
    connection is already TLS (SMTPS). ``auth_mechanisms`` (subset of PLAIN, LOGIN,
    CRAM-MD5) offers AUTH, only over TLS when ``auth_requires_tls``. ``bare_newlines``
    is one of ``BARE_NEWLINE_POLICIES``.
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
        # RFC 6531 section 3.7.1: names in the greeting and the EHLO reply MUST be LDH
        # labels or A-labels, so the hostname is ASCII even when SMTPUTF8 is offered.
        host = self.hostname
        if not host or not host.isascii() or not host.isprintable() or " " in host:
            raise LocalProtocolError("hostname must be printable ASCII without spaces")
        if self.max_command_line < 512:
            raise LocalProtocolError("RFC 5321 section 4.5.3.1.4 requires 512 octets")
        for mech in self.auth_mechanisms:
            if mech not in SERVER_MECHANISMS:
                raise LocalProtocolError(f"unsupported SASL mechanism {mech!r}")
        if self.smtputf8 and not self.eightbitmime:
            # RFC 6531 section 3.1 item 8: a server offering SMTPUTF8 MUST support and
            # announce 8BITMIME.
            raise LocalProtocolError("smtputf8 requires eightbitmime (RFC 6531 section 3.1)")
        if self.bare_newlines not in BARE_NEWLINE_POLICIES:
            raise LocalProtocolError(f"bare_newlines must be one of {BARE_NEWLINE_POLICIES}")
        if min(self.max_text_line, self.max_message_size, self.max_errors) < 0:
            raise LocalProtocolError("limits must not be negative")
        if self.max_text_line and self.max_text_line < 3:
            raise LocalProtocolError("max_text_line must hold at least one character")
        if self.max_recipients < 1 or self.max_auth_line < 512:
            raise LocalProtocolError("max_recipients must be >= 1, max_auth_line >= 512")


# Reading an Enum member through its class goes through a descriptor in Python 3.11
# (about 0.1 us each time); the hot paths compare the state against these instead.
_GREETING = SMTPState.GREETING
_REFUSED = SMTPState.REFUSED
_CONNECTED = SMTPState.CONNECTED
_READY = SMTPState.READY
_MAIL = SMTPState.MAIL
_RCPT = SMTPState.RCPT
_DATA = SMTPState.DATA
_BDAT = SMTPState.BDAT
_AUTH = SMTPState.AUTH
_TLS_PENDING = SMTPState.TLS_PENDING
_CLOSED = SMTPState.CLOSED

# Parameters that are absent: shared, since the dataclasses are immutable and building
# one (frozen: a setattr per field) cost more than parsing the whole command.
_NO_MAIL_PARAMS = MailParams()
_NO_RCPT_PARAMS = RcptParams()

# default_reply's answers that depend on nothing but the event's type: built once.
_OK = Reply(250, "OK")
_CONSTANT_REPLIES: dict[type, Reply] = {
    MailFrom: _OK,
    RcptTo: _OK,
    EndOfData: _OK,
    Reset: _OK,
    Noop: _OK,
    DataStart: Reply(354, "End data with <CR><LF>.<CR><LF>"),
    # RFC 5321 section 3.5.3: 252 when the server will not verify.
    Verify: Reply(252, "Cannot VRFY user, but will accept message and attempt delivery"),
    Help: Reply(214, "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)"),
    StartTLS: Reply(220, "Ready to start TLS"),
    AuthAttempt: Reply(235, "Authentication successful"),
}

_QueuedEvent = tuple[SMTPEvent, _OwedReply | None]


@functools.lru_cache(maxsize=16)
def _host_replies(host: str) -> tuple[Reply, Reply]:
    """The 250 (to HELO/EHLO) and 221 (to QUIT) that name ``host``, built once per name."""
    return Reply(250, host), Reply(221, f"{host} Service closing transmission channel")


class ServerConnection:
    """One SMTP server connection, sans I/O (see the module docstring for the loop).

    ``receive_data(bytes)`` (``b""`` when the peer closed), ``next_event()`` (an event or
    ``NEED_DATA``), ``send(reply)`` returns the bytes to write. ``nonce`` is a random
    per-connection string from the application, used for CRAM-MD5 challenges
    ``<nonce.N@hostname>`` (the engine has no randomness of its own).

    Flushing, the model both server engines share (RFC 2920 section 3.1): reply bytes may
    be collected and written together; they must be written whenever ``next_event()``
    returns ``NEED_DATA`` and whenever ``should_flush`` is true after a ``send()``: when
    no complete command is left in the input, and always at the sync points (354, 334,
    220 to STARTTLS, 221, closing). Unlike the POP3 engine, this one never writes a reply
    of its own choosing: every reply is what ``send()`` returned to the application, so
    there is no ``data_to_send()`` and no ``NEED_FLUSH`` (the application holds all the
    output, one reply per event it was given).
    """

    # Slots fix the layout of the thirty-odd attributes every command reads. With an
    # instance dict, CPython 3.11's per-class shared keys hold at most 30 names, and the
    # small-session benchmark moved by 10% when an attribute was added or removed.
    __slots__ = (
        "config",
        "discarded_after_starttls",
        "_nonce",
        "_state",
        "_owed",
        "_events",
        "_buf",
        "_eof",
        "_errors",
        "_tls_active",
        "_helo",
        "_extended",
        "_offered",
        "_auth_identity",
        "_auth_count",
        "_sasl",
        "_pending_hello",
        "_pending_mail",
        "_pending_auth",
        "_mail",
        "_rcpt_accepted",
        "_rcpt_attempted",
        "_chunking",
        "_bdat_remaining",
        "_bdat_size",
        "_bdat_last",
        "_bdat_error",
        "_bdat_from",
        "_decoder",
        "_checker",
    )

    def __init__(self, config: SMTPServerConfig, *, nonce: str) -> None:
        self.config = config
        self._nonce = nonce
        self._state = _GREETING
        self._owed: _OwedReply | None = None
        self._events: deque[_QueuedEvent] = deque()
        limit = config.max_command_line + _PARAMS_ALLOWANCE
        if config.auth_mechanisms:
            limit = max(limit, config.max_auth_line)
        self._buf = ReceiveBuffer(limit)  # all the input held, nowhere else
        self._eof = False
        self._errors = 0
        self._tls_active = config.tls_active
        self._helo: str | None = None
        self._extended = False
        self._offered: frozenset[str] = frozenset()
        self._auth_identity: str | None = None
        self._auth_count = 0
        self._sasl: SaslServer | None = None
        self.discarded_after_starttls = 0
        # The event a pending reply answers, where the transition needs its values.
        self._pending_hello: Hello | None = None
        self._pending_mail: MailParams | None = None
        self._pending_auth: Credentials | None = None
        # The transaction (see _reset_transaction).
        self._mail: MailParams | None = None
        self._rcpt_accepted = 0
        self._rcpt_attempted = False
        self._chunking = False
        self._bdat_remaining = 0
        self._bdat_size = 0
        self._bdat_last = False
        self._bdat_error: Reply | None = None
        self._bdat_from = _RCPT  # the state a BDAT command was read in (INPUTS: RESUME)
        # A body's decoder and checker are made when it starts (354, or the first BDAT
        # accepted in a transaction); nothing reads the checker before that.
        self._checker: ContentChecker
        self._decoder = DotDecoder()

    # -- public state ------------------------------------------------------------------

    @property
    def state(self) -> SMTPState:
        """Where the conversation stands."""
        return self._state

    @property
    def helo_name(self) -> str | None:
        """The name of the last accepted HELO/EHLO (forgotten after STARTTLS)."""
        return self._helo

    @property
    def extended(self) -> bool:
        """True once an EHLO (not HELO) was accepted in this session."""
        return self._extended

    @property
    def tls_active(self) -> bool:
        """True on SMTPS or after a completed STARTTLS."""
        return self._tls_active

    @property
    def auth_identity(self) -> str | None:
        """The username of the AUTH the application accepted with 235, if any."""
        return self._auth_identity

    @property
    def errors(self) -> int:
        """Protocol errors counted so far (towards ``max_errors``)."""
        return self._errors

    @property
    def mail_params(self) -> MailParams | None:
        """Parameters of the open transaction's MAIL FROM, if one is open."""
        return self._mail

    @property
    def recipients(self) -> int:
        """Recipients accepted in the open transaction."""
        return self._rcpt_accepted

    @property
    def received_protocol(self) -> str:
        """The ``with`` protocol name for the trace header of the current transaction."""
        return protocol_name(
            extended=self._extended,
            tls=self._tls_active,
            authenticated=self._auth_identity is not None,
            smtputf8=self._mail is not None and self._mail.smtputf8,
        )

    def extensions(self) -> tuple[str, ...]:
        """The EHLO keyword lines this session would offer now (RFC 5321 section 4.1.1.1)."""
        cfg = self.config
        lines: list[str] = []
        if cfg.pipelining:
            lines.append("PIPELINING")  # RFC 2920
        # RFC 1870 section 4: SIZE with the fixed maximum, bare when there is none.
        lines.append(f"SIZE {cfg.max_message_size}" if cfg.max_message_size else "SIZE")
        if cfg.eightbitmime:
            lines.append("8BITMIME")  # RFC 6152
        if cfg.smtputf8:
            lines.append("SMTPUTF8")  # RFC 6531
        if cfg.enhanced_status_codes:
            lines.append("ENHANCEDSTATUSCODES")  # RFC 2034
        if cfg.chunking:
            lines.append("CHUNKING")  # RFC 3030
        if cfg.dsn:
            lines.append("DSN")  # RFC 3461
        if cfg.tls_available and not self._tls_active:
            lines.append("STARTTLS")  # RFC 3207; never again once TLS is on
        if self._auth_offered():
            lines.append("AUTH " + " ".join(cfg.auth_mechanisms))  # RFC 4954
        return tuple(lines)

    @property
    def should_flush(self) -> bool:
        """True when the reply bytes returned so far must be written now (RFC 2920 3.1).

        False while a reply is still owed or while further complete commands are already
        buffered (their replies may go out together); true at every sync point. The POP3
        engine's ``should_flush`` means the same; the line it looks ahead at stays in the
        receive buffer for the next ``next_event()``.
        """
        if self._owed is not None or self._events:
            return False
        if self._state not in PIPELINE_STATES:
            return True
        return not self._buf.has_line()

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes the peer sent; ``b""`` means the peer closed its side."""
        state = self._state
        if state is _CLOSED:
            return
        if state is _TLS_PENDING:
            raise LocalProtocolError("TLS handshake pending: call start_tls_done() first")
        if self._eof:
            raise LocalProtocolError("data received after the peer closed")
        if not data:
            self._eof = True
            return
        self._buf.feed(data)

    # -- events ------------------------------------------------------------------------

    def next_event(self) -> SMTPEvent | Sentinel:
        """Return the next event, or ``NEED_DATA`` when more input is needed."""
        if self._owed is not None:
            raise LocalProtocolError(f"reply to the {self._owed.value} event first")
        if self._events:
            event, self._owed = self._events.popleft()
            return event
        state = self._state
        if state in LINE_STATES:
            line = self._buf.next_line()
            if line is None:
                return self._closed() if self._eof else NEED_DATA
            if state is _AUTH:
                event, self._owed = self._sasl_line(line)
            else:
                event, self._owed = self._command(line)
            return event
        if state is _DATA:
            return self._next_data_event()
        if state is _BDAT:
            return self._next_bdat_event()
        if state is _CLOSED:
            return ConnectionClosed()
        if state is _GREETING:
            raise LocalProtocolError("send the greeting (220 or 554) first")
        raise LocalProtocolError("TLS handshake pending: call start_tls_done() first")

    def _emit(self, item: _QueuedEvent) -> SMTPEvent:
        event, owed = item
        self._owed = owed
        return event

    def _closed(self) -> ConnectionClosed:
        self._state = _CLOSED
        self._sasl = None
        return ConnectionClosed()

    def _violation(
        self, reply: Reply, reason: str, *, count: bool = True, close: bool = False
    ) -> _QueuedEvent:
        if count:
            self._errors += 1
            if self.config.max_errors and self._errors >= self.config.max_errors and not close:
                reply = Reply(421, f"{self.config.hostname} Too many errors, closing", "4.7.0")
                reason = f"too many errors (last: {reason})"
                close = True
        return ProtocolViolation(reply, reason, close), _Owed.FATAL if close else _Owed.VIOLATION

    # -- commands ----------------------------------------------------------------------

    def _command(self, raw: bytes | object) -> _QueuedEvent:
        if not isinstance(raw, bytes):  # OVERLONG, the only other thing a line can be
            # RFC 5321 section 4.5.3.1.4 / 4.2.4: 500 line too long.
            return self._violation(Reply(500, "Line too long", "5.5.2"), "overlong command")
        body = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        try:
            line = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._violation(Reply(500, "Invalid UTF-8 in command", "5.5.2"), "bad utf-8")
        if not line.isprintable():
            return self._violation(
                Reply(500, "Control character in command", "5.5.2"), "control character"
            )
        verb, _, arg = line.partition(" ")  # RFC 5321 section 4.1.1: VERB SP argument
        verb = verb.upper()
        # Every verb's limit is at least max_command_line: only a longer line needs its own.
        if len(raw) > self.config.max_command_line and len(raw) > self._line_limit(verb):
            return self._violation(Reply(500, "Line too long", "5.5.2"), "overlong command")
        state = self._state
        if state is _REFUSED and verb not in REFUSED_SERVES:
            # RFC 5321 section 3.1: after a 554 greeting, 503 to all but QUIT.
            return self._violation(
                Reply(503, "No service here, send QUIT", "5.5.1"), "command after 554 greeting"
            )
        refused = SEQUENCE.get(verb)
        if refused is None:
            shown = grammar.quote_for_reply(verb)
            if verb in NOT_IMPLEMENTED:
                reply = Reply(502, f"Command not implemented: {shown}", "5.5.1")
                return self._violation(reply, "not implemented")
            return self._violation(
                Reply(500, f"Command unrecognized: {shown}", "5.5.1"), "unknown command"
            )
        if state in refused:
            return self._out_of_sequence(verb, arg, refused[state])
        return _HANDLERS[verb](self, arg)

    def _line_limit(self, verb: str) -> int:
        limit = self.config.max_command_line
        if verb in ("MAIL", "RCPT"):
            return limit + _PARAMS_ALLOWANCE
        if verb == "AUTH":
            return max(limit, self.config.max_auth_line)
        return limit

    def _out_of_sequence(self, verb: str, arg: str, text: str) -> _QueuedEvent:
        if verb in ("DATA", "BDAT") and self._state is _MAIL and self._rcpt_attempted:
            # RFC 5321 section 3.3: every RCPT was refused, 554 no valid recipients.
            reply = Reply(554, "No valid recipients", "5.5.1")
            if verb == "BDAT":
                return self._bdat(arg, refusal=reply)
            return self._violation(reply, "DATA without recipients")
        if verb == "BDAT":
            return self._bdat(arg, refusal=Reply(503, text, "5.5.1"))
        return self._violation(Reply(503, text, "5.5.1"), f"{verb} out of sequence")

    def _syntax(self, text: str, enhanced: str = "5.5.4") -> _QueuedEvent:
        return self._violation(Reply(501, text, enhanced), "syntax error")

    def _hello_syntax(self, text: str) -> _QueuedEvent:
        # RFC 2034 section 3: no enhanced status code on any reply to HELO/EHLO.
        event, owed = self._syntax(text)
        return event, _Owed.HELLO_VIOLATION if owed is _Owed.VIOLATION else owed

    def _cmd_helo(self, arg: str, extended: bool = False) -> _QueuedEvent:
        verb = "EHLO" if extended else "HELO"
        name = arg.strip(" ")
        if not name or " " in name:
            return self._hello_syntax(f"Syntax: {verb} hostname")
        # RFC 5321 section 4.1.1.1: Domain or address-literal. Underscores are let through
        # (common in Windows host names); policy may refuse the name later.
        if not grammar.is_domain(name.replace("_", "-")) or (
            not name.isascii() and not self.config.smtputf8
        ):
            return self._hello_syntax(f"Invalid domain name {grammar.quote_for_reply(name)}")
        event = Hello(name, extended)
        self._pending_hello = event
        return event, _Owed.HELLO

    def _cmd_ehlo(self, arg: str) -> _QueuedEvent:
        return self._cmd_helo(arg, extended=True)

    def _cmd_mail(self, arg: str) -> _QueuedEvent:
        if arg[:5].upper() != "FROM:":
            return self._syntax("Syntax: MAIL FROM:<address>")
        path_text, params_text = grammar.split_path_and_params(arg[5:])
        mailbox = grammar.parse_mailbox(path_text, null_ok=True, postmaster_ok=False)
        if mailbox is None:
            shown = grammar.quote_for_reply(path_text)
            return self._syntax(f"Bad sender address syntax {shown}", "5.1.7")
        mail = _NO_MAIL_PARAMS
        if params_text:
            params = self._params(params_text)
            if isinstance(params, Reply):
                return self._violation(params, "bad MAIL parameter")
            parsed = grammar.mail_params(params, self._offered, self.config.max_message_size)
            if isinstance(parsed, Reply):
                return self._violation(parsed, "bad MAIL parameter", count=parsed.code != 552)
            mail = parsed
        if not mailbox.isascii() and not mail.smtputf8:
            return self._need_utf8(mailbox, 550)
        self._pending_mail = mail
        return MailFrom(mailbox, mail), _Owed.MAIL

    def _need_utf8(self, mailbox: str, code: int) -> _QueuedEvent:
        # RFC 6531 section 3.4: a non-ASCII address without the SMTPUTF8 parameter.
        # Section 3.5: 550 when MAIL needs an ASCII address, 553 for RCPT; X.6.7 both.
        shown = grammar.quote_for_reply(mailbox)
        reply = Reply(code, f"Non-ASCII address {shown} needs SMTPUTF8", f"{code // 100}.6.7")
        return self._violation(reply, "non-ASCII address without SMTPUTF8")

    def _params(self, text: str) -> list[tuple[str, str | None]] | Reply:
        if not text:
            return []
        if not self._extended:
            # RFC 5321 section 4.1.1.11: parameters need EHLO; 555 for a HELO session.
            shown = grammar.quote_for_reply(text)
            return Reply(555, f"Parameters not recognized after HELO: {shown}", "5.5.4")
        return grammar.parse_params(text)

    def _cmd_rcpt(self, arg: str) -> _QueuedEvent:
        if arg[:3].upper() != "TO:":
            return self._syntax("Syntax: RCPT TO:<address>")
        path_text, params_text = grammar.split_path_and_params(arg[3:])
        mailbox = grammar.parse_mailbox(path_text, null_ok=False, postmaster_ok=True)
        if mailbox is None:
            shown = grammar.quote_for_reply(path_text)
            return self._syntax(f"Bad recipient address syntax {shown}", "5.1.3")
        rcpt = _NO_RCPT_PARAMS
        if params_text:
            params = self._params(params_text)
            if isinstance(params, Reply):
                return self._violation(params, "bad RCPT parameter")
            parsed = grammar.rcpt_params(params, self._offered)
            if isinstance(parsed, Reply):
                return self._violation(parsed, "bad RCPT parameter")
            rcpt = parsed
        if self._chunking:
            return self._violation(Reply(503, "RCPT after BDAT", "5.5.1"), "RCPT after BDAT")
        if not mailbox.isascii() and not (self._mail and self._mail.smtputf8):
            return self._need_utf8(mailbox, 553)
        if self._rcpt_accepted >= self.config.max_recipients:
            # RFC 5321 section 4.5.3.1.10: 452 too many recipients, not an error.
            reply = Reply(452, "Too many recipients", "4.5.3")
            return self._violation(reply, "too many recipients", count=False)
        return RcptTo(mailbox, rcpt), _Owed.RCPT

    def _cmd_data(self, arg: str) -> _QueuedEvent:
        if arg:
            return self._syntax("Syntax: DATA")
        if self._chunking:
            # RFC 3030 section 3: DATA and BDAT must not be mixed in one transaction.
            return self._violation(Reply(503, "DATA after BDAT", "5.5.1"), "DATA after BDAT")
        return DataStart(), _Owed.DATA

    def _cmd_bdat(self, arg: str) -> _QueuedEvent:
        return self._bdat(arg, refusal=None)

    def _bdat(self, arg: str, refusal: Reply | None) -> _QueuedEvent:
        # RFC 3030 section 2: "BDAT" SP chunk-size [ SP end-marker ]
        words = arg.split(" ")
        if not 1 <= len(words) <= 2 or not words[0].isdigit() or not words[0].isascii():
            # The chunk's length is unknown, so its octets cannot be skipped: close.
            reply = Reply(421, "Bad BDAT syntax, cannot continue", "4.5.0")
            return self._violation(reply, "BDAT syntax", close=True)
        if len(words) == 2 and words[1].upper() != "LAST":
            reply = Reply(421, "Bad BDAT syntax, cannot continue", "4.5.0")
            return self._violation(reply, "BDAT syntax", close=True)
        # chunk-size = 1*DIGIT may carry leading zeros: drop them before bounding the
        # parse, or "000...05" would read as 0 and its octets as commands (smuggling).
        digits = words[0].lstrip("0")
        size = int(digits[:30]) if digits else 0  # 30 significant digits: endless anyway
        last = len(words) == 2
        self._bdat_remaining = size
        self._bdat_size = size
        self._bdat_last = last
        self._bdat_error = None
        if not self._extended or not self.config.chunking:
            self._bdat_error = Reply(502, "BDAT not offered", "5.5.1")
        elif refusal is not None:
            self._bdat_error = refusal
        elif not self._chunking:
            self._chunking = True
            self._checker = self._new_checker()
        # RFC 3030 section 2: the octets are read (and dropped on error) before replying.
        self._bdat_from = self._state
        self._move(Input.BDAT_COMMAND)
        return Bdat(size, last, accepted=self._bdat_error is None), None

    def _cmd_rset(self, arg: str) -> _QueuedEvent:
        if arg.strip(" "):
            return self._syntax("Syntax: RSET")
        return Reset(), _Owed.RSET

    def _cmd_noop(self, arg: str) -> _QueuedEvent:
        return Noop(), _Owed.NOOP  # RFC 5321 section 4.1.1.9: an argument is ignored

    def _cmd_vrfy(self, arg: str) -> _QueuedEvent:
        if not arg.strip(" "):
            return self._syntax("Syntax: VRFY address")
        return Verify(arg.strip(" ")), _Owed.VRFY

    def _cmd_help(self, arg: str) -> _QueuedEvent:
        return Help(arg.strip(" ")), _Owed.HELP

    def _cmd_quit(self, arg: str) -> _QueuedEvent:
        if arg.strip(" "):
            return self._syntax("Syntax: QUIT")
        return Quit(), _Owed.QUIT

    def _cmd_starttls(self, arg: str) -> _QueuedEvent:
        if self._tls_active:
            return self._violation(Reply(503, "TLS already active", "5.5.1"), "STARTTLS in TLS")
        if not self.config.tls_available:
            return self._violation(
                Reply(502, "STARTTLS not available", "5.5.1"), "STARTTLS not offered"
            )
        if arg.strip(" "):
            return self._syntax("Syntax: STARTTLS")  # RFC 3207 section 4: no parameters
        return StartTLS(), _Owed.STARTTLS

    def _auth_offered(self) -> bool:
        cfg = self.config
        return bool(cfg.auth_mechanisms) and (self._tls_active or not cfg.auth_requires_tls)

    def _cmd_auth(self, arg: str) -> _QueuedEvent:
        cfg = self.config
        if not cfg.auth_mechanisms:
            return self._violation(Reply(502, "AUTH not available", "5.5.1"), "AUTH not offered")
        if not self._extended:
            return self._violation(Reply(503, "Send EHLO first", "5.5.1"), "AUTH after HELO")
        if self._auth_identity is not None:
            # RFC 4954 section 4: after a successful AUTH, further AUTH gets 503.
            return self._violation(Reply(503, "Already authenticated", "5.5.1"), "AUTH twice")
        if not self._auth_offered():
            # RFC 4954 section 6: 538 encryption required for the mechanism.
            text = "Encryption required for requested authentication mechanism"
            return self._violation(Reply(538, text, "5.7.11"), "AUTH before TLS")
        words = arg.split(" ")
        if not 1 <= len(words) <= 2 or not words[0]:
            return self._syntax("Syntax: AUTH mechanism [initial-response]")
        mechanism = words[0].upper()
        if mechanism not in cfg.auth_mechanisms:
            shown = grammar.quote_for_reply(words[0])
            reply = Reply(504, f"Unrecognized authentication type {shown}", "5.5.4")
            return self._violation(reply, "unknown SASL mechanism")
        initial: bytes | None = None
        if len(words) == 2:
            decoded = decode_sasl_line(words[1].encode())
            if isinstance(decoded, SaslFailure):
                return self._sasl_failed(decoded)
            initial = decoded
        self._auth_count += 1
        challenge = f"<{self._nonce}.{self._auth_count}@{cfg.hostname}>".encode()
        self._sasl = SaslServer(mechanism, initial, challenge)
        return self._sasl_step(self._sasl.start())

    def _sasl_step(self, step: SaslStep) -> _QueuedEvent:
        if isinstance(step, SaslChallenge):
            assert self._sasl is not None
            text = base64.b64encode(step.data).decode("ascii")
            return AuthChallenge(Reply(334, text), self._sasl.mechanism), _Owed.AUTH_CHALLENGE
        self._sasl = None
        self._move(Input.SASL_ENDED)
        if isinstance(step, SaslSuccess):
            self._pending_auth = step.credentials
            return AuthAttempt(step.credentials), _Owed.AUTH_ATTEMPT
        return self._sasl_failed(step)

    def _sasl_failed(self, failure: SaslFailure) -> _QueuedEvent:
        self._sasl = None
        self._move(Input.SASL_ENDED)
        if failure.cancelled:
            # RFC 4954 section 4: a "*" cancels; reply 501.
            reply = Reply(501, "Authentication cancelled", "5.7.0")
            return self._violation(reply, "AUTH cancelled", count=False)
        # RFC 4954 section 4: undecodable base64 (or a malformed response) gets 501.
        return self._violation(Reply(501, failure.reason, "5.5.2"), "bad AUTH response")

    def _sasl_line(self, raw: bytes | object) -> _QueuedEvent:
        if raw is OVERLONG or (isinstance(raw, bytes) and len(raw) > self.config.max_auth_line):
            self._sasl = None
            self._move(Input.SASL_ENDED)
            # RFC 4954 section 4 / 6: 500 5.5.6 authentication exchange line too long.
            reply = Reply(500, "Authentication exchange line is too long", "5.5.6")
            return self._violation(reply, "overlong AUTH line")
        assert isinstance(raw, bytes) and self._sasl is not None
        decoded = decode_sasl_line(raw.rstrip(b"\r\n"))
        if isinstance(decoded, SaslFailure):
            return self._sasl_failed(decoded)
        return self._sasl_step(self._sasl.respond(decoded))

    # -- bodies ------------------------------------------------------------------------

    def _new_checker(self) -> ContentChecker:
        cfg = self.config
        return ContentChecker(
            cfg.max_message_size, cfg.max_text_line, cfg.bare_newlines == "normalise"
        )

    def _next_data_event(self) -> SMTPEvent | Sentinel:
        while True:
            chunk = self._buf.take(1 << 62)
            if not chunk:
                return self._closed() if self._eof else NEED_DATA
            content, end = self._decoder.feed(chunk)
            content = self._checker.feed(content)
            if end >= 0:
                if end < len(chunk):
                    self._buf.unread(chunk[end:])
                final = self._end_of_body()
                if content:
                    self._events.append(final)
                    return DataChunk(content)
                return self._emit(final)
            if content:
                return DataChunk(content)

    def _end_of_body(self) -> _QueuedEvent:
        """The verdict on a complete body: EndOfData, or DataRejected with its reply."""
        checker = self._checker
        if checker.oversize:
            # RFC 1870 section 6.3 / RFC 5321 section 4.5.3.1.9.
            reply = Reply(552, "Message size exceeds fixed maximum message size", "5.3.4")
            return DataRejected(reply, "size"), _Owed.REJECTED
        if checker.bare and self.config.bare_newlines == "reject":
            # RFC 5321 section 2.3.8: lines end with CRLF; bare CR/LF are refused so that
            # no downstream server can read a different message end (SMTP smuggling).
            text = "Message contains bare CR or LF; lines must end with CRLF"
            return DataRejected(Reply(550, text, "5.6.0"), "bare-newline"), _Owed.REJECTED
        if checker.long_line:
            limit = self.config.max_text_line
            reply = Reply(550, f"Message contains a line longer than {limit} octets", "5.6.0")
            return DataRejected(reply, "line-length"), _Owed.REJECTED
        return EndOfData(), _Owed.END_DATA

    def _next_bdat_event(self) -> SMTPEvent | Sentinel:
        while self._bdat_remaining:
            data = self._buf.take(self._bdat_remaining)
            if not data:
                return self._closed() if self._eof else NEED_DATA
            self._bdat_remaining -= len(data)
            if self._bdat_error is not None:
                continue  # RFC 3030 section 2: the octets of a refused BDAT are dropped
            content = self._checker.feed(data)
            if content:
                return DataChunk(content)
        # The chunk is complete: the BDAT command gets its reply now.
        if self._bdat_error is not None:
            error, self._bdat_error = self._bdat_error, None
            self._move(Input.CHUNK_REFUSED)
            return self._emit(self._violation(error, "BDAT refused"))
        self._move(Input.CHUNK_ACCEPTED)
        if self._bdat_last:
            tail = self._checker.finish()
            final = self._end_of_body()
            if tail:
                self._events.append(final)
                return DataChunk(tail)
            return self._emit(final)
        if self._checker.oversize:
            reply = Reply(552, "Message size exceeds fixed maximum message size", "5.3.4")
            return self._emit((DataRejected(reply, "size"), _Owed.REJECTED))
        return self._emit((BdatChunkEnd(self._bdat_size), _Owed.BDAT_CHUNK))

    # -- replies -----------------------------------------------------------------------

    def send(self, reply: Reply | ProtocolViolation | DataRejected | AuthChallenge) -> bytes:
        """Render the application's reply to the pending event; return the wire bytes.

        The events that carry a ready-made ``reply`` may be passed themselves. A 421 may
        be sent at any time and closes the connection (RFC 5321 section 3.8).
        """
        if type(reply) is not Reply:  # the usual case skips the isinstance checks
            if isinstance(reply, ProtocolViolation | DataRejected | AuthChallenge):
                reply = reply.reply
            if not isinstance(reply, Reply):
                raise LocalProtocolError(f"send() takes a Reply, not {type(reply).__name__}")
        owed = self._owed
        code = reply.code
        if owed is None or code not in owed.positive or self._state is _CLOSED:
            # Anything but a positive answer to the owed event: the greeting, a 421, a
            # refusal, or the application's mistake.
            owed = self._admit(owed, code)
        extra: tuple[str, ...] = ()
        if owed is _Owed.HELLO and code == 250 and self._pending_hello is not None:
            if self._pending_hello.extended:
                extra = self.extensions()
                self._offered = frozenset([line.partition(" ")[0] for line in extra])
            if not reply.text:
                # RFC 5321 section 4.1.1.1: the reply's first line names the server.
                reply = _host_replies(self.config.hostname)[0]
        data = render_reply(reply, self._enhanced(owed, reply), extra)
        self._owed = None
        if code == 421:
            self._closed()
        elif owed is not None:
            positive = code in owed.positive
            self._state = REPLIES[self._state, owed, positive]
            after = _AFTER.get(owed)
            if after is not None:
                after(self, positive)
        return data

    def _move(self, what: Input) -> None:
        """Make the move ``INPUTS`` gives for ``what`` in the current state."""
        target = INPUTS[self._state, what]
        self._state = target if isinstance(target, SMTPState) else self._bdat_from

    def _admit(self, owed: _OwedReply | None, code: int) -> _OwedReply | None:
        """The owed reply ``code`` answers (None: an unsolicited 421), or raise."""
        state = self._state
        if state is _CLOSED:
            raise LocalProtocolError("the connection is closed")
        if owed is None:
            if state is _GREETING:
                owed = _Owed.GREETING
            elif code != 421:
                raise LocalProtocolError("no command is waiting for a reply")
        if owed is not None and code != 421 and code not in owed.positive:
            if code < 400 or owed is _Owed.QUIT or (owed is _Owed.GREETING and code != 554):
                raise LocalProtocolError(f"{code} is not a valid reply to {owed.value}")
        return owed

    def _enhanced(self, owed: _OwedReply | None, reply: Reply) -> str | None:
        # RFC 2034 section 3: on every 2xx/4xx/5xx reply except the greeting and the
        # replies to HELO and EHLO.
        code = reply.code
        if 300 <= code < 400 or not self.config.enhanced_status_codes:
            return None
        if owed is None:  # an unsolicited 421
            return f"{code // 100}.0.0" if reply.enhanced is None else reply.enhanced
        if not owed.enhanced:
            return None
        if reply.enhanced is not None:
            return reply.enhanced
        if code < 300:
            return owed.success
        if code == 535 and owed is _Owed.AUTH_ATTEMPT:
            return "5.7.8"  # RFC 4954 section 6: authentication credentials invalid
        return f"{code // 100}.{owed.failure}"

    # What a reply does besides moving the state (REPLIES does that, before these run):
    # one handler per owed reply that has side effects, dispatched by ``_AFTER``;
    # ``positive`` is whether the code admits the event.

    def _after_hello(self, positive: bool) -> None:
        hello = self._pending_hello
        self._pending_hello = None
        if positive and hello is not None:
            # RFC 5321 section 4.1.4: a successful EHLO/HELO also resets the
            # transaction; the keywords offered are those of the last EHLO.
            self._helo = hello.name
            self._extended = hello.extended
            if not hello.extended:
                self._offered = frozenset()
            self._reset_transaction()

    def _after_mail(self, positive: bool) -> None:
        if positive:
            self._mail = self._pending_mail
        self._pending_mail = None

    def _after_rcpt(self, positive: bool) -> None:
        self._rcpt_attempted = True
        if positive:
            self._rcpt_accepted += 1

    def _after_data(self, positive: bool) -> None:
        if positive:
            self._decoder = DotDecoder()
            self._checker = self._new_checker()

    def _after_body(self, positive: bool) -> None:
        # Whatever the verdict on a whole body, the transaction is over.
        self._reset_transaction()

    def _after_bdat_chunk(self, positive: bool) -> None:
        if not positive:
            # RFC 3030 section 2: a failed chunk fails the transaction.
            self._reset_transaction()

    def _after_rset(self, positive: bool) -> None:
        self._reset_transaction()

    def _after_starttls(self, positive: bool) -> None:
        if positive:
            # RFC 3207 section 4 / CVE-2011-0411: nothing the client sent in
            # cleartext after STARTTLS may be read as coming over TLS.
            self.discarded_after_starttls += self._buf.clear()

    def _after_auth_challenge(self, positive: bool) -> None:
        if not positive:
            self._sasl = None

    def _after_auth_attempt(self, positive: bool) -> None:
        if positive and self._pending_auth is not None:
            self._auth_identity = self._pending_auth.username
        self._pending_auth = None

    def _after_close(self, positive: bool) -> None:
        self._sasl = None

    def _reset_transaction(self) -> None:
        # The body's checker and decoder are replaced when the next body starts.
        self._mail = None
        self._rcpt_accepted = 0
        self._rcpt_attempted = False
        self._chunking = False
        self._bdat_remaining = 0
        self._bdat_size = 0
        self._bdat_last = False
        self._bdat_error = None

    def start_tls_done(self) -> None:
        """The runner finished the TLS handshake after a 220 to StartTLS.

        RFC 3207 section 4.2: the session starts over; EHLO, AUTH and any transaction are
        forgotten, the client must EHLO again; STARTTLS is no longer offered and AUTH may
        now be.
        """
        if self._state is not _TLS_PENDING:
            raise LocalProtocolError("start_tls_done() without a 220 reply to STARTTLS")
        self._tls_active = True
        self._helo = None
        self._extended = False
        self._offered = frozenset()
        self._auth_identity = None
        self._reset_transaction()
        self._move(Input.TLS_DONE)

    def default_reply(self, event: SMTPEvent) -> Reply:
        """A conventional reply to ``event`` for applications with no opinion on it.

        Policy events (MailFrom, RcptTo, EndOfData, AuthAttempt) get a positive reply
        too: use this for them only when the application has really decided to accept.
        """
        event_type = type(event)
        reply = _CONSTANT_REPLIES.get(event_type)
        if reply is not None:
            return reply
        host = self.config.hostname  # validated printable ASCII: safe in a reply
        if event_type is Hello:
            return _host_replies(host)[0]
        if event_type is Quit:
            return _host_replies(host)[1]
        if isinstance(event, ProtocolViolation | DataRejected | AuthChallenge):
            return event.reply
        if isinstance(event, BdatChunkEnd):
            return Reply(250, f"{event.size} octets received")
        # Subclasses of the event classes get their base class's reply.
        if isinstance(event, Hello):
            return _host_replies(host)[0]
        if isinstance(event, Quit):
            return _host_replies(host)[1]
        for base, reply in _CONSTANT_REPLIES.items():
            if isinstance(event, base):
                return reply
        raise LocalProtocolError(f"{type(event).__name__} takes no reply")


# Command verb -> its handler (its row of SEQUENCE has already admitted it).
_HANDLERS: dict[str, Callable[[ServerConnection, str], _QueuedEvent]] = {
    "HELO": ServerConnection._cmd_helo,
    "EHLO": ServerConnection._cmd_ehlo,
    "MAIL": ServerConnection._cmd_mail,
    "RCPT": ServerConnection._cmd_rcpt,
    "DATA": ServerConnection._cmd_data,
    "BDAT": ServerConnection._cmd_bdat,
    "RSET": ServerConnection._cmd_rset,
    "NOOP": ServerConnection._cmd_noop,
    "VRFY": ServerConnection._cmd_vrfy,
    "HELP": ServerConnection._cmd_help,
    "QUIT": ServerConnection._cmd_quit,
    "STARTTLS": ServerConnection._cmd_starttls,
    "AUTH": ServerConnection._cmd_auth,
}

# Owed reply -> the side effects of its reply (none for the greeting, NOOP, VRFY, HELP,
# violations); the move itself is REPLIES's.
_AFTER: dict[_OwedReply, Callable[[ServerConnection, bool], None]] = {
    _Owed.HELLO: ServerConnection._after_hello,
    _Owed.MAIL: ServerConnection._after_mail,
    _Owed.RCPT: ServerConnection._after_rcpt,
    _Owed.DATA: ServerConnection._after_data,
    _Owed.END_DATA: ServerConnection._after_body,
    _Owed.REJECTED: ServerConnection._after_body,
    _Owed.BDAT_CHUNK: ServerConnection._after_bdat_chunk,
    _Owed.RSET: ServerConnection._after_rset,
    _Owed.STARTTLS: ServerConnection._after_starttls,
    _Owed.AUTH_CHALLENGE: ServerConnection._after_auth_challenge,
    _Owed.AUTH_ATTEMPT: ServerConnection._after_auth_attempt,
    _Owed.QUIT: ServerConnection._after_close,
    _Owed.FATAL: ServerConnection._after_close,
}
