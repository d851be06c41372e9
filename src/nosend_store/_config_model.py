"""The values of ``mail.cfg``: :class:`Config`, its parts, its error, and address resolution.

Owns: the frozen dataclasses a parsed file becomes (:class:`ServerOptions`,
:class:`Mailbox`, :class:`Alias`, :class:`Link`, :class:`Account`, :class:`Schedule`),
:class:`ConfigError`,
and :meth:`Config.resolve`. Must not: read files, parse text (that is
:mod:`nosend_store._config_sections`), or put a password or secret into a ``repr`` or
an error message. Import these names from :mod:`nosend_store.config`; this module is
private so that the split can change without breaking anyone.

Address resolution (:meth:`Config.resolve`), in order, for ``local@domain`` with a local
domain: an alias for the exact address; a mailbox named ``local``; with plus-addressing
(``plus_separator``, default ``+``) the same two for the part before the separator;
``postmaster`` (always deliverable, RFC 5321 section 4.5.1); the domain's catch-all.
Local parts are compared case-insensitively (RFC 5321 section 2.4 lets the receiving
host decide). An address in any other domain resolves to itself as a remote recipient.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Literal

from nosend_store import passwords
from nosend_store.link_values import Budget, Endpoint, Hours

#: The network type of ``trusted_networks``.
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A problem in ``mail.cfg``: ``str()`` is ``"<path>:<line>: <message>"``.

    ``line`` is 0 for a problem with the whole file (missing, unreadable). When
    validation found several problems, the first is raised and :attr:`all_errors`
    holds every one of them, in file order.
    """

    def __init__(self, path: str | os.PathLike[str], line: int, message: str) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.message = message
        self.all_errors: tuple[ConfigError, ...] = (self,)
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}: {self.message}"
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One ``host:port`` to listen on (``host`` is an IP literal or a host name)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RunAs:
    """The ``user`` (and ``group``) keys of ``[server]``, resolved on this system.

    ``nosend serve`` started as root binds its ports, reads its TLS files, then runs as
    this user and group. The names are looked up (``pwd``/``grp``) when the file is
    loaded, so an unknown name is a ``mail.cfg:LINE:`` error like any other.
    """

    user: str
    uid: int
    #: The ``group`` key, else the user's primary group.
    group: str
    gid: int
    #: The line of the ``user`` key, for messages about it.
    line: int = 0

    def __str__(self) -> str:
        return f"user {self.user} (uid {self.uid}), group {self.group} (gid {self.gid})"


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """The ``[server]`` section. Sizes are bytes, durations seconds."""

    #: Name used in the SMTP greeting, EHLO, Received: and generated Message-IDs.
    hostname: str
    #: Root of the mail store: ``data_dir/mail/<mailbox>`` and ``data_dir/queue``.
    data_dir: Path
    #: Plain SMTP (RFC 5321) for delivery to local mailboxes and relaying from the LAN.
    smtp_listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 2525),)
    #: Message submission (RFC 6409): authentication required.
    submission_listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 2587),)
    #: Submission over implicit TLS (RFC 8314); empty means off.
    smtps_listen: tuple[ListenAddress, ...] = ()
    #: POP3 (RFC 1939), STLS (RFC 2595) when a certificate is set.
    pop3_listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 2110),)
    #: POP3 over implicit TLS (RFC 8314); empty means off.
    pop3s_listen: tuple[ListenAddress, ...] = ()
    #: PEM certificate chain and private key; STARTTLS/STLS are offered only with both.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Clients on these networks may relay without authenticating (invariant 4).
    trusted_networks: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    #: Largest message accepted, advertised with SIZE (RFC 1870).
    max_message_size: int = 35 * 1024 * 1024
    #: RFC 5321 section 4.5.3.1.8: at least 100 recipients must be accepted.
    max_recipients: int = 100
    #: Concurrent connections overall, and per client (an IPv4 address or an IPv6 /64)
    #: and service; 50 is Postfix's smtpd_client_connection_count_limit.
    max_connections: int = 100
    max_connections_per_ip: int = 50
    #: RFC 5321 section 4.5.3.2.7: the server timeout is at least 5 minutes.
    smtp_timeout: float = 300.0
    #: RFC 1939 section 3: the autologout timer is at least 10 minutes.
    pop3_timeout: float = 600.0
    #: Refuse AUTH / USER+PASS before TLS (RFC 4954 section 4, RFC 2595 section 2.1)...
    auth_requires_tls: bool = True
    #: ...except from trusted networks when this is on (a LAN without certificates).
    lan_plaintext_auth: bool = False
    #: Plus-addressing separator (``user+tag@domain``); empty turns it off.
    plus_separator: str = "+"
    #: Mailbox name or address receiving postmaster mail; default: a mailbox named
    #: ``postmaster``, else the first mailbox in the file.
    postmaster: str | None = None
    #: RFC 5321 section 4.5.4.1: retry at least 30 minutes apart, give up after 4-5 days.
    retry_interval: float = 1800.0
    warn_after: float = 4 * 3600.0
    bounce_after: float = 5 * 86400.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: A mailbox whose POP3 login opens the outbound queue as a mail drop, one copy per
    #: recipient with ``Return-Path:`` and ``X-Envelope-To:``, for a stock fetchmail in
    #: multidrop mode to relay (the seed system's design); None: off.
    queue_drop_mailbox: str | None = None
    #: Who ``nosend serve`` (and ``nosend inetd``) runs as once its ports are bound, when
    #: started as root; None: no change (``user`` and ``group`` keys).
    run_as: RunAs | None = None

    @property
    def maildir_root(self) -> Path:
        """Directory holding one Maildir per mailbox."""
        return self.data_dir / "mail"

    @property
    def queue_dir(self) -> Path:
        """Directory of the outbound queue."""
        return self.data_dir / "queue"

    @property
    def tls_enabled(self) -> bool:
        """Whether a certificate and key are configured (STARTTLS/STLS offered)."""
        return self.tls_cert is not None and self.tls_key is not None


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A ``[mailbox NAME]`` section. Secrets are kept out of ``repr``."""

    name: str
    password_hash: str = field(repr=False)
    #: Plaintext-equivalent secret for APOP / CRAM-MD5, only if opted in.
    shared_secret: str | None = field(default=None, repr=False)
    line: int = 0

    def check_password(self, password: str) -> bool:
        """Verify a password (PLAIN, LOGIN, USER/PASS) against the stored hash."""
        return passwords.verify_password(password, self.password_hash)


@dataclass(frozen=True, slots=True)
class Alias:
    """One ``[aliases]`` entry; ``address`` is normalised (lower case)."""

    address: str
    targets: tuple[str, ...]
    line: int = 0

    @property
    def is_catch_all(self) -> bool:
        """Whether this is a ``@domain`` catch-all."""
        return self.address.startswith("@")


@dataclass(frozen=True, slots=True)
class Link:
    """A ``[link NAME]`` section: one way out, used by the link layer.

    Keys: ``up`` and ``down`` (commands, split like a shell with :func:`shlex.split`
    and run without one; an empty ``up`` means the link is always up), ``priority``
    (lower is tried first; default 100), ``cost_per_minute`` and ``cost_per_megabyte``
    (decimals for accounting, default 0), ``up_timeout`` (how long ``up`` may take,
    default 2m), ``max_online`` (hang up after, default 30m), ``enabled`` (default yes),
    ``accounts`` (account names used over this link; empty means all).

    What the link layer needs to choose and schedule (value syntax in
    :mod:`nosend_store.link_values`): ``probe`` (``host:port`` that must accept a TCP
    connection and send a banner line right after ``up``; default: the smarthost the
    link relays through), ``max_size`` (a size: larger outbound messages wait for another
    link; default no cap), ``hours`` (``06:00-22:00, 23:30-01:00`` local time, or
    ``always``, the default), ``budget`` (a month's cap: ``120`` in the link's money or
    ``500 MB``/``2 GB``; default none), ``rate`` (the link's speed for estimates, e.g.
    ``2400 bit/s``, ``64 kbit/s``, ``300 B/s``; default 2400 bit/s), ``setup_seconds``
    (time to come up before a byte moves, a duration; default 20s with an ``up``, 0
    without), ``down_timeout`` (how long ``down`` may take; default ``up_timeout``) and
    ``smarthost`` (an smtp ``[account]`` to relay through over this link, for providers
    that relay only for their own customers; default: the first smtp account usable
    over the link). None means the default in each case.
    """

    name: str
    up: tuple[str, ...] = ()
    down: tuple[str, ...] = ()
    priority: int = 100
    cost_per_minute: Decimal = Decimal(0)
    cost_per_megabyte: Decimal = Decimal(0)
    up_timeout: float = 120.0
    max_online: float = 1800.0
    enabled: bool = True
    accounts: tuple[str, ...] = ()
    line: int = 0
    probe: Endpoint | None = None
    max_size: int | None = None
    hours: Hours = Hours()
    budget: Budget | None = None
    rate: float | None = None
    setup_seconds: float | None = None
    down_timeout: float | None = None
    smarthost: str | None = None


#: ``[schedule] urgent`` value meaning mail from anyone.
URGENT_ANYONE = "*"


@dataclass(frozen=True, slots=True)
class Schedule:
    """The ``[schedule]`` section: which link is used and when a cycle starts by itself.

    ``link``: ``auto`` (every usable link by ``priority``), ``cost`` (the cheapest
    estimate for what waits) or a link's name (that link only; ``nosend link use``
    edits it). The triggers, for ``nosend serve`` and ``nosend watch`` (the earliest
    wins): ``queue_age`` (queued mail has waited this long; None: ``no``), ``urgent``
    (mailboxes whose mail marked urgent starts a cycle at once; ``("*",)``: anyone's;
    empty: nobody's, the default), ``times`` (times of day), ``every`` (a cycle this
    long after the last; None: ``no``); never sooner than ``min_interval`` after the
    last cycle. ``scheduler``: whether ``nosend serve`` starts cycles itself (no: cron or
    a timer runs ``nosend check``). ``report``: a cost report to the postmaster after
    ``each`` cycle, ``daily``, or ``no``. Durations in seconds.
    """

    link: str = "auto"
    queue_age: float | None = 15 * 60.0
    urgent: tuple[str, ...] = ()
    times: tuple[time, ...] = ()
    every: float | None = None
    min_interval: float = 5 * 60.0
    scheduler: bool = True
    report: Literal["each", "daily", "no"] = "no"
    line: int = 0


@dataclass(frozen=True, slots=True)
class Account:
    """An ``[account NAME]`` section: an upstream smarthost or a remote POP3 mailbox.

    Keys for both types:

    ``type`` (``smtp`` or ``pop3``, required), ``host`` (required), ``port`` (default
    587/465 for smtp, 110/995 for pop3, by ``tls``), ``links`` (use the account only
    over these links; empty: any).

    ``tls``: ``starttls`` (the default), ``implicit`` (RFC 8314) or ``none``. With
    ``none`` the login and the mail cross the link in clear: allowed (some ISP servers
    offer nothing else) but ``nosend config check`` warns when the account has a
    ``user``. ``tls_verify`` (default yes) checks the server's certificate chain and
    name against the system's trust store, or against ``ca_file`` (a PEM file of trusted
    certificates) when given. ``fingerprint`` pins the server's certificate instead: the
    SHA-256 of its DER form, written as 64 hex digits with or without colons between
    pairs and kept here in lower case without colons. The certificate that matches is
    trusted whatever its chain, name or dates say, and any other is refused; ``ca_file``
    and ``tls_verify`` are then not used (the choice msmtp and mpop made for their
    ``tls_fingerprint``). ``ca_file`` and ``fingerprint`` make no sense with
    ``tls = none`` and are errors there.

    ``user`` and exactly one source of its secret: ``secret = {PLAIN.B64}...``,
    ``secret_file = PATH`` (a file holding the secret, read when used) or
    ``secret_command = COMMAND`` (split like a shell with :func:`shlex.split` and run
    without one when the secret is needed; what it prints on stdout, less the final line
    end, is the password or the OAuth2 access token, like mpop's ``passwordeval``). The
    secret is passed to nothing on a command line and never logged. ``auth`` picks the
    SASL mechanism: ``auto`` (the default: the transport chooses among those the server
    offers), ``plain``, ``login``, ``cram-md5``, ``xoauth2`` or ``oauthbearer``
    (RFC 7628; the secret is then an access token); a mechanism other than ``auto``
    needs a ``user``.

    pop3 only (``user`` is required): where fetched mail goes, exactly one of
    ``deliver_to = TARGET`` (single-drop: every message to one mailbox or local address)
    or ``multidrop = FALLBACK`` (multi-drop: each message to the local recipients its
    envelope names, and to ``FALLBACK`` when it names none); ``keep`` (leave fetched mail
    on the server, default no; needs a server with UIDL, see
    :mod:`nosend_store.fetch_state`); ``max_size`` (a size such as ``5M``: a larger
    message is held on the server and a notice is delivered instead, until the
    administrator asks to fetch or delete it; default: no limit).
    """

    name: str
    type: Literal["smtp", "pop3"]
    host: str
    port: int
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    tls_verify: bool = True
    user: str | None = None
    secret: str | None = field(default=None, repr=False)
    secret_file: Path | None = None
    deliver_to: str | None = None
    keep: bool = False
    links: tuple[str, ...] = ()
    #: The command that prints the secret; out of ``repr`` in case one holds it inline.
    secret_command: tuple[str, ...] = field(default=(), repr=False)
    ca_file: Path | None = None
    #: Lower-case hex SHA-256 of the server certificate (DER), no colons.
    fingerprint: str | None = None
    auth: Literal["auto", "plain", "login", "cram-md5", "xoauth2", "oauthbearer"] = "auto"
    multidrop: str | None = None
    max_size: int | None = None
    line: int = 0

    @property
    def has_secret(self) -> bool:
        """Whether one of ``secret``, ``secret_file`` or ``secret_command`` is set."""
        return bool(self.secret is not None or self.secret_file or self.secret_command)


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where mail for one address goes: local mailboxes and remote addresses."""

    mailboxes: tuple[str, ...] = ()
    remote: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, valid ``mail.cfg``. Build it with :func:`load_config`."""

    path: Path
    server: ServerOptions
    domains: frozenset[str]
    mailboxes: Mapping[str, Mailbox]
    aliases: Mapping[str, Alias]
    links: Mapping[str, Link]
    accounts: Mapping[str, Account]
    #: Things that are allowed but probably unwise (``tls = none`` with a login...), as
    #: ``(line, message)`` in file order; ``nosend config check`` prints them.
    warnings: tuple[tuple[int, str], ...] = ()
    #: Where postmaster mail goes: a mailbox name or an address (None: no mailboxes).
    postmaster: str | None = None
    #: The ``[schedule]`` section (defaults when the file has none).
    schedule: Schedule = Schedule()

    def is_local_domain(self, domain: str) -> bool:
        """Whether ``domain`` (any case, optional trailing dot) is a local domain."""
        return domain.lower().rstrip(".") in self.domains

    def is_trusted(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether a client address is in ``trusted_networks`` (bad input: not trusted)."""
        try:
            addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            # An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.server.trusted_networks)

    def maildir_path(self, mailbox: str) -> Path:
        """The Maildir directory of ``mailbox``."""
        return self.server.maildir_root / mailbox

    def login_mailbox(self, username: str) -> Mailbox | None:
        """The mailbox a client logs in as: its name, or ``name@local-domain``."""
        name = username.lower()
        if "@" in name:
            name, _, domain = name.rpartition("@")
            if domain not in self.domains:
                return None
        return self.mailboxes.get(name)

    def resolve(self, address: str) -> Resolution | None:
        """Resolve a recipient address; ``None`` when it is an unknown local address.

        See the module docstring for the order of the rules. A bare ``postmaster``
        (no domain) is accepted as RFC 5321 section 4.5.1 requires.
        """
        boxes: list[str] = []
        remote: list[str] = []
        if self._expand(address, boxes, remote, ()) is not True:
            return None
        return Resolution(tuple(dict.fromkeys(boxes)), tuple(dict.fromkeys(remote)))

    def _expand(
        self, address: str, boxes: list[str], remote: list[str], chain: tuple[str, ...]
    ) -> bool | tuple[str, ...]:
        """Add where ``address`` goes; False if unknown, a tuple (the chain) on a loop."""
        if "@" not in address:
            if address.lower() == "postmaster" and self.postmaster is not None:
                return self._expand_target(self.postmaster, boxes, remote, chain)
            return False
        local, _, domain = address.rpartition("@")
        domain = domain.lower().rstrip(".")
        if domain not in self.domains:
            remote.append(address)
            return True
        if not local:
            return False
        local = local.lower()
        candidates = [local]
        sep = self.server.plus_separator
        if sep and sep in local and local.split(sep, 1)[0]:
            candidates.append(local.split(sep, 1)[0])
        for candidate in candidates:
            alias = self.aliases.get(f"{candidate}@{domain}")
            if alias is not None:
                return self._expand_alias(alias, boxes, remote, chain)
            if candidate in self.mailboxes:
                boxes.append(candidate)
                return True
        if local == "postmaster" and self.postmaster is not None:
            return self._expand_target(self.postmaster, boxes, remote, chain)
        catch_all = self.aliases.get(f"@{domain}")
        if catch_all is not None:
            return self._expand_alias(catch_all, boxes, remote, chain)
        return False

    def _expand_alias(
        self, alias: Alias, boxes: list[str], remote: list[str], chain: tuple[str, ...]
    ) -> bool | tuple[str, ...]:
        if alias.address in chain:
            return (*chain, alias.address)
        for target in alias.targets:
            result = self._expand_target(target, boxes, remote, (*chain, alias.address))
            if result is not True:
                return result
        return True

    def _expand_target(
        self, target: str, boxes: list[str], remote: list[str], chain: tuple[str, ...]
    ) -> bool | tuple[str, ...]:
        if "@" in target:
            return self._expand(target, boxes, remote, chain)
        if target in self.mailboxes:
            boxes.append(target)
            return True
        return False
