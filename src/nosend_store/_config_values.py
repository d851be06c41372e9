"""Value parsers for ``mail.cfg``: sizes, durations, booleans, lists, names, addresses.

Owns: turning the text of one value into a typed value, or raising :class:`_Bad` with
a message that the section parser prefixes with the key and the line. The two public
parsers, :func:`parse_size` and :func:`parse_duration`, raise ``ValueError`` instead and
are re-exported by :mod:`nosend_store.config`. Must not: know about lines, sections or
files, or echo a secret's text in a message.

Sizes are a number with an optional ``K``, ``M`` or ``G`` suffix (powers of 1024);
durations are one or more number+unit pairs with units ``s``, ``m``, ``h``, ``d``
(``90s``, ``5m``, ``1h30m``, ``5d``; a bare number is seconds). Booleans are
``yes``/``no`` (also ``true``/``false``, ``on``/``off``, ``1``/``0``). Lists are
comma-separated. Relative paths are relative to the directory holding ``mail.cfg``.
A link's probe, hours, budget and rate and the schedule's times are read by
:mod:`nosend_store.link_values`, shared with the link layer.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path

from nosend_store import passwords
from nosend_store._config_model import URGENT_ANYONE, IPNetwork, ListenAddress
from nosend_store.link_values import (
    Budget,
    Endpoint,
    Hours,
    LinkValueError,
    parse_rate,
    parse_times,
)


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


def _mailbox_or_address(value: str) -> str:
    return _address(value) if "@" in value else _mailbox_name(value)


def _secret_command(value: str) -> tuple[str, ...]:
    command = _command(value)
    if not command or not command[0]:
        raise _Bad("no command to run")
    return command


# A SHA-256 digest as 64 hex digits, or as 32 hex pairs joined by colons (how openssl
# x509 -fingerprint and mpop --serverinfo print it).
_FINGERPRINT_RE = re.compile(r"[0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")


def _fingerprint(value: str) -> str:
    if _FINGERPRINT_RE.fullmatch(value) is None:
        raise _Bad("not a SHA-256 fingerprint (64 hex digits, colons allowed between pairs)")
    return value.replace(":", "").lower()


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


def _name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise _Bad(f"bad name {value!r} (letters, digits, '.', '_', '-')")
    return value


def _path_in(base: Path) -> Callable[[str], Path | None]:
    def parse(value: str) -> Path | None:
        if not value:
            return None
        return base / Path(value).expanduser()

    return parse


# -- [link] and [schedule] values (the syntax is nosend_store.link_values') --------------

_OFF = {"no", "off", "never", "none"}


def _link_value(parse: Callable[[str], object]) -> Callable[[str], object]:
    def wrapped(value: str) -> object:
        try:
            return parse(value)
        except LinkValueError as e:
            raise _Bad(str(e)) from None

    return wrapped


_probe = _link_value(Endpoint.parse)
_hours = _link_value(Hours.parse)
_budget = _link_value(Budget.parse)
_rate = _link_value(parse_rate)
_times = _link_value(parse_times)


def _duration_or_zero(value: str) -> float:
    """A duration that may be 0 (``setup_seconds`` of a link that is always up)."""
    try:
        return parse_duration(value)
    except ValueError as e:
        raise _Bad(str(e)) from None


def _duration_or_off(value: str) -> float | None:
    """A positive duration, or ``no``/``off``/``never`` for None (the trigger is off)."""
    if value.lower() in _OFF:
        return None
    return _duration(value)


def _urgent(value: str) -> tuple[str, ...]:
    """``no`` (nobody), ``yes``/``all``/``*`` (anyone), or mailbox names."""
    v = value.strip().lower()
    if v in _OFF or not v:
        return ()
    if v in ("yes", "all", "anyone", URGENT_ANYONE):
        return (URGENT_ANYONE,)
    return tuple(_mailbox_name(item) for item in _list(value))


def _link_mode(value: str) -> str:
    """``auto``, ``cost`` or a link's name (checked against the links later)."""
    if value.lower() in ("auto", "cost"):
        return value.lower()
    return _name(value)
