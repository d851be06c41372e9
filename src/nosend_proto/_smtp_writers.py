"""Replies to wire bytes: multi-line rendering and enhanced status codes.

Owns: RFC 5321 section 4.2 reply syntax (``code-text`` on every line but the last,
``code SP text`` on the last), the 512-octet reply line limit (section 4.5.3.1.5) and the
placement of RFC 2034 enhanced status codes (on every line, never on the greeting, the
HELO/EHLO reply or a 3xx reply).

Must not: decide which reply to send.
"""

from __future__ import annotations

from nosend_proto._errors import LocalProtocolError
from nosend_proto.smtp_events import Reply

__all__ = ["render_reply", "MAX_REPLY_LINE"]

#: RFC 5321 section 4.5.3.1.5: reply line including the code and CRLF.
MAX_REPLY_LINE = 512


def render_reply(reply: Reply, enhanced: str | None, extra_lines: tuple[str, ...] = ()) -> bytes:
    """Render ``reply`` with ``enhanced`` (or none) and ``extra_lines`` appended (EHLO)."""
    text = reply.text
    if not extra_lines and "\n" not in text:
        # Nearly every reply is one line: one format, no list and no loop.
        if enhanced:
            data = f"{reply.code} {enhanced} {text}\r\n".encode()
        else:
            data = f"{reply.code} {text}\r\n".encode()
        if len(data) > MAX_REPLY_LINE:
            raise LocalProtocolError(
                f"reply line longer than {MAX_REPLY_LINE} octets (RFC 5321 section 4.5.3.1.5)"
            )
        return data
    # Several lines (RFC 5321 section 4.2.1): "code-" on all but the last, "code SP" on
    # the last, built with joins rather than formatted and encoded one by one.
    lines = text.split("\n")
    lines += extra_lines
    code = reply.code
    lead = f"{code}-{enhanced} " if enhanced else f"{code}-"
    tail = f"{code} {enhanced} " if enhanced else f"{code} "
    body = lead + f"\r\n{lead}".join(lines[:-1]) + f"\r\n{tail}{lines[-1]}\r\n"
    data = body.encode()
    # Text holds no CR (Reply refuses it), so the rendered lines are exactly the CRLF
    # separated parts; only a long reply can hold a long line.
    if len(data) > MAX_REPLY_LINE and any(
        len(line) + 2 > MAX_REPLY_LINE for line in data.split(b"\r\n")
    ):
        raise LocalProtocolError(
            f"reply line longer than {MAX_REPLY_LINE} octets (RFC 5321 section 4.5.3.1.5)"
        )
    return data
