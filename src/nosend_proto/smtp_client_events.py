"""Public values of the SMTP client engine: its configuration, commands and events.

Commands are what the application passes to ``ClientConnection.send()``
(:class:`Transaction`, :class:`BodyChunk`, :class:`EndOfBody`, :class:`Authenticate`,
:class:`Quit`); events are what ``next_event()`` returns. Replies from the server are the
package's :class:`~nosend_proto.smtp_events.Reply`, so both engines speak of one type.
The state machine that connects them is described in ``nosend_proto.smtp_client``.

Must not: hold logic beyond validating its own values (addresses are checked here so that
no CR, LF or other injection ever reaches a command line).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nosend_proto import _smtp_grammar as grammar
from nosend_proto._errors import LocalProtocolError
from nosend_proto._sentinels import NEED_DATA, Sentinel
from nosend_proto.smtp_events import OriginalRecipient, Reply

__all__ = [
    "NEED_DATA",
    "Sentinel",
    "Reply",
    "OriginalRecipient",
    "SMTPClientConfig",
    "Extensions",
    "Recipient",
    "Transaction",
    "BodyChunk",
    "EndOfBody",
    "Authenticate",
    "Quit",
    "Greeting",
    "TLSHandshakeNeeded",
    "Ready",
    "SessionFailed",
    "AuthSucceeded",
    "AuthFailed",
    "SendBody",
    "RecipientResult",
    "MessageResult",
    "ConnectionClosed",
    "ClientCommand",
    "ClientEvent",
]


@dataclass(frozen=True, slots=True)
class SMTPClientConfig:
    """What one SMTP client connection needs to know.

    ``local_hostname`` is the name given in EHLO/HELO (RFC 5321 section 4.1.1.1).
    ``starttls``: use STARTTLS when the server offers it (RFC 3207). ``require_tls``:
    refuse to authenticate or send mail in cleartext; without TLS the session ends with
    :class:`SessionFailed`. ``tls_active``: the transport is TLS already (SMTPS, RFC 8314).
    ``auth_requires_tls``: :class:`Authenticate` in cleartext fails locally (no secret
    ever crosses the wire in the clear). ``pipelining`` and ``chunking`` allow the use of
    those extensions when offered (RFC 2920, RFC 3030). ``max_reply_line`` and
    ``max_reply_lines`` bound one reply (RFC 5321 section 4.5.3.1.5 says 512 octets; real
    servers are given some slack); ``max_command_line`` is the longest command line we
    send, which decides whether an AUTH initial response fits (RFC 4954 section 4).
    ``bdat_chunk_size``: body bytes are gathered into BDAT chunks of about this size.
    """

    local_hostname: str
    starttls: bool = True
    require_tls: bool = False
    tls_active: bool = False
    auth_requires_tls: bool = True
    pipelining: bool = True
    chunking: bool = True
    max_reply_line: int = 2048
    max_reply_lines: int = 200
    max_command_line: int = 512
    bdat_chunk_size: int = 64 * 1024

    def __post_init__(self) -> None:
        name = self.local_hostname
        # RFC 5321 section 4.1.1.1 / RFC 6531 section 3.7.1: a Domain or address literal,
        # in ASCII (A-labels).
        if not name.isascii() or not grammar.is_domain(name):
            raise LocalProtocolError("local_hostname must be an ASCII domain or literal")
        if self.max_reply_line < 512 or self.max_reply_lines < 1:
            raise LocalProtocolError("max_reply_line must be >= 512, max_reply_lines >= 1")
        if self.max_command_line < 512 or self.bdat_chunk_size < 1:
            raise LocalProtocolError("max_command_line must be >= 512, bdat_chunk_size >= 1")


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the last EHLO reply offered (RFC 5321 section 4.1.1.1); empty after HELO.

    ``keywords`` are upper-cased. ``size`` is the SIZE limit (RFC 1870 section 4):
    ``None`` when SIZE was not offered, ``0`` when offered without a limit. ``auth``
    lists the SASL mechanisms of the AUTH keyword (RFC 4954 section 3), upper-cased.
    """

    keywords: frozenset[str] = frozenset()
    size: int | None = None
    auth: tuple[str, ...] = ()

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.upper() in self.keywords


def _check_mailbox(address: str, *, null_ok: bool, postmaster_ok: bool, what: str) -> None:
    # The server's grammar (RFC 5321 section 4.1.2, RFC 6531 section 3.3) also keeps CR,
    # LF and spaces out of the command line.
    if grammar.parse_mailbox(f"<{address}>", null_ok=null_ok, postmaster_ok=postmaster_ok) is None:
        raise LocalProtocolError(f"invalid {what} address {address!r}")


_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})


@dataclass(frozen=True, slots=True)
class Recipient:
    """One RCPT TO: the mailbox, and DSN parameters (RFC 3461 sections 4.1 and 4.2).

    ``notify`` is ``("NEVER",)`` or drawn from SUCCESS, FAILURE, DELAY; ``orcpt`` the
    original recipient. Both are sent only when the server offers DSN.
    """

    address: str
    notify: tuple[str, ...] | None = None
    orcpt: OriginalRecipient | None = None

    def __post_init__(self) -> None:
        _check_mailbox(self.address, null_ok=False, postmaster_ok=True, what="recipient")
        if self.notify is not None:
            words = self.notify
            if words != ("NEVER",) and (
                not words or not set(words) <= _NOTIFY_WORDS or len(set(words)) != len(words)
            ):
                raise LocalProtocolError(f"invalid NOTIFY {words!r} (RFC 3461 section 4.1)")
        if self.orcpt is not None and not self.orcpt.addr_type.isalnum():
            raise LocalProtocolError("ORCPT address type must be a keyword such as rfc822")


@dataclass(frozen=True, slots=True)
class Transaction:
    """One message to send: ``send(Transaction(...))`` (RFC 5321 section 3.3).

    ``mail_from`` is the reverse path (``""`` for ``<>``). ``size`` is the message's size
    in octets as sent (CRLF line ends; an estimate is allowed, RFC 1870 section 4): sent
    as SIZE= and checked against the server's limit before anything is sent; without
    it only the server checks, after the body. ``eight_bit``: ``True`` the body holds
    8-bit octets (BODY=8BITMIME is required, RFC 6152); ``False`` it is 7-bit ASCII;
    ``None`` (unknown) declares BODY=8BITMIME whenever the server offers it. A body
    octet over 127 that the transaction may not carry raises ``LocalProtocolError``.
    ``smtputf8`` asks for RFC 6531 handling (implied by a non-ASCII address). ``ret``
    (FULL/HDRS) and ``envid`` are DSN parameters (RFC 3461 sections 4.3, 4.4), sent only
    when the server offers DSN.
    """

    mail_from: str
    recipients: tuple[Recipient, ...]
    size: int | None = None
    eight_bit: bool | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None

    def __post_init__(self) -> None:
        _check_mailbox(self.mail_from, null_ok=True, postmaster_ok=False, what="sender")
        if not self.recipients or not all(isinstance(r, Recipient) for r in self.recipients):
            raise LocalProtocolError("a transaction needs a tuple of Recipient values")
        if self.size is not None and not 0 <= self.size < 10**20:
            raise LocalProtocolError("size must be 0 to 20 digits (RFC 1870 section 6)")
        if self.ret is not None and self.ret not in ("FULL", "HDRS"):
            raise LocalProtocolError("ret must be FULL or HDRS (RFC 3461 section 4.3)")
        envid = self.envid
        if envid is not None and (
            not envid or not envid.isprintable() or len(grammar.xtext_encode(envid)) > 100
        ):
            raise LocalProtocolError("envid must be printable, 100 xtext characters at most")

    @property
    def needs_smtputf8(self) -> bool:
        """True when the server must offer SMTPUTF8 (asked for, or a non-ASCII address)."""
        return (
            self.smtputf8
            or not self.mail_from.isascii()
            or not all(r.address.isascii() for r in self.recipients)
        )


@dataclass(frozen=True, slots=True)
class BodyChunk:
    """Part of the message body, in order, after :class:`SendBody`.

    Line ends may be anything: bare CR and bare LF are sent as CRLF (RFC 5321 section
    2.3.8; no SMTP smuggling can start here), dots are stuffed for DATA (section 4.5.2).
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfBody:
    """The body is complete: the engine ends it (``CRLF.CRLF`` or ``BDAT n LAST``)."""


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Authenticate (RFC 4954) with the strongest of ``mechanisms`` the server offers.

    ``secret`` is the password, or the OAuth 2.0 bearer token for XOAUTH2 and
    OAUTHBEARER (RFC 7628); it never appears in a ``repr``. ``host`` and ``port`` are
    passed to OAUTHBEARER (RFC 7628 section 3.1).
    """

    username: str
    secret: str = field(repr=False)
    mechanisms: tuple[str, ...] = ("CRAM-MD5", "PLAIN", "LOGIN")
    authzid: str = ""
    host: str = ""
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Quit:
    """End the session (RFC 5321 section 4.1.1.10); may follow pipelined commands."""


ClientCommand = Transaction | BodyChunk | EndOfBody | Authenticate | Quit


# ---------------------------------------------------------------------------------------
# Events: what the server said, as the application must act on it.


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's 220 banner (RFC 5321 section 3.1); the engine sends EHLO itself."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class TLSHandshakeNeeded:
    """The server said 220 to STARTTLS: run the TLS handshake, then ``start_tls_done()``.

    Flush what ``data_to_send()`` holds first (it is empty: STARTTLS was the last
    command). Nothing the server sent after its 220 may be fed to the engine: it would be
    a response injection (RFC 3207 section 4 / CVE-2011-0411) and raises.
    """


@dataclass(frozen=True, slots=True)
class Ready:
    """The session is open: send :class:`Authenticate`, :class:`Transaction` or
    :class:`Quit`. ``tls`` says whether the transport is TLS; ``helo`` is true when the
    server refused EHLO and HELO was used (no extensions)."""

    extensions: Extensions
    tls: bool
    helo: bool = False


@dataclass(frozen=True, slots=True)
class SessionFailed:
    """The session cannot be used; the engine has queued QUIT (flush, read, close).

    ``reason``: ``"greeting"`` (no 220, RFC 5321 section 3.1), ``"hello"`` (EHLO and
    HELO refused), ``"tls-unavailable"`` (``require_tls`` and STARTTLS not offered or
    refused). ``reply`` is the server's reply that decided it, if any.
    """

    reason: str
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class AuthSucceeded:
    """235: authenticated with ``mechanism`` (RFC 4954 section 6)."""

    mechanism: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """Authentication failed; the session stays open (RFC 4954 section 4).

    ``reply`` is the server's (535, 454, 504, ...) or ``None`` when the engine refused
    locally: ``reason`` is then ``"tls-required"`` (``auth_requires_tls`` in cleartext),
    ``"no-mechanism"`` (none of the allowed mechanisms offered) or ``"not-offered"``.
    ``error`` is the server's error report after a failed token mechanism (RFC 7628
    section 3.2.2), else empty.
    """

    mechanism: str | None
    reply: Reply | None
    reason: str = "refused"
    error: str = ""


@dataclass(frozen=True, slots=True)
class SendBody:
    """Send the body now: :class:`BodyChunk` events, then :class:`EndOfBody`."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The server's answer to one RCPT TO (RFC 5321 section 4.1.1.3)."""

    recipient: Recipient
    reply: Reply

    @property
    def accepted(self) -> bool:
        """2xx: the recipient is part of the transaction."""
        return 200 <= self.reply.code < 300

    @property
    def temporary(self) -> bool:
        """4xx: try this recipient again later (RFC 5321 section 4.2.1)."""
        return 400 <= self.reply.code < 500

    @property
    def permanent(self) -> bool:
        """5xx (or anything else that is neither 2xx nor 4xx): do not retry as is."""
        return not self.accepted and not self.temporary


@dataclass(frozen=True, slots=True)
class MessageResult:
    """The outcome of one :class:`Transaction`; exactly one comes for each.

    ``reply`` is the server's final word: the reply after the body, or the reply that
    ended the transaction early (MAIL refused, DATA refused). It is ``None`` when the
    engine refused the message locally or the connection ended first; ``local_reason``
    then says why: ``"size"`` (over the server's SIZE, RFC 1870 section 6), ``"8bitmime"``
    (8-bit body, the server did not offer 8BITMIME, RFC 6152), ``"smtputf8"`` (RFC 6531
    section 3.2), ``"no-recipients"`` (every RCPT refused: no body sent) or
    ``"connection-lost"``. ``recipients`` holds the answered RCPTs in order.
    ``dsn_dropped``: DSN parameters were asked for but the server does not offer DSN
    (RFC 3461 section 5.2.2: the application may owe a "relayed" notification).
    """

    transaction: Transaction
    reply: Reply | None
    recipients: tuple[RecipientResult, ...] = ()
    local_reason: str | None = None
    dsn_dropped: bool = False

    @property
    def accepted(self) -> bool:
        """The server took responsibility for the message for the accepted recipients."""
        return (
            self.reply is not None
            and 200 <= self.reply.code < 300
            and any(r.accepted for r in self.recipients)
        )

    @property
    def temporary(self) -> bool:
        """Not accepted, and worth retrying later (4xx, or the connection was lost)."""
        if self.accepted:
            return False
        if self.reply is None:
            return self.local_reason == "connection-lost"
        return 400 <= self.reply.code < 500

    @property
    def delivered(self) -> tuple[Recipient, ...]:
        """The recipients the server took responsibility for (none unless accepted)."""
        if not self.accepted:
            return ()
        return tuple(r.recipient for r in self.recipients if r.accepted)

    @property
    def retry(self) -> tuple[Recipient, ...]:
        """The recipients to try again later; the others were delivered or failed.

        A recipient refused with 4xx is retried whatever became of the message; one
        accepted (or never answered) is retried when the message failed temporarily
        (4xx, or the connection was lost). A 5xx for the recipient or the message, or a
        local refusal, is final: the application owes the sender a bounce.
        """
        out = []
        for index, recipient in enumerate(self.transaction.recipients):
            result = self.recipients[index] if index < len(self.recipients) else None
            if result is not None and result.temporary:
                out.append(recipient)
            elif (result is None or result.accepted) and self.temporary:
                out.append(recipient)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The session is over (221 to QUIT, a 421, or the server closed): close the socket.

    ``reply`` is the server's last reply (221 or 421), ``None`` when it just closed.
    Transactions still in flight got a :class:`MessageResult` with
    ``local_reason="connection-lost"`` (or the 421) just before: none was delivered.
    """

    reply: Reply | None = None


ClientEvent = (
    Greeting
    | TLSHandshakeNeeded
    | Ready
    | SessionFailed
    | AuthSucceeded
    | AuthFailed
    | SendBody
    | RecipientResult
    | MessageResult
    | ConnectionClosed
)
