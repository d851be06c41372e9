"""Who may do what: the mail policy the SMTP and POP3 sessions consult.

Owns: recipient checks at RCPT time (local domains, mailboxes, aliases; RFC 5321
section 4.5.1 postmaster), the relay decision (DESIGN invariant 4: only authenticated
clients and trusted networks reach other domains), the submission rules (RFC 6409: AUTH
before MAIL), the SIZE check at MAIL time (RFC 1870), whether cleartext authentication
is allowed on a connection, and checking credentials against ``mail.cfg``.

Must not: do I/O besides the password hash computation in :func:`authenticate` (which
is slow on purpose, so sessions run it with ``ctx.run_blocking``), keep state, or log.
Answers are values: a :class:`~nosend_proto.smtp_events.Reply` to send, or what to do.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from nosend_proto import Credentials
from nosend_proto.smtp_events import Reply
from nosend_runners.session.boundary import PeerInfo
from nosend_store import passwords
from nosend_store.config import Config

__all__ = [
    "MAX_REJECTED_RECIPIENTS",
    "SUBMISSION_SERVICES",
    "RecipientDecision",
    "is_loopback",
    "cleartext_auth_allowed",
    "relay_allowed",
    "requires_auth",
    "check_sender",
    "check_recipient",
    "sasl_mechanisms",
    "apop_available",
    "authenticate",
    "verifiable",
    "queue_drop_mailbox",
]

#: Services that are message submission (RFC 6409; SMTPS is submission over implicit
#: TLS, RFC 8314 section 3.3): AUTH is required before MAIL.
SUBMISSION_SERVICES = frozenset({"submission", "smtps"})


@dataclass(frozen=True, slots=True)
class RecipientDecision:
    """The answer to one RCPT TO: ``reply`` to send and, when accepted, where it goes.

    ``mailboxes`` are local mailbox names, ``remote`` addresses for the outbound queue.
    """

    reply: Reply
    mailboxes: tuple[str, ...] = ()
    remote: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        """Whether the recipient was accepted (a 2xx reply)."""
        return 200 <= self.reply.code < 300


@lru_cache(maxsize=1024)
def _parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's address as an IP object (an IPv4-mapped IPv6 one as IPv4), ``None`` if
    it is not one. Cached: every command of every session asks about the same few peers,
    and parsing costs more than the checks themselves."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_RECIPIENT_OK = Reply(250, "Recipient ok", "2.1.5")

#: Refused recipients one connection may collect before it is closed with 421: enough
#: for typos, too few to harvest a directory (Postfix's smtpd_hard_error_limit is 20).
MAX_REJECTED_RECIPIENTS = 20


def _trusted(config: Config, address: str) -> bool:
    ip = _parse_ip(address)
    return ip is not None and config.is_trusted(ip)


def is_loopback(address: str) -> bool:
    """Whether ``address`` is a loopback IP address (bad input: no)."""
    ip = _parse_ip(address)
    return ip is not None and ip.is_loopback


def cleartext_auth_allowed(config: Config, peer: PeerInfo) -> bool:
    """Whether a password may cross this connection in the clear (AUTH PLAIN/LOGIN,
    POP3 USER/PASS).

    Always over TLS. Without TLS: when ``auth_requires_tls`` is off; from loopback (no
    wire to sniff; Dovecot treats local connections as secure the same way); and from
    trusted networks when ``lan_plaintext_auth`` is on (RFC 4954 section 4 and RFC 2595
    section 2.1 leave the choice to the site).
    """
    server = config.server
    if peer.tls or not server.auth_requires_tls or is_loopback(peer.address):
        return True
    return server.lan_plaintext_auth and _trusted(config, peer.address)


def relay_allowed(config: Config, peer: PeerInfo, authenticated: bool) -> bool:
    """Whether this client may send to domains that are not ours (DESIGN invariant 4)."""
    return authenticated or _trusted(config, peer.address)


def requires_auth(service: str) -> bool:
    """Whether ``service`` is submission, where AUTH must precede MAIL (RFC 6409 s4.3)."""
    return service in SUBMISSION_SERVICES


def check_sender(
    config: Config, service: str, *, authenticated: bool, size: int | None
) -> Reply | None:
    """Refuse MAIL FROM with a reply, or ``None`` to accept it.

    Submission without AUTH gets 530 5.7.0 (RFC 4954 section 6); a declared SIZE over
    the limit gets 552 5.3.4 now rather than after the body (RFC 1870 section 6.1).
    """
    if requires_auth(service) and not authenticated:
        return Reply(530, "Authentication required", "5.7.0")
    limit = config.server.max_message_size
    if size is not None and limit and size > limit:
        return Reply(552, f"Message size exceeds fixed maximum message size ({limit})", "5.3.4")
    return None


def check_recipient(config: Config, address: str, *, may_relay: bool) -> RecipientDecision:
    """Decide one RCPT TO ``address`` at RCPT time (never a later bounce).

    A local domain's unknown user gets 550 5.1.1; an address in another domain is
    accepted only if ``may_relay``, else 550 5.7.1. ``postmaster`` (bare or in a local
    domain) is always deliverable (RFC 5321 section 4.5.1), through the resolver.
    """
    local, at, domain = address.rpartition("@")
    if at and not config.is_local_domain(domain) and not may_relay:
        return RecipientDecision(Reply(550, "Relaying denied", "5.7.1"))
    resolution = config.resolve(address)
    if resolution is None:
        if (local if at else address).lower() == "postmaster":
            # No mailbox at all to route it to: a configuration problem, not the
            # sender's (RFC 5321 section 4.5.1 requires postmaster to work).
            return RecipientDecision(Reply(451, "Postmaster mailbox not configured", "4.3.0"))
        return RecipientDecision(Reply(550, "No such user here", "5.1.1"))
    if not resolution.mailboxes and not resolution.remote:
        return RecipientDecision(Reply(550, "No such user here", "5.1.1"))
    return RecipientDecision(_RECIPIENT_OK, resolution.mailboxes, resolution.remote)


def sasl_mechanisms(config: Config) -> tuple[str, ...]:
    """SASL mechanisms to offer: PLAIN and LOGIN always; CRAM-MD5 only when some
    mailbox has a shared secret (RFC 2195 needs the plaintext-equivalent)."""
    if any(box.shared_secret for box in config.mailboxes.values()):
        return ("PLAIN", "LOGIN", "CRAM-MD5")
    return ("PLAIN", "LOGIN")


def apop_available(config: Config) -> bool:
    """Whether POP3 APOP can succeed for anyone (RFC 1939 section 7 needs the secret)."""
    return any(box.shared_secret for box in config.mailboxes.values())


def verifiable(config: Config, credentials: Credentials) -> bool:
    """Whether ``credentials`` could be checked at all: a password, or a digest for a
    mailbox that has a shared secret.

    A CRAM-MD5 attempt for a mailbox without one is no guess: clients such as smtplib
    try CRAM-MD5 first whenever it is offered and fall back to PLAIN, so sessions refuse
    it without counting a failure or delaying.
    """
    if credentials.password is not None:
        return True
    mailbox = config.login_mailbox(credentials.username)
    return mailbox is not None and bool(mailbox.shared_secret)


def authenticate(config: Config, credentials: Credentials) -> str | None:
    """Return the mailbox name ``credentials`` prove, or ``None``. Blocking (hashing).

    Passwords are checked against the stored hash; CRAM-MD5 and APOP digests against
    the mailbox's shared secret. An authorization identity other than the user itself
    is refused: no one may act for another mailbox (RFC 4616 section 2).
    """
    mailbox = config.login_mailbox(credentials.username)
    if mailbox is None:
        if credentials.password is not None:
            # The same hash at the same cost as a real user's, so a probe cannot tell
            # unknown users by speed.
            passwords.verify_password(credentials.password, _dummy_hash(config))
        return None
    if credentials.authzid:
        wanted = config.login_mailbox(credentials.authzid)
        if wanted is None or wanted.name != mailbox.name:
            return None
    if credentials.password is not None:
        return mailbox.name if mailbox.check_password(credentials.password) else None
    if not mailbox.shared_secret:  # already decoded from {PLAIN.B64} by the config
        return None
    return mailbox.name if credentials.matches_secret(mailbox.shared_secret) else None


def _dummy_hash(config: Config) -> str:
    """A hash no password matches, like the one most of the site's mailboxes have
    (scheme and parameters), else of the default scheme as ``nosend user add`` makes.
    Computed per unknown-user login: a scan of a small table, much cheaper than the
    hash that follows."""
    likes = Counter(
        passwords.dummy_hash_like(box.password_hash) for box in config.mailboxes.values()
    )
    return likes.most_common(1)[0][0] if likes else passwords.dummy_hash()


def queue_drop_mailbox(config: Config) -> str | None:
    """The mailbox whose POP3 login opens the outbound queue as a mail drop (for a
    fetchmail in multidrop mode, see :mod:`nosend_store.queue_drop`), or ``None``.

    Read from ``[server] queue_drop_mailbox``; off when unset. The mailbox's own
    password protects the drop.
    """
    name = config.server.queue_drop_mailbox
    return name if name is not None and name in config.mailboxes else None
