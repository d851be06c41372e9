"""Delivery status notifications (RFC 3464) for the outbound queue.

Owns: :func:`build_dsn`, which streams a ``multipart/report; report-type=delivery-status``
message (RFC 6522 / RFC 3462) with the three parts RFC 3464 section 2 describes — a
human-readable explanation, the ``message/delivery-status`` fields, and the original
message (``message/rfc822``) or only its header (``text/rfc822-headers``, RFC 3461
section 4.3 ``RET=HDRS``) — and :func:`status_from_reply`, which turns an SMTP reply into
an RFC 3463 status code.

Must not: decide who gets a notification or deliver it; the queue decides (null sender:
nobody, RFC 5321 section 4.5.5; NOTIFY=NEVER: nobody, RFC 3461 section 4.1) and its
``bounce_sink`` delivers. The original message is streamed, never loaded whole.

Line ends: the chunks use LF, the Maildir disk form; every writer in ``nosend_store``
accepts LF or CRLF.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import BinaryIO

__all__ = ["DsnRecipient", "build_dsn", "status_from_reply", "rfc822_date"]

# RFC 3463 section 2: status-code = class "." subject "." detail
_ENHANCED_RE = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")
_BASIC_RE = re.compile(r"^([245])\d\d")


def status_from_reply(reply: str, *, default_class: str = "5") -> str:
    """RFC 3463 status for an SMTP reply line such as ``"550 5.1.1 no such user"``.

    Uses the enhanced code when the server sent one (RFC 2034), else ``X.0.0`` from the
    reply's first digit, else ``<default_class>.0.0``.
    """
    m = _ENHANCED_RE.match(reply)
    if m:
        return m.group(1)
    m = _BASIC_RE.match(reply)
    if m:
        return f"{m.group(1)}.0.0"
    return f"{default_class}.0.0"


def rfc822_date(ts: float) -> str:
    """An RFC 5322 section 3.3 date-time for a POSIX timestamp, in UTC."""
    return format_datetime(datetime.fromtimestamp(ts, UTC))


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """Per-recipient fields of RFC 3464 section 2.3.

    ``action`` is ``failed``, ``delayed``, ``delivered``, ``relayed`` or ``expanded``;
    ``status`` an RFC 3463 code; ``original_recipient`` the ORCPT value as received
    (``"rfc822;user@example.org"``); ``diagnostic`` the remote server's reply, reported as
    ``smtp; <reply>``; ``remote_mta`` the host name that gave it.
    """

    final_recipient: str
    action: str
    status: str
    original_recipient: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None
    last_attempt: float | None = None
    will_retry_until: float | None = None


def _clean(value: str) -> str:
    # Header field values must not contain line breaks (RFC 5322 section 2.2); a hostile
    # server reply must not be able to add fields to the report.
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())


def build_dsn(
    *,
    sender: str,
    recipients: list[DsnRecipient],
    reporting_mta: str,
    now: float,
    arrival: float | None = None,
    envid: str | None = None,
    original: BinaryIO | None = None,
    headers_only: bool = False,
    message_id: str | None = None,
) -> Iterator[bytes]:
    """Stream an RFC 3464 delivery status notification addressed to ``sender``.

    ``original`` is the queued message in disk form (LF line ends); it is copied in
    64 KiB chunks. ``headers_only`` returns only its header section (RET=HDRS).
    """
    boundary = f"=_nosend_{secrets.token_hex(12)}"
    host = _clean(reporting_mta) or "localhost"
    msgid = message_id or f"<{secrets.token_hex(12)}.dsn@{host}>"
    failed = [r for r in recipients if r.action == "failed"]
    if failed:
        subject = "Undelivered Mail Returned to Sender"
    elif any(r.action == "delayed" for r in recipients):
        subject = "Delayed Mail (still being retried)"
    else:
        subject = "Successful Mail Delivery Report"

    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: <{_clean(sender)}>",
        f"Subject: {subject}",
        f"Date: {rfc822_date(now)}",
        f"Message-ID: {msgid}",
        # RFC 3834 section 5: a DSN is an automatic response.
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification",
        "",
        f"This is the mail system at host {host}.",
        "",
    ]
    if failed:
        head.append("Your message could not be delivered to the following recipients:")
    else:
        head.append("Report on your message for the following recipients:")
    head.append("")
    for r in recipients:
        line = f"<{_clean(r.final_recipient)}>: {r.action}"
        if r.status == "4.4.7":
            line += ", delivery time expired"
        if r.diagnostic:
            line += f" ({_clean(r.diagnostic)})"
        head.append(line)
    head.append("")

    # RFC 3464 section 2.2: per-message fields, then one block per recipient (2.3).
    head += [f"--{boundary}", "Content-Type: message/delivery-status", ""]
    head.append(f"Reporting-MTA: dns; {host}")
    if envid:
        head.append(f"Original-Envelope-Id: {_clean(envid)}")
    if arrival is not None:
        head.append(f"Arrival-Date: {rfc822_date(arrival)}")
    for r in recipients:
        head.append("")
        if r.original_recipient:
            head.append(f"Original-Recipient: {_clean(r.original_recipient)}")
        head.append(f"Final-Recipient: rfc822; {_clean(r.final_recipient)}")
        head.append(f"Action: {r.action}")
        head.append(f"Status: {r.status}")
        if r.remote_mta:
            head.append(f"Remote-MTA: dns; {_clean(r.remote_mta)}")
        if r.diagnostic:
            head.append(f"Diagnostic-Code: smtp; {_clean(r.diagnostic)}")
        if r.last_attempt is not None:
            head.append(f"Last-Attempt-Date: {rfc822_date(r.last_attempt)}")
        if r.will_retry_until is not None:
            head.append(f"Will-Retry-Until: {rfc822_date(r.will_retry_until)}")
    head.append("")
    if original is not None:
        ctype = "text/rfc822-headers" if headers_only else "message/rfc822"
        head += [f"--{boundary}", f"Content-Type: {ctype}", ""]
    yield ("\n".join(head) + "\n").encode("utf-8", "replace")

    if original is not None:
        last = b"\n"
        if headers_only:
            for raw in original:
                yield raw
                last = raw[-1:]
                if raw in (b"\n", b"\r\n"):
                    break
        else:
            while data := original.read(64 * 1024):
                yield data
                last = data[-1:]
        if last != b"\n":
            yield b"\n"
        yield b"\n"
    yield f"--{boundary}--\n".encode()
