"""The backend interface: what the SMTP and POP3 sessions ask of policy and storage.

Owns: the small interface, in the style of go-smtp's ``Backend``/``Session``, through which
a session reaches everything that is not the wire. For SMTP, one
:class:`SMTPBackendSession` per connection answers MAIL FROM and RCPT TO with a reply,
checks credentials, opens a :class:`BodySink` for the message body and forgets the
envelope on reset. For POP3, one :class:`POP3BackendSession` per connection checks
credentials and opens the :class:`Maildrop` of the mailbox that logged in (list, read,
mark deleted, commit at QUIT, close without deleting). nosend's own policy, delivery and
reports are the default backend, :mod:`nosend_runners.mail.backend`; a project that embeds
the sessions can bring its own (README.md, "Bring your own backend").

Must not: know sockets, TLS or timeouts (the sessions keep those) or any store format.

What the sessions keep for every backend: the engine and its replies, timeouts, TLS,
flushing, the graceful-shutdown guard around a body and its commit, and the protection
against password guessing (the per-client lockout and the delay after each failure,
:mod:`nosend_runners.session.login`).

Blocking calls: the methods marked *blocking* below run in a worker thread
(``authenticate`` in the hashing threads, the maildrop's methods in the disk threads);
every other method runs on the event loop and must return quickly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from nosend_proto import Credentials, Reply
from nosend_proto.smtp_events import MailParams, RcptParams

if TYPE_CHECKING:
    from nosend_runners.session.boundary import SessionContext

__all__ = [
    "Authenticator",
    "SMTPOffer",
    "BodyInfo",
    "BodySink",
    "SMTPBackendSession",
    "SMTPBackend",
    "POP3Offer",
    "MaildropEntry",
    "Maildrop",
    "MaildropInUse",
    "POP3BackendSession",
    "POP3Backend",
]


class Authenticator(Protocol):
    """Checking credentials (SMTP AUTH; POP3 USER/PASS, APOP, AUTH)."""

    def can_verify(self, credentials: Credentials) -> bool:
        """Whether ``credentials`` can be checked at all (a password, or a digest for
        a user with a shared secret). ``False`` refuses them without counting a failure:
        clients such as smtplib try CRAM-MD5 first whenever it is offered."""
        ...

    def authenticate(self, credentials: Credentials) -> str | None:
        """The user ``credentials`` prove, or ``None``. *Blocking* (password hashing)."""
        ...


@dataclass(frozen=True, slots=True)
class SMTPOffer:
    """What the SMTP engine offers one connection.

    ``max_recipients`` and ``max_message_size`` (0: no SIZE limit, RFC 1870) bound a
    transaction; ``auth_mechanisms`` are the SASL mechanisms to advertise;
    ``cleartext_auth`` says whether a password may cross this connection without TLS
    (RFC 4954 section 4: else AUTH is neither advertised nor accepted before STARTTLS).
    """

    max_recipients: int
    max_message_size: int
    auth_mechanisms: tuple[str, ...]
    cleartext_auth: bool


@dataclass(frozen=True, slots=True)
class BodyInfo:
    """What a backend may want to know about the message it is about to receive.

    ``helo``: the name the client gave in HELO/EHLO; ``protocol``: the ``with`` value of
    a ``Received:`` field (RFC 5321 section 4.4, e.g. ``ESMTPSA``); ``user``: the
    authenticated user, or ``None``.
    """

    helo: str | None
    protocol: str
    user: str | None


class BodySink(Protocol):
    """Where one message body goes, chunk by chunk (dot-unstuffed, never whole).

    The session calls ``write`` for each batch of body octets, then ``finish`` with the
    last batch once the body ended (the final dot, or BDAT LAST), or ``abort`` when the
    transaction ends without a commit. A sink that fails keeps reading quietly (set
    ``failed``) and answers the failure in ``finish``: the client must send the whole
    body before it may hear the reply.
    """

    @property
    def failed(self) -> bool:
        """Whether the message can no longer be accepted (BDAT ends the transaction)."""
        ...

    @property
    def size(self) -> int:
        """Body octets taken so far (for the log)."""
        ...

    async def write(self, data: bytes) -> None:
        """Take the next body octets."""
        ...

    async def finish(self, data: bytes) -> Reply:
        """Take the last octets and commit: reply 250 only once the message is safe
        (DESIGN invariant 1), else the error to send (451, 552...)."""
        ...

    async def abort(self) -> None:
        """Discard the message (idempotent). Runs shielded from cancellation."""
        ...


class SMTPBackendSession(Authenticator, Protocol):
    """One SMTP connection's view of policy and storage (go-smtp's ``Session``).

    ``user`` in the calls below is the authenticated user of the connection, or ``None``
    (STARTTLS forgets it, RFC 3207 section 4.2).
    """

    def offer(self) -> SMTPOffer:
        """What the engine offers this connection (asked once, at connect)."""
        ...

    def mail_from(self, sender: str, params: MailParams, user: str | None) -> Reply:
        """Open a transaction for ``sender`` (``""`` for ``<>``): 250 or a refusal."""
        ...

    def rcpt_to(self, recipient: str, params: RcptParams, user: str | None) -> Reply:
        """Add ``recipient`` to the open transaction: 250, a refusal, or 421 to end
        the connection."""
        ...

    def open_body(self, info: BodyInfo) -> BodySink:
        """The sink for the message of the open transaction (at DATA's 354, or the
        first BDAT); called only when at least one recipient was accepted."""
        ...

    def reset(self) -> None:
        """Forget the open transaction (RSET, HELO, a commit, an error, the end)."""
        ...


class SMTPBackend(Protocol):
    """The SMTP side of a backend (go-smtp's ``Backend``)."""

    def smtp_session(self, ctx: SessionContext) -> SMTPBackendSession:
        """A backend session for the connection ``ctx`` describes."""
        ...


@dataclass(frozen=True, slots=True)
class POP3Offer:
    """What the POP3 engine offers one connection: ``cleartext_auth`` (RFC 2595 section
    2.1: else USER/PASS and AUTH PLAIN wait for STLS), the SASL mechanisms, and whether
    APOP can succeed for anyone (it needs a shared secret, RFC 1939 section 7)."""

    cleartext_auth: bool
    sasl_mechanisms: tuple[str, ...]
    apop_enabled: bool


class MaildropEntry(Protocol):
    """One message of a maildrop's listing."""

    @property
    def size(self) -> int:
        """The message's size on the wire in octets (CRLF line ends, RFC 1939 LIST)."""
        ...

    @property
    def uidl(self) -> str:
        """Its unique id, stable across sessions (RFC 1939 section 7 UIDL)."""
        ...


class Maildrop(Protocol):
    """The locked mailbox of one POP3 login (:class:`nosend_store.drop.DropSession` is
    one). Every method is *blocking*. Deletions are marks until ``commit`` (RFC 1939
    section 6); ``close`` without ``commit`` (a dropped connection) deletes nothing."""

    @property
    def messages(self) -> Sequence[MaildropEntry]:
        """The listing, a snapshot taken when the maildrop was opened; message n is
        ``messages[n - 1]``."""
        ...

    def open(self, number: int) -> BinaryIO:
        """Open message ``number`` for reading: LF line ends, the wire size in octets
        once they become CRLF. Raises ``KeyError`` for an unknown number, ``OSError``
        (or :class:`nosend_store.drop.MessageGone`) when it cannot be read."""
        ...

    def mark_deleted(self, number: int) -> bool:
        """DELE ``number``: a mark until ``commit``."""
        ...

    def commit(self) -> int:
        """Apply the deletions durably and release the maildrop; the number removed."""
        ...

    def close(self) -> None:
        """Release the maildrop without deleting anything (idempotent)."""
        ...


class MaildropInUse(Exception):
    """Another session holds the maildrop (the login gets ``-ERR [IN-USE]``)."""


class POP3BackendSession(Authenticator, Protocol):
    """One POP3 connection's view of the mailboxes."""

    def offer(self) -> POP3Offer:
        """What the engine offers this connection (asked once, at connect)."""
        ...

    def open_maildrop(self, user: str) -> Maildrop:
        """Lock and list the maildrop of ``user`` (as ``authenticate`` returned it).
        *Blocking.* Raises :class:`MaildropInUse`, or ``OSError``."""
        ...


class POP3Backend(Protocol):
    """The POP3 side of a backend."""

    def pop3_session(self, ctx: SessionContext) -> POP3BackendSession:
        """A backend session for the connection ``ctx`` describes."""
        ...
