"""The trace header a receiving SMTP server prepends (RFC 5321 section 4.4).

Owns: building one ``Received:`` field from values the caller passes in, and the
``with`` protocol name (RFC 3848, RFC 6531 section 3.7.3). Pure functions: no clock is
read here; the caller passes the time of receipt.

Must not: look anything up (reverse DNS, the clock, configuration).
"""

from __future__ import annotations

import re
from datetime import datetime

__all__ = ["protocol_name", "received_header"]

# What may appear bare in a clause; anything else is replaced so that a client's HELO
# cannot break the header's structure (comments, CRLF injection).
_UNSAFE_RE = re.compile(r"[^\x21-\x27\x2a-\x5b\x5d-\x7e\u0080-\U0010ffff]")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
_COMMENT_UNSAFE_RE = re.compile(r"[()\\\x00-\x1f\x7f]")
_ID_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+|<[^<>\s]+>")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _date_time(when: datetime) -> str:
    """RFC 5322 section 3.3 date-time, as ``email.utils.format_datetime`` writes it.

    Written out because that function costs several microseconds a message (a time tuple
    and ``strftime``), which a server receiving small messages pays on every one.
    """
    offset = when.utcoffset()
    assert offset is not None
    seconds = offset.days * 86400 + offset.seconds
    if offset.microseconds or seconds % 60:
        zone = when.strftime("%z")  # an offset in seconds: let strftime say it
    else:
        minutes = abs(seconds) // 60
        zone = f"{'-' if seconds < 0 else '+'}{minutes // 60:02d}{minutes % 60:02d}"
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d}"
        f" {when.hour:02d}:{when.minute:02d}:{when.second:02d} {zone}"
    )


def protocol_name(*, extended: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    """The ``with`` keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848 section 2)
    or UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA when SMTPUTF8 was used (RFC 6531
    section 3.7.3)."""
    if not extended:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def _clean(text: str, utf8: bool = True, *, domain: bool = True) -> str:
    if not utf8 and not text.isascii():
        # RFC 6531 section 3.7.3: in a message sent without SMTPUTF8 the trace fields
        # must conform to RFC 5321, so a U-label (say, a lenient UTF-8 EHLO name)
        # becomes its A-label, or is masked when it is not a valid IDN.
        try:
            if not domain:
                raise UnicodeError("not a domain")
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            text = _NON_ASCII_RE.sub("_", text)
    return _UNSAFE_RE.sub("_", text) or "unknown"


def received_header(
    *,
    from_helo: str,
    peer_address: str,
    by_host: str,
    protocol: str,
    when: datetime,
    peer_hostname: str | None = None,
    id: str | None = None,
    for_recipient: str | None = None,
    tls_info: str | None = None,
) -> bytes:
    """Build ``Received: from ... by ... with ... id ... for ...; date`` with CRLFs.

    ``peer_address`` is the IP address (IPv6 addresses get the ``IPv6:`` tag, RFC 5321
    section 4.1.3); ``peer_hostname`` the verified reverse-DNS name if the caller has one.
    ``for_recipient`` is a mailbox (given only for a single recipient, to avoid leaking
    the others, RFC 5321 section 7.2). ``tls_info`` becomes a comment after the protocol
    (e.g. ``"TLSv1.3 TLS_AES_256_GCM_SHA384"``). ``when`` must carry a time zone.
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("when must be timezone-aware (RFC 5322 section 3.3 date-time)")
    utf8 = protocol.startswith("UTF8")
    literal = f"[IPv6:{peer_address}]" if ":" in peer_address else f"[{peer_address}]"
    literal = "[" + _clean(literal[1:-1]) + "]"
    # RFC 5321 4.4: Extended-Domain = Domain FWS "(" TCP-info ")"; TCP-info =
    # address-literal / ( Domain FWS address-literal ).
    tcp_info = f"{_clean(peer_hostname, utf8)} {literal}" if peer_hostname else literal
    lines = [f"Received: from {_clean(from_helo, utf8)} ({tcp_info})"]
    by = f"\tby {_clean(by_host, utf8)} with {_clean(protocol)}"
    if tls_info:
        by += f" ({_COMMENT_UNSAFE_RE.sub('_', tls_info)})"
    if id is not None:
        if not _ID_RE.fullmatch(id):
            raise ValueError("id must be an Atom or a msg-id (RFC 5321 section 4.4)")
        by += f" id {id}"
    lines.append(by)
    stamp = _date_time(when)
    if for_recipient is not None:
        lines.append(f"\tfor <{_clean(for_recipient, utf8, domain=False)}>; {stamp}")
    else:
        lines[-1] += f"; {stamp}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
