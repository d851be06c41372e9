"""Public values of the SMTP server engine: replies and events.

The conversation's states (:class:`~nosend_proto.smtp_state.SMTPState`) and every move
between them are one table, read top to bottom in ``nosend_proto._smtp_machine``: in
short, a positive reply to an event moves the conversation on (Hello/250 to READY,
MailFrom/250 to MAIL, RcptTo/250 to RCPT, DataStart/354 to DATA, StartTLS/220 to
TLS_PENDING, Quit/221 to CLOSED), a 4xx/5xx leaves it where it was, and a whole body
(EndOfData, DataRejected) ends the transaction whatever the reply.

Rules the application follows:

* Every event except :class:`DataChunk`, :class:`Bdat` and :class:`ConnectionClosed` asks
  for exactly one reply: ``conn.send(Reply(...))`` before the next ``next_event()``
  (``LocalProtocolError`` otherwise). Events that carry a ready-made ``reply``
  (:class:`ProtocolViolation`, :class:`DataRejected`, :class:`AuthChallenge`) may be
  passed to ``send()`` directly.
* The engine learns the outcome from the reply: a 2xx to :class:`MailFrom` opens the
  transaction, a 2xx to :class:`RcptTo` adds a recipient, 354 to :class:`DataStart` starts
  the body, 220 to :class:`StartTLS` waits for the handshake, 235 to :class:`AuthAttempt`
  authenticates, 221 to :class:`Quit` closes. A 4xx/5xx changes nothing. A 421 may be sent
  at any time and closes the connection (RFC 5321 section 3.8).
* A body arrives as :class:`DataChunk` events, already dot-unstuffed for DATA (RFC 5321
  section 4.5.2), then :class:`EndOfData`, or :class:`DataRejected` when the engine
  itself refuses the message (too big, bare CR/LF, overlong line); the application then
  discards what it wrote and sends the reply.
* Enhanced status codes (RFC 2034, RFC 3463) are added by the engine when the application
  leaves ``Reply.enhanced`` empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nosend_proto._errors import LocalProtocolError
from nosend_proto._sasl import Credentials
from nosend_proto._sentinels import NEED_DATA, Sentinel

__all__ = [
    "NEED_DATA",
    "Sentinel",
    "Reply",
    "MailParams",
    "RcptParams",
    "OriginalRecipient",
    "Hello",
    "MailFrom",
    "RcptTo",
    "DataStart",
    "Bdat",
    "DataChunk",
    "BdatChunkEnd",
    "EndOfData",
    "DataRejected",
    "Reset",
    "Verify",
    "Noop",
    "Help",
    "StartTLS",
    "AuthChallenge",
    "AuthAttempt",
    "Quit",
    "ProtocolViolation",
    "ConnectionClosed",
    "SMTPEvent",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply (RFC 5321 section 4.2).

    ``text`` may hold several lines separated by ``"\\n"``; the engine renders them as a
    multi-line reply (``250-first``, ``250 last``). ``enhanced`` is an RFC 3463 code such
    as ``"2.1.0"``; when ``None`` the engine chooses one from the command being answered.
    """

    code: int
    text: str = ""
    enhanced: str | None = None

    def __post_init__(self) -> None:
        # Every application reply passes here, so the checks are one set lookup, two
        # substring scans and one regular expression (no Python loop over the parts).
        code = self.code
        if not isinstance(code, int) or code not in _REPLY_CODES:
            raise LocalProtocolError(f"invalid SMTP reply code {code!r}")
        if "\r" in self.text or "\0" in self.text:
            raise LocalProtocolError("reply text must not contain CR or NUL")
        enhanced = self.enhanced
        if enhanced is not None and (
            not isinstance(enhanced, str)
            or _ENHANCED_RE.fullmatch(enhanced) is None
            or enhanced[0] != str(code // 100)
        ):
            # RFC 3463 section 2: class.subject.detail, class equal to the reply's.
            raise LocalProtocolError(f"invalid enhanced status code {enhanced!r}")


# RFC 5321 section 4.2: three digits, the first 2-5, the second 0-5.
_REPLY_CODES = frozenset(code for code in range(200, 560) if code % 100 < 60)
# RFC 3463 section 2: class "." subject "." detail, subject and detail of 1 to 3 digits.
_ENHANCED_RE = re.compile(r"[2-5]\.[0-9]{1,3}\.[0-9]{1,3}")


# ---------------------------------------------------------------------------------------
# Parameters of MAIL and RCPT (RFC 5321 section 4.1.1.11 and the extensions' RFCs).


@dataclass(frozen=True, slots=True)
class MailParams:
    """ESMTP parameters of MAIL FROM, already checked against what EHLO offered.

    ``size``: SIZE=, the client's estimate (RFC 1870). ``body``: ``"7BIT"`` or
    ``"8BITMIME"`` (RFC 6152). ``smtputf8``: the SMTPUTF8 keyword (RFC 6531).
    ``ret`` (``"FULL"``/``"HDRS"``) and ``envid`` (xtext-decoded) are DSN (RFC 3461
    section 4.3, 4.4). ``auth``: the xtext-decoded AUTH= identity, ``"<>"`` when the
    client said it does not know one (RFC 4954 section 5).
    """

    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None


@dataclass(frozen=True, slots=True)
class OriginalRecipient:
    """ORCPT= of RCPT TO (RFC 3461 section 4.2): address type and decoded address."""

    addr_type: str
    address: str


@dataclass(frozen=True, slots=True)
class RcptParams:
    """ESMTP parameters of RCPT TO (RFC 3461 section 4.1, 4.2).

    ``notify`` is ``None`` when absent, else ``("NEVER",)`` or a tuple drawn from
    ``SUCCESS``, ``FAILURE``, ``DELAY``.
    """

    notify: tuple[str, ...] | None = None
    orcpt: OriginalRecipient | None = None


# ---------------------------------------------------------------------------------------
# Events: bytes from the client, turned into what the application must decide.


@dataclass(frozen=True, slots=True)
class Hello:
    """HELO or EHLO (RFC 5321 section 4.1.1.1). Reply 250 (or refuse with 5xx).

    For EHLO the engine appends the extension keywords to a 250 reply; the reply's
    text should start with the server's hostname. A successful Hello also resets any
    transaction (RFC 5321 section 4.1.4).
    """

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class MailFrom:
    """MAIL FROM (RFC 5321 section 4.1.1.2). ``reverse_path`` is ``""`` for ``<>``.

    The mailbox is given as the client wrote it (quoted local part kept), without the
    angle brackets and without any source route (RFC 5321 section 4.1.1.3: ignored).
    """

    reverse_path: str
    params: MailParams


@dataclass(frozen=True, slots=True)
class RcptTo:
    """RCPT TO (RFC 5321 section 4.1.1.3). ``forward_path`` is the mailbox, or
    ``"postmaster"`` (any case, as sent) for ``<postmaster>`` without a domain."""

    forward_path: str
    params: RcptParams


@dataclass(frozen=True, slots=True)
class DataStart:
    """DATA (RFC 5321 section 4.1.1.4): reply 354 to receive the body, or refuse."""


@dataclass(frozen=True, slots=True)
class Bdat:
    """A BDAT command (RFC 3030 section 2) was read; needs *no* reply of its own.

    Its ``size`` octets follow as :class:`DataChunk` events, then :class:`BdatChunkEnd`
    (not ``last``) or :class:`EndOfData` (``last``), or :class:`DataRejected`; that one
    gets the reply. ``accepted`` is false when the engine refuses the chunk (BDAT not
    offered, out of sequence, no valid recipients): its octets are then dropped, no
    DataChunk comes, and a :class:`ProtocolViolation` follows instead.
    """

    size: int
    last: bool
    accepted: bool = True


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Part of the message body, in order; needs no reply.

    For DATA the dot-stuffing is already undone (RFC 5321 section 4.5.2) and the final
    ``CRLF.CRLF`` removed (the last line's CRLF is kept).
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class BdatChunkEnd:
    """A non-LAST BDAT chunk was fully received: reply 250 (or 4xx/5xx to fail the
    transaction, RFC 3030 section 2)."""

    size: int


@dataclass(frozen=True, slots=True)
class EndOfData:
    """The body is complete. Make it durable, then reply 250 (or refuse)."""


@dataclass(frozen=True, slots=True)
class DataRejected:
    """The engine refuses the body it just read: discard it and send ``reply``.

    ``reason`` is for the log: ``"size"`` (over ``max_message_size``, 552 5.3.4),
    ``"bare-newline"`` (bare CR or LF under the ``"reject"`` policy) or
    ``"line-length"`` (a line over ``max_text_line``).
    """

    reply: Reply
    reason: str


@dataclass(frozen=True, slots=True)
class Reset:
    """RSET (RFC 5321 section 4.1.1.5): reply 250; the transaction is dropped."""


@dataclass(frozen=True, slots=True)
class Verify:
    """VRFY (RFC 5321 section 4.1.1.6): the application decides; 252 is the usual answer
    (RFC 5321 section 3.5.3)."""

    argument: str


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP (RFC 5321 section 4.1.1.9): reply 250."""


@dataclass(frozen=True, slots=True)
class Help:
    """HELP (RFC 5321 section 4.1.1.8): reply 214. ``topic`` may be empty."""

    topic: str


@dataclass(frozen=True, slots=True)
class StartTLS:
    """STARTTLS (RFC 3207 section 4): reply 220, flush, run the TLS handshake, then call
    ``conn.start_tls_done()``; or reply 454 to stay in cleartext."""


@dataclass(frozen=True, slots=True)
class AuthChallenge:
    """The SASL exchange (RFC 4954 section 4) needs a challenge sent: ``send(event)``.

    Sending any other reply (4xx/5xx) ends the exchange instead.
    """

    reply: Reply
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """AUTH finished its SASL exchange: check ``credentials``, reply 235 (success,
    RFC 4954 section 6), 535 5.7.8 (bad credentials) or 454 4.7.0 (temporary failure)."""

    credentials: Credentials


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT (RFC 5321 section 4.1.1.10): reply 221, flush, close."""


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The client broke the protocol (syntax, sequence, limits): send ``reply``.

    ``reason`` is for the log. When ``close`` is true (too many errors, or the input
    cannot be resynchronised) the engine is closed after the reply: flush and close.
    """

    reply: Reply
    reason: str
    close: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed, or the engine closed after a 221/421: close the socket.

    A body that was being received is incomplete and must be discarded.
    """


SMTPEvent = (
    Hello
    | MailFrom
    | RcptTo
    | DataStart
    | Bdat
    | DataChunk
    | BdatChunkEnd
    | EndOfData
    | DataRejected
    | Reset
    | Verify
    | Noop
    | Help
    | StartTLS
    | AuthChallenge
    | AuthAttempt
    | Quit
    | ProtocolViolation
    | ConnectionClosed
)
