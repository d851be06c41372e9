"""The SMTP client's wire formats: server replies in, body octets out.

Owns: reading multi-line replies (RFC 5321 section 4.2.1) with bounded line length and
line count, parsing the EHLO keywords (section 4.1.1.1 and the extensions' RFCs),
RFC 3463 enhanced codes in replies (RFC 2034 section 3), and encoding a streamed body:
bare CR and bare LF become CRLF (section 2.3.8), dots are stuffed for DATA (section
4.5.2), a missing final CRLF is added.

Must not: know the conversation's state, or decide what to send.
"""

from __future__ import annotations

import re

from nosend_proto._errors import RemoteProtocolError
from nosend_proto.smtp_client_events import Extensions
from nosend_proto.smtp_events import Reply

__all__ = ["ReplyReader", "parse_ehlo", "LineEnds", "DotStuffer"]

# RFC 5321 section 4.2: Reply-code = %x32-35 %x30-35 %x30-39, then "-" or SP or CRLF.
_LINE_RE = re.compile(rb"([2-5][0-5][0-9])([ -]|(?=\r?\n$))")
# RFC 3463 section 2 / RFC 2034 section 3: class "." subject "." detail, then SP.
_ENHANCED_RE = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: |$)")
# Controls are shown as "?" (a reply's text goes to logs and into Reply, which refuses CR
# and NUL); TAB is kept.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SIZE_RE = re.compile(r"[0-9]{1,20}")


class ReplyReader:
    """Turn received bytes into :class:`Reply` values, one complete reply at a time.

    Raises :class:`RemoteProtocolError` for a line that is not a reply line, a code that
    changes within a reply, a line over ``max_line`` (as soon as it is longer, without
    waiting for its end) or a reply over ``max_lines`` lines. Searching for line ends
    never rescans what was searched already, so a server trickling bytes costs linear
    time. Memory: ``max_line`` octets of a partial line, plus what was fed since the
    last call, plus the lines of the reply being read.
    """

    __slots__ = ("_data", "_scanned", "max_line", "max_lines", "_code", "_texts")

    def __init__(self, max_line: int, max_lines: int) -> None:
        self._data = bytearray()
        self._scanned = 0  # octets of _data known to hold no LF
        #: The longest reply line accepted, terminator included.
        self.max_line = max_line
        #: The most lines one reply may have.
        self.max_lines = max_lines
        self._code = b""
        self._texts: list[str] = []

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._data += data

    def pending(self) -> int:
        """Octets received and not yet part of a returned reply."""
        return len(self._data) + sum(len(t) for t in self._texts)

    def _next_line(self) -> bytes | None:
        data = self._data
        end = data.find(b"\n", self._scanned) + 1
        if not end:
            if len(data) >= self.max_line:
                raise RemoteProtocolError(f"reply line longer than {self.max_line} octets")
            self._scanned = len(data)
            return None
        if end > self.max_line:
            raise RemoteProtocolError(f"reply line longer than {self.max_line} octets")
        line = bytes(data[:end])
        del data[:end]
        self._scanned = 0
        return line

    def next_reply(self) -> Reply | None:
        """The next complete reply, or ``None`` when more data is needed."""
        while True:
            line = self._next_line()
            if line is None:
                return None
            match = _LINE_RE.match(line)
            if match is None:
                raise RemoteProtocolError(f"not an SMTP reply line: {line[:40]!r}")
            code = match.group(1)
            if self._code and code != self._code:
                raise RemoteProtocolError("reply code changed within a multi-line reply")
            self._code = code
            end = -2 if line.endswith(b"\r\n") else -1
            text = line[4:end].decode("utf-8", "replace")
            self._texts.append(_CONTROL_RE.sub("?", text))
            if match.group(2) == b"-":
                if len(self._texts) >= self.max_lines:
                    raise RemoteProtocolError(f"reply longer than {self.max_lines} lines")
                continue
            texts, self._texts, self._code = self._texts, [], b""
            return _make_reply(int(code), texts)

    def clear(self) -> int:
        """Drop everything buffered; return how many octets were dropped."""
        dropped = self.pending()
        self._data.clear()
        self._scanned = 0
        self._texts = []
        self._code = b""
        return dropped


def _make_reply(code: int, texts: list[str]) -> Reply:
    enhanced: str | None = None
    match = _ENHANCED_RE.match(texts[0])
    if match is not None and int(match.group(1)) == code // 100:
        # RFC 2034 section 3: the code starts every line's text; keep it once.
        enhanced = f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
        prefix = enhanced + " "
        texts = [t[len(prefix) :] if t.startswith(prefix) else t for t in texts]
        if texts[0] == enhanced:
            texts[0] = ""
    return Reply(code, "\n".join(texts), enhanced)


def parse_ehlo(reply: Reply) -> Extensions:
    """The extensions of a 250 reply to EHLO (RFC 5321 section 4.1.1.1).

    The first line is the server's name and greeting; each further line is
    ``ehlo-keyword *( SP ehlo-param )``. ``AUTH=...`` (a pre-RFC 2554 form some servers
    still send) counts as AUTH. Unknown keywords are kept; malformed ones are ignored.
    """
    keywords: set[str] = set()
    size: int | None = None
    auth: list[str] = []
    for line in reply.text.split("\n")[1:]:
        if line.upper().startswith("AUTH="):
            line = "AUTH " + line[5:]
        words = line.split()
        if not words:
            continue
        keyword = words[0].upper()
        keywords.add(keyword)
        if keyword == "SIZE":
            # RFC 1870 section 4: SIZE [limit]; 0 or none means no fixed limit.
            if len(words) > 1 and _SIZE_RE.fullmatch(words[1]):
                size = int(words[1])
            elif size is None:
                size = 0
        elif keyword == "AUTH":
            auth += [w.upper() for w in words[1:] if w.upper() not in auth]
    return Extensions(frozenset(keywords), size, tuple(auth))


# RFC 5321 section 2.3.8: a CR not followed by LF, an LF not preceded by CR.
_BARE_LF_RE = re.compile(rb"\n(?<!\r\n)")
_BARE_CR_RE = re.compile(rb"\r(?!\n)")
_ANY_EOL_RE = re.compile(rb"\r\n|\r|\n")


class LineEnds:
    """Rewrite every bare CR and bare LF as CRLF across arbitrarily split chunks.

    A CR at the end of a chunk is held back until the next chunk (or :meth:`finish`)
    says whether an LF follows. Tracks whether the output so far ends a line.
    """

    __slots__ = ("_cr", "at_line_start")

    def __init__(self) -> None:
        self._cr = False
        self.at_line_start = True  # nothing sent yet: the body starts a line

    def feed(self, data: bytes) -> bytes:
        """Normalise one chunk; the result never ends with a lone CR."""
        if self._cr:
            data = b"\r" + data
        self._cr = data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
        if _BARE_LF_RE.search(data) or _BARE_CR_RE.search(data):
            data = _ANY_EOL_RE.sub(b"\r\n", data)
        if data:
            self.at_line_start = data.endswith(b"\r\n")
        return data

    def finish(self) -> bytes:
        """The body ended: a held CR becomes CRLF; a last line without one gets CRLF."""
        tail = b"\r\n" if self._cr or not self.at_line_start else b""
        self._cr = False
        self.at_line_start = True
        return tail


class DotStuffer:
    """Dot-stuffing for DATA (RFC 5321 section 4.5.2) over CRLF-normalised chunks."""

    __slots__ = ("_at_line_start",)

    def __init__(self) -> None:
        self._at_line_start = True

    def feed(self, data: bytes) -> bytes:
        """Double every dot that starts a line; ``data`` has CRLF line ends only."""
        if not data:
            return data
        out = data.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and data.startswith(b"."):
            out = b"." + out
        self._at_line_start = data.endswith(b"\r\n")
        return out
