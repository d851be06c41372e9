"""The notice delivered in place of a remote message held on the server for its size.

Owns: the short id by which people name a held message (:func:`held_id`, what
``nosend held fetch ID`` takes), the summary kept for ``nosend held list``
(:func:`summarise`: sender, subject, date from the header that ``TOP n 20`` returned) and
the text of the notice (:func:`build_notice`). Must not: fetch, deliver or record
anything; the fetch code does, exactly once (see :mod:`nosend_store.fetch_state`).

The notice is a plain UTF-8 text message (RFC 5322 header, RFC 2045 8bit body) from
``MAILER-DAEMON`` at our host name, dated when it was made; header values taken from the
remote message are decoded (RFC 2047) and stripped of line breaks before reuse, so a
hostile subject cannot add header fields to the notice.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import email.utils
import hashlib
import re

__all__ = ["held_id", "summarise", "preview_lines", "build_notice", "PREVIEW_LINES"]

#: Body lines asked for with TOP (RFC 1939 section 7) and shown in the notice.
PREVIEW_LINES = 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_FIELD = 200


def held_id(account: str, uidl: str) -> str:
    """The short, stable id of a held message: 10 hex digits of a digest of the account
    name and the UIDL (a UIDL may be 70 characters of anything printable)."""
    return hashlib.sha256(f"{account}\0{uidl}".encode()).hexdigest()[:10]


def _clean(value: str) -> str:
    return _CONTROL.sub(" ", value).strip()[:_MAX_FIELD]


def _decoded(raw: str) -> str:
    try:
        parts = email.header.decode_header(raw)
    except (ValueError, LookupError):  # malformed encoded words: show them as they are
        return _clean(raw)
    text = "".join(
        p.decode(charset or "ascii", "replace") if isinstance(p, bytes) else p
        for p, charset in _known_charsets(parts)
    )
    return _clean(text)


def _known_charsets(
    parts: list[tuple[bytes | str, str | None]],
) -> list[tuple[bytes | str, str | None]]:
    out: list[tuple[bytes | str, str | None]] = []
    for part, charset in parts:
        try:
            if charset is not None:
                b"".decode(charset)
        except LookupError:
            charset = "latin-1"  # an unknown charset: readable enough, never an error
        out.append((part, charset))
    return out


def summarise(top: bytes) -> tuple[tuple[str, str], ...]:
    """``(name, value)`` for From, Subject and Date of the message whose header (and
    first lines) ``top`` holds; missing fields are left out."""
    header = top.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in top else top
    message = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header)
    out = []
    for name in ("from", "subject", "date"):
        value = message.get(name)
        if value is not None:
            out.append((name, _decoded(str(value))))
    return tuple(out)


def preview_lines(top: bytes, lines: int = PREVIEW_LINES) -> list[str]:
    """The first ``lines`` body lines of ``top`` as text (bytes outside UTF-8 replaced)."""
    if b"\r\n\r\n" not in top:
        return []
    body = top.split(b"\r\n\r\n", 1)[1]
    text = body.decode("utf-8", "replace")
    return [_CONTROL.sub(" ", line)[:160] for line in text.split("\r\n")[:lines]]


def _size(octets: int) -> str:
    if octets >= 1024 * 1024:
        return f"{octets / (1024 * 1024):.1f} MB"
    if octets >= 1024:
        return f"{octets / 1024:.0f} KB"
    return f"{octets} bytes"


def build_notice(
    *,
    hostname: str,
    account: str,
    server: str,
    uidl: str,
    size: int,
    limit: int,
    info: tuple[tuple[str, str], ...],
    preview: list[str],
    date: float,
) -> bytes:
    """The whole notice message, CRLF line ends."""
    fields = dict(info)
    ident = held_id(account, uidl)
    subject = fields.get("subject", "(no subject)")
    header = [
        f"From: Mail fetcher <MAILER-DAEMON@{hostname}>",
        f"Subject: {_clean('Held on the server: ' + subject)}",
        f"Date: {email.utils.formatdate(date, localtime=False)}",
        f"Message-ID: <held.{ident}.{int(date)}@{hostname}>",
        "Auto-Submitted: auto-generated",  # RFC 3834 section 5: no automatic replies
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    body = [
        f"A message of {_size(size)} is waiting on account {account} ({server}):",
        f"it is larger than the limit of {_size(limit)} for this link, so it was not",
        "downloaded.",
        "",
        f"  From:    {fields.get('from', '(unknown)')}",
        f"  Subject: {subject}",
        f"  Date:    {fields.get('date', '(unknown)')}",
        f"  Size:    {size} bytes",
        "",
        "To fetch it at the next exchange, whatever its size:",
        f"    nosend held fetch {ident}",
        "or only over one link (the cheap one):",
        f"    nosend held fetch {ident} --link NAME",
        "To delete it on the server unread:",
        f"    nosend held delete {ident}",
        "",
    ]
    if preview:
        body += ["Its first lines:", ""] + [f"> {line}" for line in preview]
    else:
        body += ["(The server gave no preview of its text.)"]
    text = "\r\n".join(header) + "\r\n\r\n" + "\r\n".join(body) + "\r\n"
    return text.encode("utf-8")
