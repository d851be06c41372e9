"""The SMTP client engine: ``ClientConnection``, sans I/O, for relaying to a smarthost.

Owns: the client's side of RFC 5321 (greeting, EHLO with HELO fallback, transactions,
QUIT), STARTTLS (RFC 3207), AUTH (RFC 4954, through ``_sasl.SaslClient``), PIPELINING
(RFC 2920), CHUNKING (RFC 3030), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8
(RFC 6531) and DSN parameters (RFC 3461); matching replies to commands in order; the
body's line ends and dot-stuffing on the way out.

Must not: do I/O, read a clock or randomness, log, retry, or decide policy (which server,
which message, whether a 4xx is worth a retry): the application does, from the events.

The state machine. ``state`` is the *sending* side: what the application may do now.
Replies are matched in order to the commands in flight, so results of pipelined
transactions (RecipientResult, MessageResult) may come in any sending state::

    state        what moves it on                                     next state
    GREETING     220 -> Greeting; the engine sends EHLO                EHLO
    EHLO         250 -> (STARTTLS offered, starttls) engine STARTTLS   STARTTLS
                     -> (require_tls, no TLS) SessionFailed; QUIT      QUITTING
                     -> Ready                                          READY
                 5xx to EHLO -> HELO (RFC 5321 section 4.1.1.1)        EHLO
    STARTTLS     220 -> TLSHandshakeNeeded                             TLS_PENDING
                 else -> Ready, or SessionFailed under require_tls     READY / QUITTING
    TLS_PENDING  app: start_tls_done(); the engine sends EHLO again    EHLO
    READY        app: Authenticate -> AUTH ...                         AUTH
                 app: Transaction -> MAIL, RCPT... (BDAT mode: SendBody) BODY
                                  -> MAIL, RCPT..., DATA (DATA mode)     WAITING
                 app: Quit                                             QUITTING
    AUTH         334 -> the engine answers; 235 -> AuthSucceeded;      AUTH / READY
                 else -> AuthFailed                                    READY
    WAITING      354 -> SendBody                                       BODY
                 a refusal, or (lock-step) the body's reply -> MessageResult   READY
    BODY         app: BodyChunk..., EndOfBody                          READY (pipelining)
                                                                       WAITING (lock-step)
    QUITTING     221, or the server closes -> ConnectionClosed          CLOSED
    any          a 421 or the server closing -> results for what was in
                 flight, then ConnectionClosed                         CLOSED
    GREETING, EHLO: any other refusal -> SessionFailed; the engine sends QUIT

How the engine uses the extensions (and what it costs, in round trips after EHLO):

* PIPELINING and CHUNKING offered: MAIL, every RCPT and the BDAT chunks go out without
  waiting (RFC 3030 section 4.2 allows BDAT in a pipelined group), and the next
  transaction follows at once, so N messages and QUIT cost ONE round trip in all. Before
  a transaction's MAIL the engine puts RSET (RFC 2920 section 3.1 lets it stand anywhere
  in a group) whenever an earlier transaction might have left the server inside a
  transaction: a BDAT transaction whose outcome is not known yet, or one that failed
  after MAIL was accepted. That costs about twenty octets, never a round trip.
* PIPELINING without CHUNKING: MAIL, RCPTs and DATA in one write; after 354 the body,
  its final dot and the next transaction's commands in one write (RFC 2920 section 3.1:
  message content may start a group): one round trip per message, plus one at the end.
* No PIPELINING: lock-step, one command per round trip (RFC 5321 section 4.1); DATA is
  used even when CHUNKING is offered, since unpipelined BDAT would wait per chunk.

Decisions (the RFCs leave them to the implementation):

* Local refusals, before a byte of the transaction is sent: a declared ``size`` over the
  server's SIZE (RFC 1870 section 6), an 8-bit body when 8BITMIME is not offered, and a
  non-ASCII address or ``smtputf8`` when SMTPUTF8 is not (RFC 6531 section 3.2). RFC 6152
  section 3 would allow converting 8-bit content to 7-bit; we refuse instead: converting
  means re-encoding MIME parts, which breaks DKIM signatures and changes what the author
  sent, and a relay on a costly link should not rewrite mail. A body chunk holding 8-bit
  octets in a transaction that may not carry them raises ``LocalProtocolError`` before
  any of it is sent; the connection is then unusable (close it: the server discards an
  unfinished body, so nothing half-sent is delivered).
* Outbound bodies always have CRLF line ends (bare CR and bare LF become CRLF) and, for
  DATA, dots stuffed; a body not ending in CRLF gets one, in DATA and BDAT alike, so the
  same message arrives byte-identical either way. Nothing an application stores can end
  the DATA early at a server further on (SMTP smuggling, 2023).
* Lines over 998 octets (RFC 5321 section 4.5.3.1.6) are passed unchanged: the server
  decides (many accept them). Folding them would alter the message; refusing locally
  would need the whole body read before the first byte is sent.
* The AUTH initial response is used when the whole AUTH line fits ``max_command_line``
  (RFC 4954 section 4: AUTH stays subject to the command line limit); otherwise it goes
  after an empty 334 challenge, on a line of up to 12288 octets (same section).
* DSN parameters go out only when DSN is offered; otherwise they are dropped and the
  MessageResult says so (``dsn_dropped``).
* Pipelining deadlock (RFC 2920 section 3.1): replies keep coming while a long batch is
  written; a runner must read them while it writes (or write in bounded pieces and read
  between them), or a server whose output buffer is full stops reading.
* A peer's protocol violation (not a reply line, over-long line or reply, a reply nobody
  asked for, bytes after the 220 to STARTTLS) raises ``RemoteProtocolError``, and every
  later call raises it again: close the connection. A transaction without an accepted
  MessageResult was never delivered.

How to drive it (``needs_reply`` is true exactly when nothing can be sent before the
server answers; each such wait is one round trip)::

    conn = ClientConnection(SMTPClientConfig(local_hostname="boat.example"))
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            write(conn.data_to_send())             # RFC 2920: flush before waiting
            if conn.replies_owed == 0:
                send the next command, or stop     # reading would wait for ever
            conn.receive_data(read())              # b"" when the server closed
        elif isinstance(event, TLSHandshakeNeeded):
            upgrade(); conn.start_tls_done()
        elif isinstance(event, Ready):
            write(conn.send(Authenticate(user, secret)))    # or straight to a Transaction
        elif isinstance(event, AuthSucceeded):
            write(conn.send(Transaction(sender, (Recipient(rcpt),), size=n)))
        elif isinstance(event, SendBody):
            for chunk in stored_message: write(conn.send(BodyChunk(chunk)))
            write(conn.send(EndOfBody()))
            if conn.state is ClientState.READY:    # pipelining: no need to wait
                write(conn.send(next_transaction_or_Quit()))
        elif isinstance(event, MessageResult):
            record(event)      # .delivered may leave the queue; .retry stays in it
            if conn.state is ClientState.READY: write(conn.send(next_or_Quit()))
        elif isinstance(event, ConnectionClosed):
            close(); break
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections import deque

from nosend_proto._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from nosend_proto._sasl import CLIENT_MECHANISMS, SaslClient
from nosend_proto._smtp_client_txn import Expect, Kind, Txn, plan_transaction
from nosend_proto._smtp_client_wire import ReplyReader, parse_ehlo
from nosend_proto.smtp_client_events import (
    NEED_DATA,
    Authenticate,
    AuthFailed,
    AuthSucceeded,
    BodyChunk,
    ClientCommand,
    ClientEvent,
    ConnectionClosed,
    EndOfBody,
    Extensions,
    Greeting,
    MessageResult,
    Quit,
    Ready,
    RecipientResult,
    Reply,
    SendBody,
    Sentinel,
    SessionFailed,
    SMTPClientConfig,
    TLSHandshakeNeeded,
    Transaction,
)

__all__ = ["ClientConnection", "ClientState", "MAX_AUTH_LINE"]

#: RFC 4954 section 4: 12288 octets is enough for any deployed mechanism's responses
#: and challenges; the longest SASL line we send or read.
MAX_AUTH_LINE = 12288

# A SASL exchange with more challenges than this is cancelled ("*"): none of ours needs
# more than three.
_MAX_AUTH_STEPS = 8


class ClientState(enum.Enum):
    """What the application may do now (see the table in the module docstring)."""

    GREETING = "greeting"  # waiting for the banner
    EHLO = "ehlo"  # EHLO or HELO sent
    STARTTLS = "starttls"  # STARTTLS sent
    TLS_PENDING = "tls-pending"  # 220 received; waiting for start_tls_done()
    READY = "ready"  # may send Authenticate, Transaction, Quit
    AUTH = "auth"  # a SASL exchange is running
    WAITING = "waiting"  # a transaction waits for the server (354, or lock-step replies)
    BODY = "body"  # send BodyChunk..., EndOfBody
    QUITTING = "quitting"  # QUIT sent
    CLOSED = "closed"


# States in which the application has nothing to send until a reply comes.
_WAIT_STATES = frozenset(
    {
        ClientState.GREETING,
        ClientState.EHLO,
        ClientState.STARTTLS,
        ClientState.AUTH,
        ClientState.WAITING,
        ClientState.QUITTING,
    }
)


_RSET = b"RSET\r\n"
_QUIT = b"QUIT\r\n"


class ClientConnection:
    """One SMTP client connection, sans I/O (see the module docstring for the loop).

    ``receive_data(bytes)`` (``b""`` when the server closed), ``next_event()`` (an event
    or ``NEED_DATA``), ``send(command)`` returns the bytes to write, ``data_to_send()``
    the bytes the engine produced itself (EHLO, SASL answers, lock-step commands, QUIT).
    ``replies_owed`` counts the replies the server still owes: when it is zero, waiting
    for data would wait forever, and the application must send a command.
    """

    def __init__(self, config: SMTPClientConfig) -> None:
        self.config = config
        self._state = ClientState.GREETING
        self._reader = ReplyReader(config.max_reply_line, config.max_reply_lines)
        self._out = bytearray()
        self._events: deque[ClientEvent] = deque()
        self._expect: deque[Expect] = deque([Expect(Kind.GREETING)])
        self._ext = Extensions()
        self._tls = config.tls_active
        self._helo_used = False
        self._eof = False
        self._closing = False  # a 421 or EOF is being wound up: write nothing more
        self._error: ProtocolError | None = None
        self._sasl: SaslClient | None = None
        self._auth_steps = 0
        self._authenticated: str | None = None
        self._server_open = False  # the server may be inside a transaction (RSET first)
        self._inflight: list[Txn] = []  # transactions without a MessageResult yet
        self._current: Txn | None = None  # the transaction whose body is being sent
        self._waiting: Txn | None = None  # the transaction WAITING waits for
        self._tls_injected = 0

    # -- public state ------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        """What the application may do now."""
        return self._state

    @property
    def extensions(self) -> Extensions:
        """What the last EHLO offered (forgotten after STARTTLS; empty after HELO)."""
        return self._ext

    @property
    def tls_active(self) -> bool:
        """True on SMTPS or after a completed STARTTLS."""
        return self._tls

    @property
    def authenticated(self) -> str | None:
        """The SASL mechanism of a successful AUTH, if any."""
        return self._authenticated

    @property
    def replies_owed(self) -> int:
        """Replies the server still owes for commands already sent (or being sent)."""
        return len(self._expect)

    @property
    def needs_reply(self) -> bool:
        """True when the application can send nothing more until the server answers.

        False in READY and BODY even with replies owed (pipelining: send on), and in
        TLS_PENDING (run the handshake). Each time it is true after a write is one round
        trip.
        """
        return self._state in _WAIT_STATES and bool(self._expect)

    @property
    def pipelining(self) -> bool:
        """True when commands go out without waiting (offered and allowed)."""
        return self.config.pipelining and "PIPELINING" in self._ext.keywords

    @property
    def chunking(self) -> bool:
        """True when bodies go out as BDAT (needs pipelining too, see the docstring)."""
        return self.pipelining and self.config.chunking and "CHUNKING" in self._ext.keywords

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes the server sent; ``b""`` means the server closed its side."""
        if self._state is ClientState.CLOSED:
            return
        if self._eof:
            raise LocalProtocolError("data received after the server closed")
        if not data:
            self._eof = True
            return
        if self._state is ClientState.TLS_PENDING:
            # RFC 3207 section 4: nothing sent in cleartext after the 220 may be read as
            # if it came over TLS (response injection, CVE-2011-0411).
            self._tls_injected += len(data)
            return
        self._reader.feed(bytes(data))

    def data_to_send(self) -> bytes:
        """The bytes the engine produced itself since the last call (may be empty)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- events ------------------------------------------------------------------------

    def next_event(self) -> ClientEvent | Sentinel:
        """Return the next event, or ``NEED_DATA`` when the server must say more."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except RemoteProtocolError as err:
            self._error = err
            self._state = ClientState.CLOSED
            raise

    def _next_event(self) -> ClientEvent | Sentinel:
        while not self._events:
            state = self._state
            if state is ClientState.CLOSED:
                return ConnectionClosed()
            if state is ClientState.TLS_PENDING:
                raise LocalProtocolError("run the TLS handshake, then call start_tls_done()")
            reply = self._reader.next_reply()
            if reply is None:
                if not self._eof:
                    return NEED_DATA
                self._wind_up(None)
                continue
            if reply.code == 421:
                # RFC 5321 section 3.8: the server is closing; whatever it answered is
                # answered with this, and nothing more will come.
                self._wind_up(reply)
                continue
            if not self._expect:
                raise RemoteProtocolError(f"unsolicited reply {reply.code}")
            self._on_reply(self._expect.popleft(), reply)
        return self._events.popleft()

    # -- replies -----------------------------------------------------------------------

    def _on_reply(self, expect: Expect, reply: Reply) -> None:
        kind = expect.kind
        if kind is Kind.GREETING:
            if reply.code == 220:
                self._events.append(Greeting(reply))
                self._hello(extended=True)
            else:
                # RFC 5321 section 3.1: a 554 greeting; the client should send QUIT.
                self._session_failed("greeting", reply)
        elif kind is Kind.EHLO or kind is Kind.HELO:
            self._on_hello(kind, reply)
        elif kind is Kind.STARTTLS:
            self._on_starttls(reply)
        elif kind is Kind.AUTH:
            self._on_auth(reply)
        elif kind is Kind.QUIT:
            self._close(reply)
        elif expect.txn is not None:
            self._on_txn_reply(expect, expect.txn, reply)

    def _write(self, data: bytes, kind: Kind, txn: Txn | None = None, index: int = 0) -> None:
        if self._closing:
            return
        self._out += data
        self._expect.append(Expect(kind, txn, index))

    def _hello(self, extended: bool) -> None:
        verb = "EHLO" if extended else "HELO"
        self._write(f"{verb} {self.config.local_hostname}\r\n".encode(), Kind[verb])
        self._state = ClientState.EHLO

    def _on_hello(self, kind: Kind, reply: Reply) -> None:
        if reply.code == 250:
            if kind is Kind.EHLO:
                self._ext = parse_ehlo(reply)
            else:
                self._ext = Extensions()
                self._helo_used = True
            self._after_hello()
        elif kind is Kind.EHLO and 500 <= reply.code < 600:
            # RFC 5321 section 4.1.1.1 / 3.2: a server that does not know EHLO answers
            # 5xx; the client then falls back to HELO.
            self._hello(extended=False)
        else:
            self._session_failed("hello", reply)

    def _after_hello(self) -> None:
        cfg = self.config
        if not self._tls and cfg.starttls and "STARTTLS" in self._ext.keywords:
            self._out += b"STARTTLS\r\n"
            self._expect.append(Expect(Kind.STARTTLS))
            self._state = ClientState.STARTTLS
        elif not self._tls and cfg.require_tls:
            # No AUTH and no MAIL in cleartext: the application asked for TLS.
            self._session_failed("tls-unavailable", None)
        else:
            self._ready()

    def _ready(self) -> None:
        self._state = ClientState.READY
        self._events.append(Ready(self._ext, self._tls, self._helo_used))

    def _on_starttls(self, reply: Reply) -> None:
        if reply.code == 220:
            if self._reader.pending():
                # RFC 3207 section 4 / CVE-2011-0411: replies that arrived together with
                # the 220 were never protected by TLS; reading them later would let a
                # man in the middle answer our first commands over TLS.
                raise RemoteProtocolError("data after the 220 reply to STARTTLS (injection)")
            self._state = ClientState.TLS_PENDING
            self._events.append(TLSHandshakeNeeded())
        elif self.config.require_tls:
            self._session_failed("tls-unavailable", reply)
        else:
            self._ready()

    def start_tls_done(self) -> None:
        """The TLS handshake after the 220 to STARTTLS succeeded: EHLO again.

        RFC 3207 section 4.2: everything learnt before TLS is discarded, the extensions
        included. The new EHLO is in ``data_to_send()``.
        """
        if self._state is not ClientState.TLS_PENDING:
            raise LocalProtocolError("start_tls_done() without a 220 reply to STARTTLS")
        if self._tls_injected:
            err = RemoteProtocolError("data after the 220 reply to STARTTLS (injection)")
            self._error = err
            self._state = ClientState.CLOSED
            raise err
        self._tls = True
        self._ext = Extensions()
        self._helo_used = False
        self._hello(extended=True)

    def _session_failed(self, reason: str, reply: Reply | None) -> None:
        self._events.append(SessionFailed(reason, reply))
        self._quit()

    def _quit(self) -> None:
        self._write(_QUIT, Kind.QUIT)
        self._state = ClientState.QUITTING

    def _close(self, reply: Reply | None) -> None:
        self._state = ClientState.CLOSED
        self._events.append(ConnectionClosed(reply))

    def _wind_up(self, reply: Reply | None) -> None:
        """A 421 (``reply``) or the server's EOF: answer everything in flight, close."""
        self._closing = True
        while self._expect:
            expect = self._expect.popleft()
            if expect.txn is not None:
                if reply is not None:
                    self._on_reply(expect, reply)
                elif not expect.txn.done:
                    self._finish(expect.txn, None, "connection-lost")
            elif expect.kind is Kind.AUTH and self._sasl is not None:
                reason = "refused" if reply is not None else "connection-lost"
                self._events.append(AuthFailed(self._sasl.mechanism, reply, reason))
                self._sasl = None
            # A 421 to the greeting, EHLO or STARTTLS is not that command's answer: the
            # session is over (RFC 5321 section 3.8), so no Ready or SessionFailed comes
            # before the ConnectionClosed that carries the 421.
        for txn in list(self._inflight):
            self._finish(txn, reply, None if reply else "connection-lost")
        self._current = None
        self._close(reply)

    # -- AUTH (RFC 4954) ---------------------------------------------------------------

    def _send_auth(self, cmd: Authenticate) -> None:
        if self._state is not ClientState.READY or self._expect:
            raise LocalProtocolError("AUTH only when ready and no reply is owed")
        if self.config.auth_requires_tls and not self._tls:
            self._events.append(AuthFailed(None, None, "tls-required"))
            return
        if "AUTH" not in self._ext.keywords:
            self._events.append(AuthFailed(None, None, "not-offered"))
            return
        allowed = {m.upper() for m in cmd.mechanisms}
        offered = self._ext.auth
        mech = next((m for m in CLIENT_MECHANISMS if m in allowed and m in offered), None)
        if mech is None:
            self._events.append(AuthFailed(None, None, "no-mechanism"))
            return
        try:
            sasl = SaslClient(
                mech, cmd.username, cmd.secret, cmd.authzid, host=cmd.host, port=cmd.port
            )
            initial = sasl.initial_response()
            line = f"AUTH {mech}\r\n".encode()
            if initial is not None:
                encoded = base64.b64encode(initial) or b"="  # RFC 4954 section 4: "="
                with_initial = b"AUTH " + mech.encode() + b" " + encoded + b"\r\n"
                if len(with_initial) <= self.config.max_command_line:
                    line = with_initial
                else:
                    # RFC 4954 section 4: too long for the command line; the response
                    # goes after the server's empty challenge (a fresh exchange).
                    sasl = SaslClient(
                        mech, cmd.username, cmd.secret, cmd.authzid, host=cmd.host, port=cmd.port
                    )
        except ValueError as err:
            raise LocalProtocolError(str(err)) from None
        self._sasl = sasl
        self._auth_steps = 0
        self._reader.max_line = max(self.config.max_reply_line, MAX_AUTH_LINE + 6)
        self._write(line, Kind.AUTH)
        self._state = ClientState.AUTH

    def _on_auth(self, reply: Reply) -> None:
        sasl = self._sasl
        assert sasl is not None
        if reply.code == 334 and not self._closing:
            self._auth_steps += 1
            try:
                challenge = base64.b64decode(reply.text.strip(), validate=True)
            except (binascii.Error, ValueError):
                challenge = None
            response = None if challenge is None else base64.b64encode(sasl.respond(challenge))
            if response is None or len(response) + 2 > MAX_AUTH_LINE:
                response = b"*"  # RFC 4954 section 4: cancel; the server answers 501
            if self._auth_steps > _MAX_AUTH_STEPS:
                response = b"*"
            self._write(response + b"\r\n", Kind.AUTH)
            return
        self._sasl = None
        self._reader.max_line = self.config.max_reply_line
        if self._state is ClientState.AUTH:
            self._state = ClientState.READY
        if 200 <= reply.code < 300:
            self._authenticated = sasl.mechanism
            self._events.append(AuthSucceeded(sasl.mechanism, reply))
        else:
            self._events.append(AuthFailed(sasl.mechanism, reply, "refused", sasl.error or ""))

    # -- transactions ------------------------------------------------------------------

    def _send_transaction(self, t: Transaction) -> None:
        if self._state is not ClientState.READY:
            raise LocalProtocolError(f"a Transaction cannot be sent in state {self._state.name}")
        plan = plan_transaction(t, self._ext)
        if isinstance(plan, str):
            # Refused locally, before a byte is sent (see the module docstring).
            self._events.append(MessageResult(t, None, (), plan))
            return
        txn = Txn(t, self.chunking, plan.allow_8bit, plan.dsn_dropped)
        commands: list[tuple[Kind, bytes, int]] = []
        # A BDAT transaction in flight may still leave the server inside it (every RCPT
        # refused: the BDAT gets 554 and MAIL stays open); RSET costs no round trip.
        if self._server_open or any(other.bdat for other in self._inflight):
            commands.append((Kind.RSET, _RSET, 0))  # RFC 5321 section 4.1.1.5
            self._server_open = False
        commands.append((Kind.MAIL, plan.mail, 0))
        commands += [(Kind.RCPT, line, index) for index, line in enumerate(plan.rcpts)]
        if not txn.bdat:
            commands.append((Kind.DATA, b"DATA\r\n", 0))
        if self.pipelining:
            # RFC 2920 section 3.1: RSET, MAIL and RCPT anywhere in a group, DATA last;
            # RFC 3030 section 4.2: BDAT may follow in the same group.
            for kind, line, index in commands:
                self._write(line, kind, txn, index)
        else:
            txn.unsent.extend(commands)
            self._advance(txn)
        self._inflight.append(txn)
        if txn.done:
            return  # lock-step and already over (cannot happen before a reply; safety)
        if txn.bdat:
            self._begin_body(txn)
        else:
            self._wait_for(txn)

    def _wait_for(self, txn: Txn) -> None:
        self._state = ClientState.WAITING
        self._waiting = txn

    def _advance(self, txn: Txn) -> None:
        """Lock-step: send the transaction's next command, if it should go on."""
        if txn.unsent and not txn.done:
            kind, line, index = txn.unsent.popleft()
            self._write(line, kind, txn, index)

    def _begin_body(self, txn: Txn) -> None:
        self._current = txn
        self._waiting = None
        self._state = ClientState.BODY
        self._events.append(SendBody(txn.transaction))

    def _on_txn_reply(self, expect: Expect, txn: Txn, reply: Reply) -> None:
        kind = expect.kind
        ok = 200 <= reply.code < 300
        if kind is Kind.RSET:
            pass  # a failed RSET shows in the MAIL reply that follows
        elif kind is Kind.MAIL:
            txn.mail_accepted = ok
            if not ok:
                txn.failure = reply
                if not self.pipelining:
                    self._finish(txn, reply)  # RFC 5321 section 3.3: nothing more to send
                    return
        elif kind is Kind.RCPT:
            result = RecipientResult(txn.transaction.recipients[expect.index], reply)
            txn.results.append(result)
            self._events.append(result)
            if not self.pipelining and txn.unsent and txn.unsent[0][0] is Kind.DATA:
                # Lock-step, every RCPT is answered and only DATA is left.
                if not any(r.accepted for r in txn.results):
                    self._server_open = txn.mail_accepted
                    self._finish(txn, None, "no-recipients")
                    return
        elif kind is Kind.DATA:
            if reply.code == 354 and not self._closing:
                if txn.failure is not None or not any(r.accepted for r in txn.results):
                    # RFC 2920 section 3.1: a 354 must be answered with a body even
                    # when nothing else succeeded; an empty one ends it at once.
                    txn.local_reason = "no-recipients"
                    self._write(b".\r\n", Kind.DOT, txn)
                else:
                    self._begin_body(txn)
                return
            if txn.failure is None:
                txn.failure = reply
            self._server_open = txn.mail_accepted
            self._finish(txn, txn.failure)
            return
        elif kind is Kind.BDAT:
            if not ok and txn.failure is None:
                txn.failure = reply  # RFC 3030 section 2: the transaction has failed
        elif kind is Kind.BDAT_LAST or kind is Kind.DOT:
            final = txn.failure or reply
            if not (200 <= final.code < 300) and txn.bdat and txn.mail_accepted:
                self._server_open = True
            self._finish(txn, final, txn.local_reason)
            return
        self._advance(txn)

    def _finish(self, txn: Txn, reply: Reply | None, local: str | None = None) -> None:
        if txn.done:
            return
        txn.done = True
        txn.unsent.clear()
        self._inflight.remove(txn)
        self._events.append(
            MessageResult(txn.transaction, reply, tuple(txn.results), local, txn.dsn_dropped)
        )
        if txn is self._waiting:
            self._waiting = None
            if self._state is ClientState.WAITING:
                self._state = ClientState.READY
        if txn is self._current:
            # Only a 421 or the server's EOF ends a transaction whose body is being sent.
            self._current = None

    # -- body --------------------------------------------------------------------------

    def _send_chunk(self, data: bytes) -> None:
        txn = self._body_txn()
        if not txn.allow_8bit and not data.isascii():
            err = LocalProtocolError(
                "8-bit octets in a body that may not carry them (RFC 6152): close the connection"
            )
            self._error = err
            self._state = ClientState.CLOSED
            raise err
        content = txn.line_ends.feed(data)
        if not txn.bdat:
            self._out += txn.stuffer.feed(content)
            return
        txn.pending += content
        if len(txn.pending) >= self.config.bdat_chunk_size:
            self._bdat(txn, last=False)

    def _bdat(self, txn: Txn, last: bool) -> None:
        # RFC 3030 section 2: "BDAT" SP chunk-size [ SP end-marker ] CRLF, then octets.
        size = len(txn.pending)
        head = f"BDAT {size} LAST\r\n" if last else f"BDAT {size}\r\n"
        kind = Kind.BDAT_LAST if last else Kind.BDAT
        self._write(head.encode() + bytes(txn.pending), kind, txn)
        txn.pending.clear()

    def _end_body(self) -> None:
        txn = self._body_txn()
        tail = txn.line_ends.finish()
        self._current = None
        if txn.bdat:
            txn.pending += tail
            self._bdat(txn, last=True)
        else:
            # RFC 5321 section 4.1.1.4: the body ends with CRLF "." CRLF.
            self._out += txn.stuffer.feed(tail)
            self._write(b".\r\n", Kind.DOT, txn)
        if self.pipelining:
            self._state = ClientState.READY
        else:
            self._wait_for(txn)

    def _body_txn(self) -> Txn:
        if self._state is not ClientState.BODY or self._current is None:
            raise LocalProtocolError("no body is being sent: wait for SendBody")
        return self._current

    # -- commands ----------------------------------------------------------------------

    def send(self, command: ClientCommand) -> bytes:
        """Turn the application's command into the bytes to write.

        What the engine queued itself comes first, so the result may also be written
        instead of ``data_to_send()``. Commands that are refused locally (AuthFailed,
        MessageResult) return nothing and show as the next event.
        """
        if self._error is not None:
            raise self._error
        if isinstance(command, BodyChunk):
            self._send_chunk(command.data)
        elif isinstance(command, EndOfBody):
            self._end_body()
        elif isinstance(command, Transaction):
            self._send_transaction(command)
        elif isinstance(command, Authenticate):
            self._send_auth(command)
        elif isinstance(command, Quit):
            if self._state is ClientState.QUITTING and self._expect:
                return self.data_to_send()  # the engine already sent QUIT
            if self._state is not ClientState.READY:
                raise LocalProtocolError(f"QUIT cannot be sent in state {self._state.name}")
            self._quit()
        else:
            raise LocalProtocolError(f"send() takes a command, not {type(command).__name__}")
        return self.data_to_send()
