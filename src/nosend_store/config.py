"""``mail.cfg``: the one configuration file, parsed and validated into frozen values.

Owns: the file grammar, validation (every error names file, line and what is wrong),
the :class:`Config` value with its address resolver, the default locations, and writing
a fresh file atomically. Must not: keep global state, log, or put a password or secret
into an error message. Comment-preserving edits live in :mod:`nosend_store.config_edit`;
re-reading a running server's file lives in :mod:`nosend_store.reload`.

Grammar (line oriented, UTF-8)::

    file     = *( blank / comment / section / entry / word )
    comment  = *WSP "#" *any                ; a whole-line comment
    section  = "[" type [ SP name ] "]"     ; [server] [domains] [aliases]
                                            ; [mailbox NAME] [link NAME] [account NAME]
    entry    = key *WSP "=" *WSP value      ; value may be empty
    word     = value                        ; a bare line, only in [domains]

A ``#`` preceded by whitespace starts a trailing comment, so a value cannot contain
" #"; a ``#`` glued to other text is part of the value. Keys and section types are
lower case; an unknown section, an unknown key or a key given twice is an error.
Sizes are a number with an optional ``K``, ``M`` or ``G`` suffix (powers of 1024);
durations are one or more number+unit pairs with units ``s``, ``m``, ``h``, ``d``
(``90s``, ``5m``, ``1h30m``, ``5d``; a bare number is seconds). Booleans are
``yes``/``no`` (also ``true``/``false``, ``on``/``off``, ``1``/``0``). Lists are
comma-separated. Relative paths are relative to the directory holding ``mail.cfg``.

Sections:

``[server]`` (required, once)
    ``hostname`` and ``data_dir`` are required; see :class:`ServerOptions` for every
    other key and its default. Maildirs live in ``data_dir/mail/<mailbox>``, the
    outbound queue in ``data_dir/queue``.
``[domains]``
    One local domain per line, compared case-insensitively.
``[mailbox NAME]``
    ``password`` (a ``{SCHEME}`` hash, see :mod:`nosend_store.passwords`; required) and
    ``shared_secret`` (``{PLAIN.B64}...``, a plaintext-equivalent secret for APOP and
    CRAM-MD5; only when the administrator opted in). A mailbox receives mail for
    ``NAME@d`` in every local domain ``d``. Names are ``[a-z0-9][a-z0-9._-]*``.
``[aliases]``
    ``address = target, target, ...``. ``address`` is ``local@domain`` (a domain from
    ``[domains]``) or ``@domain`` (that domain's catch-all). A target is a mailbox name
    or an address; a local address is resolved again (loops are errors), any other
    address is a remote recipient that goes to the outbound queue.
``[link NAME]``
    A way out (land line, GSM, satellite); see :class:`Link`.
``[account NAME]``
    An upstream account (``type = smtp`` smarthost or ``type = pop3`` mailbox to fetch);
    see :class:`Account`.

Address resolution (:meth:`Config.resolve`), in order, for ``local@domain`` with a local
domain: an alias for the exact address; a mailbox named ``local``; with plus-addressing
(``plus_separator``, default ``+``) the same two for the part before the separator;
``postmaster`` (always deliverable, RFC 5321 section 4.5.1); the domain's catch-all.
Local parts are compared case-insensitively (RFC 5321 section 2.4 lets the receiving
host decide). An address in any other domain resolves to itself as a remote recipient.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import shlex
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar, cast

from nosend_store import passwords

_T = TypeVar("_T")

__all__ = [
    "ConfigError",
    "read_config_text",
    "ListenAddress",
    "ServerOptions",
    "Mailbox",
    "Alias",
    "Link",
    "Account",
    "Resolution",
    "Config",
    "load_config",
    "parse_config",
    "parse_size",
    "parse_duration",
    "default_config_path",
    "default_data_dir",
    "sample_config",
    "create_default_config",
    "write_atomically",
    "file_mode_warning",
]

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


# ---------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One ``host:port`` to listen on (``host`` is an IP literal or a host name)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
    max_connections: int = 100
    max_connections_per_ip: int = 20
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


@dataclass(frozen=True, slots=True)
class Account:
    """An ``[account NAME]`` section: an upstream smarthost or a remote POP3 mailbox.

    Keys: ``type`` (``smtp`` or ``pop3``, required), ``host`` (required), ``port``
    (default 587/465 for smtp, 110/995 for pop3, by ``tls``), ``tls`` (``starttls``,
    ``implicit`` or ``none``; default ``starttls``), ``tls_verify`` (default yes),
    ``user``, and its secret as ``secret = {PLAIN.B64}...`` or ``secret_file = PATH``
    (a file holding the secret; read when used). pop3 only: ``deliver_to`` (required;
    a mailbox or address that fetched mail is delivered to) and ``keep`` (leave mail
    on the server, default no). ``links`` limits the account to those links (empty: any).
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
    line: int = 0


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
    #: Where postmaster mail goes: a mailbox name or an address (None: no mailboxes).
    postmaster: str | None = None
    # Objects derived from this configuration and reused while it is in force (see
    # derived()). Not part of the value: left out of ==, repr and the constructor.
    _derived: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    def derived(self, key: str, make: Callable[[], _T]) -> _T:
        """The object stored under ``key`` for this configuration, made by ``make()`` on
        first use.

        For per-message work that only depends on the configuration (e.g. delivery's
        Maildir objects with their checked paths and name generators): a reload builds a
        new :class:`Config`, so what was derived from the old one is never used with the
        new one. Safe from several threads: racing first calls may each run ``make``, and
        all of them get the one object that was stored. ``key`` names the caller (use the
        module name) and must always be used with the same type of object.
        """
        try:
            return cast(_T, self._derived[key])
        except KeyError:
            return cast(_T, self._derived.setdefault(key, make()))

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


# ---------------------------------------------------------------------------------------
# Lines


@dataclass(frozen=True, slots=True)
class _Line:
    """One physical line, kept whole so that edits can write it back unchanged."""

    number: int
    raw: str
    kind: Literal["blank", "comment", "section", "entry", "word"]
    section_type: str = ""
    section_name: str = ""
    key: str = ""
    value: str = ""


_SECTION_RE = re.compile(r"\[\s*([A-Za-z_]+)(?:\s+(\S+))?\s*\]")
_TRAILING_COMMENT_RE = re.compile(r"\s#")


def _strip_comment(text: str) -> str:
    m = _TRAILING_COMMENT_RE.search(text)
    return (text[: m.start()] if m else text).strip()


def _split_lines(text: str) -> list[str]:
    """Lines as editors count them: split at LF only (str.splitlines also splits at
    form feed, U+2028 and others, which would shift every line number after them)."""
    # A byte-order mark, as Windows editors write (the seed system ran on Cygwin), is
    # not part of the first line.
    lines = text.removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _tokenize(text: str, path: str) -> list[_Line]:
    """Split the file into classified lines; only malformed headers are errors here."""
    lines: list[_Line] = []
    for number, raw in enumerate(_split_lines(text), start=1):
        stripped = raw.strip()
        if not stripped:
            lines.append(_Line(number, raw, "blank"))
            continue
        if stripped.startswith("#"):
            lines.append(_Line(number, raw, "comment"))
            continue
        content = _strip_comment(stripped)
        if content.startswith("["):
            m = _SECTION_RE.fullmatch(content)
            if m is None:
                raise ConfigError(path, number, f"malformed section header {content!r}")
            lines.append(_Line(number, raw, "section", m[1], m[2] or ""))
        elif "=" in content:
            key, _, value = content.partition("=")
            lines.append(_Line(number, raw, "entry", key=key.strip(), value=value.strip()))
        else:
            lines.append(_Line(number, raw, "word", value=content))
    return lines


@dataclass(slots=True)
class _Section:
    type: str
    name: str
    header: _Line | None
    lines: list[_Line] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.header.number if self.header else 0

    @property
    def title(self) -> str:
        return f"[{self.type} {self.name}]" if self.name else f"[{self.type}]"


_SINGLE_SECTIONS = ("server", "domains", "aliases")
_NAMED_SECTIONS = ("mailbox", "link", "account")


def _sections(lines: Iterable[_Line]) -> Iterator[_Section]:
    """Group lines under their headers; lines before the first header come first."""
    current = _Section("", "", None)
    for line in lines:
        if line.kind == "section":
            yield current
            current = _Section(line.section_type, line.section_name, line)
        else:
            current.lines.append(line)
    yield current


# ---------------------------------------------------------------------------------------
# Value parsers: each takes the text and returns the value or raises _Bad(message).


class _Bad(Exception):
    pass


_SIZE_RE = re.compile(r"(\d{1,15})\s*([KMG]?)B?", re.IGNORECASE)
_DURATION_RE = re.compile(r"(?:\d{1,9}[smhd])+|\d{1,9}", re.IGNORECASE)
_DURATION_PART_RE = re.compile(r"(\d+)([smhd])", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# RFC 1123 section 2.1 host name labels; RFC 1035 section 2.3.4 length limits.
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# RFC 5322 section 3.2.3 dot-atom text (quoted local parts are not supported here).
_DOT_ATOM_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_MAILBOX_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_RE = re.compile(r"[a-z][a-z0-9_]*")
_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


def parse_size(text: str) -> int:
    """Parse ``35M``-style sizes (K/M/G are powers of 1024) into bytes; ``ValueError``."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad size {text!r} (expected e.g. 512K, 35M, 1G)")
    return int(m[1]) * _UNITS[m[2].lower()]


def parse_duration(text: str) -> float:
    """Parse ``90s``, ``5m``, ``1h30m``, ``5d`` (bare number: seconds); ``ValueError``."""
    t = text.strip()
    if _DURATION_RE.fullmatch(t) is None:
        raise ValueError(f"bad duration {text!r} (expected e.g. 30s, 5m, 1h30m, 5d)")
    if t.isdigit():
        return float(int(t))
    return float(sum(int(n) * _SECONDS[u.lower()] for n, u in _DURATION_PART_RE.findall(t)))


def _text(value: str) -> str:
    if not value:
        raise _Bad("empty value")
    return value


def _bool(value: str) -> bool:
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise _Bad(f"bad boolean {value!r} (expected yes or no)")


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            n = int(value, 10)
        except ValueError:
            raise _Bad(f"bad number {value!r}") from None
        if not low <= n <= high:
            raise _Bad(f"{n} is out of range ({low}..{high})")
        return n

    return parse


def _size(value: str) -> int:
    try:
        n = parse_size(value)
    except ValueError as e:
        raise _Bad(str(e)) from None
    if n <= 0:
        raise _Bad("size must be positive")
    return n


def _duration(value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise _Bad(str(e)) from None
    if seconds <= 0:
        raise _Bad("duration must be positive")
    return seconds


def _decimal(value: str) -> Decimal:
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise _Bad(f"bad decimal number {value!r}") from None
    if not d.is_finite() or d < 0:
        raise _Bad(f"{value!r} must be a non-negative number")
    return d


def _list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",")] if value.strip() else []
    if any(not item for item in items):
        raise _Bad("empty item in list")
    return items


def _hostname(value: str) -> str:
    name = value.rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL_RE.fullmatch(p) for p in name.split(".")):
        raise _Bad(f"bad host name {value!r}")
    return name.lower()


def _domain(value: str) -> str:
    return _hostname(value)


def _mailbox_name(value: str) -> str:
    if not _MAILBOX_RE.fullmatch(value) or value in (".", ".."):
        raise _Bad(f"bad mailbox name {value!r} (lower-case letters, digits, '.', '_', '-')")
    return value


def _address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not _DOT_ATOM_RE.fullmatch(local):
        raise _Bad(f"bad address {value!r}")
    try:
        _hostname(domain)
    except _Bad:
        raise _Bad(f"bad address {value!r}") from None
    return f"{local}@{domain.lower().rstrip('.')}"


def _listen(value: str) -> tuple[ListenAddress, ...]:
    result = []
    for item in _list(value):
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", item)
        if m is None:
            raise _Bad(f"bad listen address {item!r} (expected host:port or [ipv6]:port)")
        host, port_text = (m[1], m[2]) if m[1] else (m[3], m[4])
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                _hostname(host)
            except _Bad:
                raise _Bad(f"bad listen host {host!r}") from None
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise _Bad(f"bad port {port} in {item!r}")
        result.append(ListenAddress(host, port))
    return tuple(result)


def _networks(value: str) -> tuple[IPNetwork, ...]:
    nets = []
    for item in _list(value):
        try:
            nets.append(ipaddress.ip_network(item))
        except ValueError as e:
            raise _Bad(f"bad network {item!r}: {e}") from None
    return tuple(nets)


def _command(value: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(value))
    except ValueError as e:
        raise _Bad(f"bad command: {e}") from None


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise _Bad(f"bad value {value!r} (expected {' or '.join(choices)})")
        return value.lower()

    return parse


def _shared_secret(value: str) -> str:
    try:
        return passwords.decode_shared_secret(value)
    except ValueError as e:
        raise _Bad(str(e)) from None


def _password_hash(value: str) -> str:
    problem = passwords.hash_syntax_error(value)
    if problem is not None:
        raise _Bad(problem)
    return value


def _plus_separator(value: str) -> str:
    if len(value) > 1 or (value and (value.isalnum() or value in '@."\\ ')):
        raise _Bad(f"bad plus_separator {value!r} (one character such as + or -, or empty)")
    return value


# ---------------------------------------------------------------------------------------
# Parsing into values


class _Collector:
    """Collects every problem so ``nosend config check`` can show them all at once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[ConfigError] = []

    def add(self, line: int, message: str) -> None:
        self.errors.append(ConfigError(self.path, line, message))

    def raise_if_any(self) -> None:
        if self.errors:
            errors = sorted(self.errors, key=lambda e: e.line)
            first = errors[0]
            first.all_errors = tuple(errors)
            raise first


_Parser = Callable[[str], Any]
_ALLOW_EMPTY = frozenset(
    {"smtp_listen", "submission_listen", "smtps_listen", "pop3_listen", "pop3s_listen"}
    | {"trusted_networks", "plus_separator", "up", "down", "accounts", "links"}
    | {"tls_cert", "tls_key"}
)


def _entries(
    section: _Section, spec: Mapping[str, _Parser], errors: _Collector
) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse ``key = value`` lines against ``spec``; return values and their line numbers."""
    values: dict[str, Any] = {}
    where: dict[str, int] = {}
    for line in section.lines:
        if line.kind in ("blank", "comment"):
            continue
        if line.kind == "word":
            errors.add(line.number, f"expected 'key = value' in {section.title}")
            continue
        if line.key not in spec:
            errors.add(line.number, f"unknown key {line.key!r} in {section.title}")
            continue
        if line.key in where:
            errors.add(
                line.number,
                f"duplicate key {line.key!r} in {section.title} (first at line {where[line.key]})",
            )
            continue
        where[line.key] = line.number
        if not line.value and line.key not in _ALLOW_EMPTY:
            errors.add(line.number, f"empty value for {line.key!r}")
            continue
        try:
            values[line.key] = spec[line.key](line.value)
        except _Bad as e:
            errors.add(line.number, f"{line.key}: {e}")
    return values, where


def _path_in(base: Path) -> Callable[[str], Path | None]:
    def parse(value: str) -> Path | None:
        if not value:
            return None
        return base / Path(value).expanduser()

    return parse


def _server_spec(base: Path) -> dict[str, _Parser]:
    return {
        "hostname": _hostname,
        "data_dir": _path_in(base),
        "smtp_listen": _listen,
        "submission_listen": _listen,
        "smtps_listen": _listen,
        "pop3_listen": _listen,
        "pop3s_listen": _listen,
        "tls_cert": _path_in(base),
        "tls_key": _path_in(base),
        "trusted_networks": _networks,
        "max_message_size": _size,
        "max_recipients": _int_in(1, 100_000),
        "max_connections": _int_in(1, 100_000),
        "max_connections_per_ip": _int_in(1, 100_000),
        "smtp_timeout": _duration,
        "pop3_timeout": _duration,
        "auth_requires_tls": _bool,
        "lan_plaintext_auth": _bool,
        "plus_separator": _plus_separator,
        "postmaster": _text,
        "retry_interval": _duration,
        "warn_after": _duration,
        "bounce_after": _duration,
        "log_level": _choice("debug", "info", "warning", "error"),
        "queue_drop_mailbox": _mailbox_name,
    }


_MAILBOX_SPEC: dict[str, _Parser] = {"password": _password_hash, "shared_secret": _shared_secret}
_LINK_SPEC: dict[str, _Parser] = {
    "up": _command,
    "down": _command,
    "priority": _int_in(0, 1_000_000),
    "cost_per_minute": _decimal,
    "cost_per_megabyte": _decimal,
    "up_timeout": _duration,
    "max_online": _duration,
    "enabled": _bool,
    "accounts": lambda v: tuple(_list(v)),
}


def _account_spec(base: Path) -> dict[str, _Parser]:
    return {
        "type": _choice("smtp", "pop3"),
        "host": _hostname,
        "port": _int_in(1, 65535),
        "tls": _choice("starttls", "implicit", "none"),
        "tls_verify": _bool,
        "user": _text,
        "secret": _shared_secret,
        "secret_file": _path_in(base),
        "deliver_to": _text,
        "keep": _bool,
        "links": lambda v: tuple(_list(v)),
    }


_DEFAULT_PORTS = {
    ("smtp", "starttls"): 587,
    ("smtp", "none"): 587,
    ("smtp", "implicit"): 465,
    ("pop3", "starttls"): 110,
    ("pop3", "none"): 110,
    ("pop3", "implicit"): 995,
}


def parse_config(text: str, path: str | os.PathLike[str] = "mail.cfg") -> Config:
    """Parse and validate the text of a ``mail.cfg``; raise :class:`ConfigError`.

    ``path`` names the file in messages; relative paths in the file are taken
    relative to its directory.
    """
    shown = os.fspath(path)
    base = Path(shown).parent
    if not base.is_absolute():
        base = Path.cwd() / base
    errors = _Collector(shown)
    sections = list(_sections(_tokenize(text, shown)))

    seen_single: dict[str, int] = {}
    named: dict[tuple[str, str], int] = {}
    server_section: _Section | None = None
    domain_section: _Section | None = None
    alias_section: _Section | None = None
    mailbox_sections: list[_Section] = []
    link_sections: list[_Section] = []
    account_sections: list[_Section] = []
    for section in sections:
        if section.header is None:
            for line in section.lines:
                if line.kind not in ("blank", "comment"):
                    errors.add(line.number, "text before the first [section]")
            continue
        kind = section.type
        if kind in _SINGLE_SECTIONS:
            if section.name:
                errors.add(section.number, f"[{kind}] takes no name")
            if kind in seen_single:
                errors.add(
                    section.number,
                    f"duplicate section [{kind}] (first at line {seen_single[kind]})",
                )
                continue
            seen_single[kind] = section.number
            if kind == "server":
                server_section = section
            elif kind == "domains":
                domain_section = section
            else:
                alias_section = section
        elif kind in _NAMED_SECTIONS:
            if not section.name:
                errors.add(section.number, f"[{kind}] needs a name, e.g. [{kind} NAME]")
                continue
            if (kind, section.name) in named:
                errors.add(
                    section.number,
                    f"duplicate {kind} {section.name!r} "
                    f"(first at line {named[(kind, section.name)]})",
                )
                continue
            try:
                _mailbox_name(section.name) if kind == "mailbox" else _name(section.name)
            except _Bad as e:
                errors.add(section.number, str(e))
                continue
            named[(kind, section.name)] = section.number
            {"mailbox": mailbox_sections, "link": link_sections, "account": account_sections}[
                kind
            ].append(section)
        else:
            errors.add(
                section.number,
                f"unknown section [{kind}] (expected one of "
                + ", ".join(f"[{s}]" for s in (*_SINGLE_SECTIONS, *_NAMED_SECTIONS))
                + ")",
            )

    server = _build_server(server_section, base, errors, len(_split_lines(text)))
    domains = _build_domains(domain_section, errors)
    mailboxes = _build_mailboxes(mailbox_sections, errors)
    aliases = _build_aliases(alias_section, domains, errors)
    links = {s.name: _build_link(s, errors) for s in link_sections}
    accounts = {s.name: _build_account(s, base, errors) for s in account_sections}
    if server is None:
        errors.raise_if_any()  # _build_server has said why
        raise AssertionError("no [server] and no error")
    # Cross-checks run even after other errors so that `nosend config check` lists
    # everything at once; entries that failed to parse are simply absent here.

    postmaster = server.postmaster
    if postmaster is None and mailboxes:
        postmaster = "postmaster" if "postmaster" in mailboxes else next(iter(mailboxes))
    config = Config(
        path=Path(shown),
        server=server,
        domains=frozenset(domains),
        mailboxes=MappingProxyType(mailboxes),
        aliases=MappingProxyType(aliases),
        links=MappingProxyType({k: v for k, v in links.items() if v is not None}),
        accounts=MappingProxyType({k: v for k, v in accounts.items() if v is not None}),
        postmaster=postmaster,
    )
    _cross_check(config, server_section, domain_section, errors)
    errors.raise_if_any()
    return config


def _name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise _Bad(f"bad name {value!r} (letters, digits, '.', '_', '-')")
    return value


def _build_server(
    section: _Section | None, base: Path, errors: _Collector, last_line: int
) -> ServerOptions | None:
    if section is None:
        errors.add(max(last_line, 1), "missing [server] section (hostname and data_dir)")
        return None
    values, where = _entries(section, _server_spec(base), errors)
    ok = True
    for required in ("hostname", "data_dir"):
        if required not in where:
            errors.add(section.number, f"missing required key {required!r} in [server]")
            ok = False
    if "postmaster" in values:
        target = values["postmaster"]
        try:
            values["postmaster"] = _address(target) if "@" in target else _mailbox_name(target)
        except _Bad as e:
            errors.add(where["postmaster"], f"postmaster: {e}")
            del values["postmaster"]  # reported once, not again as unresolvable
    if bool(values.get("tls_cert")) != bool(values.get("tls_key")):
        line = where.get("tls_cert", where.get("tls_key", section.number))
        errors.add(line, "tls_cert and tls_key must be set together")
    for key in ("tls_cert", "tls_key"):
        p = values.get(key)
        if p is not None and not p.is_file():
            errors.add(where[key], f"{key}: no such file {os.fspath(p)!r}")
    for key in ("smtps_listen", "pop3s_listen"):
        if values.get(key) and not values.get("tls_cert"):
            errors.add(where[key], f"{key} needs tls_cert and tls_key")
    # Two listeners on one address cannot both bind; defaults count too.
    seen: dict[ListenAddress, str] = {}
    for f in fields(ServerOptions):
        if not f.name.endswith("_listen"):
            continue
        for addr in values.get(f.name, f.default):
            if addr in seen:
                other = seen[addr]
                line = where.get(f.name) or where.get(other) or section.number
                errors.add(line, f"{f.name}: {addr} is already used by {other}")
            seen[addr] = f.name
    return _server_or_none(values) if ok else None


def _server_or_none(values: dict[str, Any]) -> ServerOptions | None:
    if "hostname" not in values or "data_dir" not in values or values["data_dir"] is None:
        return None
    return ServerOptions(**values)


def _build_domains(section: _Section | None, errors: _Collector) -> dict[str, int]:
    domains: dict[str, int] = {}
    if section is None:
        return domains
    for line in section.lines:
        if line.kind in ("blank", "comment"):
            continue
        if line.kind == "entry":
            errors.add(line.number, "expected one domain name per line in [domains]")
            continue
        try:
            domain = _domain(line.value)
        except _Bad as e:
            errors.add(line.number, str(e))
            continue
        if domain in domains:
            errors.add(
                line.number, f"duplicate domain {domain!r} (first at line {domains[domain]})"
            )
            continue
        domains[domain] = line.number
    return domains


def _build_mailboxes(sections: list[_Section], errors: _Collector) -> dict[str, Mailbox]:
    mailboxes: dict[str, Mailbox] = {}
    for section in sections:
        values, where = _entries(section, _MAILBOX_SPEC, errors)
        if "password" not in where:
            errors.add(section.number, f"missing required key 'password' in {section.title}")
            continue
        if "password" in values:
            mailboxes[section.name] = Mailbox(
                section.name, values["password"], values.get("shared_secret"), section.number
            )
    return mailboxes


def _build_aliases(
    section: _Section | None, domains: Mapping[str, int], errors: _Collector
) -> dict[str, Alias]:
    aliases: dict[str, Alias] = {}
    if section is None:
        return aliases
    for line in section.lines:
        if line.kind in ("blank", "comment"):
            continue
        if line.kind == "word":
            errors.add(line.number, "expected 'address = target, ...' in [aliases]")
            continue
        key = line.key
        try:
            if key.startswith("@"):
                address = "@" + _domain(key[1:])
            else:
                address = _address(key)
                local, _, dom = address.rpartition("@")
                address = f"{local.lower()}@{dom}"
        except _Bad as e:
            errors.add(line.number, f"alias {e}")
            continue
        domain = address.rpartition("@")[2]
        if domain not in domains:
            errors.add(line.number, f"alias {key!r}: domain {domain!r} is not in [domains]")
            continue
        if address in aliases:
            errors.add(
                line.number, f"duplicate alias {key!r} (first at line {aliases[address].line})"
            )
            continue
        try:
            items = _list(line.value)
            if not items:
                raise _Bad("no targets")
            targets = tuple(_address(t) if "@" in t else _mailbox_name(t) for t in items)
        except _Bad as e:
            errors.add(line.number, f"alias {key!r}: {e}")
            continue
        aliases[address] = Alias(address, targets, line.number)
    return aliases


def _build_link(section: _Section, errors: _Collector) -> Link | None:
    values, _ = _entries(section, _LINK_SPEC, errors)
    return Link(section.name, line=section.number, **values)


def _build_account(section: _Section, base: Path, errors: _Collector) -> Account | None:
    values, where = _entries(section, _account_spec(base), errors)
    title = section.title
    missing = [k for k in ("type", "host") if k not in where]
    for key in missing:
        errors.add(section.number, f"missing required key {key!r} in {title}")
    if missing or "type" not in values or "host" not in values:
        return None
    kind = values["type"]
    if kind == "smtp":
        for key in ("deliver_to", "keep"):
            if key in where:
                errors.add(where[key], f"{key!r} is only valid with type = pop3")
    else:
        if "user" not in where:
            errors.add(section.number, f"missing required key 'user' in {title} (type = pop3)")
        if "deliver_to" not in where:
            errors.add(
                section.number, f"missing required key 'deliver_to' in {title} (type = pop3)"
            )
    if "secret" in where and "secret_file" in where:
        errors.add(where["secret_file"], "give either secret or secret_file, not both")
    if "user" in where and "secret" not in where and "secret_file" not in where:
        errors.add(where["user"], "user needs a secret or a secret_file")
    if ("secret" in where or "secret_file" in where) and "user" not in where:
        errors.add(where.get("secret", where.get("secret_file", 0)), "a secret needs a user")
    values.setdefault("port", _DEFAULT_PORTS[(kind, values.get("tls", "starttls"))])
    return Account(section.name, line=section.number, **values)


def _key_line(section: _Section | None, key: str) -> int:
    """The line of ``key`` in ``section`` (else the section header; 0 with no section)."""
    if section is None:
        return 0
    for line in section.lines:
        if line.kind == "entry" and line.key == key:
            return line.number
    return section.number


def _cross_check(
    config: Config,
    server_section: _Section | None,
    domain_section: _Section | None,
    errors: _Collector,
) -> None:
    """References between sections: alias targets, loops, postmaster, links, accounts."""
    for alias in config.aliases.values():
        for target in alias.targets:
            if "@" not in target and target not in config.mailboxes:
                errors.add(alias.line, f"alias {alias.address!r}: no mailbox named {target!r}")
                break
        else:
            result = config._expand_alias(alias, [], [], ())
            if isinstance(result, tuple):
                errors.add(alias.line, "alias loop: " + " -> ".join(result))
            elif result is False:
                errors.add(
                    alias.line,
                    f"alias {alias.address!r}: a target is an unknown local address",
                )
    pm = config.server.postmaster
    pm_line = _key_line(server_section, "postmaster")
    drop = config.server.queue_drop_mailbox
    if drop is not None and drop not in config.mailboxes:
        errors.add(
            _key_line(server_section, "queue_drop_mailbox"),
            f"queue_drop_mailbox: no mailbox named {drop!r}",
        )
    if pm is not None and config.resolve("postmaster") is None:
        errors.add(pm_line, f"postmaster: {pm!r} is not a mailbox or a resolvable address")
    if config.domains and config.postmaster is None:
        errors.add(
            domain_section.number if domain_section else pm_line,
            "no mailbox can receive postmaster mail (RFC 5321 section 4.5.1): "
            "add a [mailbox] or set postmaster in [server]",
        )
    for link in config.links.values():
        for name in link.accounts:
            if name not in config.accounts:
                errors.add(link.line, f"[link {link.name}]: no [account {name}]")
    for account in config.accounts.values():
        for name in account.links:
            if name not in config.links:
                errors.add(account.line, f"[account {account.name}]: no [link {name}]")
        if account.deliver_to is not None and config.resolve(account.deliver_to) is None:
            errors.add(
                account.line,
                f"[account {account.name}]: deliver_to {account.deliver_to!r} "
                "is not a mailbox or a resolvable address",
            )


def read_config_text(path: str | os.PathLike[str], missing_hint: str = "") -> str:
    """The text of ``mail.cfg`` at ``path``; :class:`ConfigError` when it is missing,
    unreadable or not UTF-8 (naming the line of the first bad byte). ``missing_hint``
    is added to the "no such file" message."""
    shown = os.fspath(path)
    try:
        data = Path(shown).read_bytes()
    except FileNotFoundError:
        raise ConfigError(shown, 0, f"no such file{missing_hint}") from None
    except OSError as e:
        raise ConfigError(shown, 0, f"cannot read: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(shown, line, "not valid UTF-8") from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate ``mail.cfg`` at ``path``; raise :class:`ConfigError`."""
    return parse_config(read_config_text(path), os.fspath(path))


# ---------------------------------------------------------------------------------------
# Locations and new files


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``mail.cfg`` is looked for when no ``--config`` is given.

    ``$NOSEND_CONFIG`` if set; else ``/etc/nosend/mail.cfg`` for root; else
    ``$XDG_CONFIG_HOME/nosend/mail.cfg`` (``~/.config/nosend/mail.cfg``).
    """
    env = os.environ if environ is None else environ
    if env.get("NOSEND_CONFIG"):
        return Path(env["NOSEND_CONFIG"])
    if _is_root():
        return Path("/etc/nosend/mail.cfg")
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or "~", ".config")
    return Path(base).expanduser() / "nosend" / "mail.cfg"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Default ``data_dir``: ``/var/lib/nosend`` for root, else ``~/.local/share/nosend``."""
    env = os.environ if environ is None else environ
    if _is_root():
        return Path("/var/lib/nosend")
    base = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME") or "~", ".local", "share")
    return Path(base).expanduser() / "nosend"


def sample_config(
    *, hostname: str, data_dir: Path, domain: str, mailbox: str, password_hash: str
) -> str:
    """The text of a new, commented ``mail.cfg`` (what ``nosend init`` writes)."""
    return _SAMPLE.format(
        hostname=hostname,
        data_dir=os.fspath(data_dir),
        domain=domain,
        mailbox=mailbox,
        password_hash=password_hash,
    )


_SAMPLE = """\
# mail.cfg - Nos End Mail configuration.
#
# Edit by hand or with the `nosend` command (it keeps comments and layout).
# Check with `nosend config check`; a running server re-reads it on request
# and keeps the old configuration if the new one has an error.
# A '#' after whitespace starts a comment. Sizes: 512K, 35M, 1G.
# Durations: 30s, 5m, 1h30m, 5d. Booleans: yes/no. Lists: comma-separated.
# This file holds password hashes: keep it readable by the server only (mode 0600).

[server]
hostname = {hostname}
data_dir = {data_dir}          # maildirs in data_dir/mail/<mailbox>, queue in data_dir/queue

# host:port, comma-separated; [::1]:2525 for IPv6; empty turns a listener off.
smtp_listen = 127.0.0.1:2525
submission_listen = 127.0.0.1:2587      # RFC 6409: authentication required
smtps_listen =                          # implicit TLS (RFC 8314); needs tls_cert
pop3_listen = 127.0.0.1:2110
pop3s_listen =                          # implicit TLS (RFC 8314); needs tls_cert

# PEM files; with both set, STARTTLS and STLS are offered.
tls_cert =
tls_key =

# Clients here may relay without authenticating.
trusted_networks = 127.0.0.0/8, ::1/128
auth_requires_tls = yes       # no AUTH or USER/PASS before TLS...
lan_plaintext_auth = no       # ...unless yes here and the client is on a trusted network

max_message_size = 35M
max_recipients = 100
max_connections = 100
max_connections_per_ip = 20
smtp_timeout = 5m
pop3_timeout = 10m

plus_separator = +            # user+tag@domain is delivered to user; empty turns it off
# postmaster = {mailbox}      # default: mailbox "postmaster", else the first mailbox
# queue_drop_mailbox = relay  # its POP3 login sees the outbound queue (fetchmail multidrop)

retry_interval = 30m          # outbound queue (RFC 5321 section 4.5.4.1)
warn_after = 4h
bounce_after = 5d
log_level = info

[domains]
{domain}

# One section per mailbox. Add with: nosend user add NAME
[mailbox {mailbox}]
password = {password_hash}

[aliases]
# address = mailbox or address, ...     (@domain = ... is the domain's catch-all)
# skipper@{domain} = {mailbox}
# crew@{domain} = {mailbox}, someone@example.net

# A way out, used by the link layer:
# [link gsm]
# up = /usr/local/bin/dial gsm
# down = /usr/local/bin/hangup gsm
# priority = 20
# cost_per_minute = 0.50
# accounts = smarthost, isp-pop

# [account smarthost]
# type = smtp
# host = smtp.example.net
# user = yacht
# secret_file = /etc/nosend/smarthost.secret
"""


def write_atomically(
    path: str | os.PathLike[str], text: str, mode: int = 0o600, *, exclusive: bool = False
) -> None:
    """Replace ``path`` with ``text``: temporary file, fsync, rename, fsync directory.

    A reader sees the old file or the new one, never a mix; a crash leaves one of them.
    When an existing file is replaced as root, its owner is kept, so a server running
    as another user can still read it. With ``exclusive`` an existing ``path`` is never
    replaced (``FileExistsError``): the new file is hard-linked into place, which fails
    atomically if the name is taken.
    """
    target = Path(path)
    directory = target.parent
    owner: tuple[int, int] | None = None
    try:
        st = target.stat()
        owner = (st.st_uid, st.st_gid)
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        if owner is not None and _is_root():
            os.fchown(fd, *owner)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            _move_exclusively(tmp, target)
        else:
            os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _move_exclusively(tmp: str, target: Path) -> None:
    """Move ``tmp`` to ``target`` unless ``target`` exists (``FileExistsError``)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError as e:
        # Some filesystems (FAT, some network mounts) have no hard links: claim the
        # name with an exclusive create, then rename over our own empty file.
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            os.replace(tmp, target)
        except BaseException:
            os.unlink(target)
            raise
    else:
        os.unlink(tmp)


def create_default_config(
    path: str | os.PathLike[str],
    *,
    hostname: str = "localhost",
    data_dir: str | os.PathLike[str] | None = None,
    domain: str | None = None,
    mailbox: str = "user",
    password: str | None = None,
    scheme: str = passwords.DEFAULT_SCHEME,
) -> tuple[Config, str]:
    """Write a new ``mail.cfg`` with one domain and one mailbox; return it and the password.

    The password is generated unless given; the caller shows it once and it is stored
    only as a hash. Listeners are on unprivileged loopback ports, TLS ones off. Raises
    ``FileExistsError`` rather than overwrite an existing file.
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{os.fspath(target)} already exists")
    chosen = password if password is not None else passwords.generate_password()
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    text = sample_config(
        hostname=hostname,
        data_dir=data.expanduser().absolute(),
        domain=(domain or hostname).lower(),
        mailbox=mailbox,
        password_hash=passwords.hash_password(chosen, scheme),
    )
    config = parse_config(text, target)  # refuse to write a file we would not load
    if not target.parent.exists():
        target.parent.mkdir(parents=True, mode=0o700)
    # Exclusive: another process creating the same file at the same moment wins cleanly,
    # and a failed write leaves no empty file behind to block the next attempt.
    write_atomically(target, text, exclusive=True)
    return config, chosen


def file_mode_warning(path: str | os.PathLike[str]) -> str | None:
    """A warning when ``mail.cfg`` is readable or writable by group or others."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{os.fspath(path)}: mode {stat.S_IMODE(mode):04o} lets other users read the "
            "password hashes; chmod 600 it"
        )
    return None
