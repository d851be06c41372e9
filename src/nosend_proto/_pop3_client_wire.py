"""Reading what a POP3 server sends: lines, status indicators, listings, message bodies.

Owns: the client's receive buffer (lines bounded by a limit the caller passes per call,
raw bytes for bodies, unread bytes put back after a body ends), the streaming decoder
that undoes RFC 1939 section 3 dot-stuffing without ever holding a whole message or
even a whole line, and the parsers of status lines (RFC 2449 section 8 response codes),
CAPA lines (RFC 2449 section 6), scan and unique-id listings and the APOP timestamp.

Must not: know commands, states or the order of answers (``pop3_client`` does).
Every parser raises ``RemoteProtocolError`` for what a server must not send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nosend_proto._errors import RemoteProtocolError
from nosend_proto.pop3_client_events import Capabilities, ScanEntry, UidEntry

__all__ = [
    "LineReader",
    "BodyDecoder",
    "Status",
    "parse_status",
    "parse_capabilities",
    "parse_scan",
    "parse_uid",
    "find_timestamp",
    "strip_line",
]

# RFC 2449 section 8: resp-code = "[" resp-level *("/" resp-level) "]",
# resp-level = 1*rchar, rchar = ALPHA / DIGIT / "-".
_RESP_CODE = re.compile(rb"\[([A-Za-z0-9-]+(?:/[A-Za-z0-9-]+)*)\]")
# RFC 1939 section 7 (APOP): the timestamp is an RFC 822 msg-id, "<" ... ">".
_TIMESTAMP = re.compile(rb"<[\x21-\x3b\x3d\x3f-\x7e]+>")
# RFC 1939 section 7 (UIDL): 1 to 70 characters in the range 0x21 to 0x7E.
_UID = re.compile(rb"[\x21-\x7e]{1,70}")
_NUMBER = re.compile(rb"[0-9]{1,18}")  # a message number or size; no huge integers
_TERMINATOR = b".\r\n"
_CRLF_TERMINATOR = b"\r\n.\r\n"


class LineReader:
    """Received bytes, handed back as lines or as raw runs (for message bodies).

    Like ``_receivebuffer.ReceiveBuffer`` it never rescans what it has searched; unlike
    it, an overlong line is the server's fatal error (a client cannot answer it and
    resynchronise), and bytes read past a body's end can be put back.
    """

    __slots__ = ("_data", "_scanned")

    def __init__(self) -> None:
        self._data = bytearray()
        self._scanned = 0

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._data += data

    def next_line(self, max_line: int) -> bytes | None:
        """The next line with its LF, or ``None`` when more bytes are needed."""
        data = self._data
        idx = data.find(b"\n", self._scanned)
        if idx < 0 or idx >= max_line:
            if len(data) >= max_line:
                raise RemoteProtocolError(f"server line longer than {max_line} octets")
            self._scanned = len(data)
            return None
        line = bytes(data[: idx + 1])
        del data[: idx + 1]
        self._scanned = 0
        return line

    def take_all(self) -> bytes:
        """Remove and return everything buffered."""
        out = bytes(self._data)
        self._data.clear()
        self._scanned = 0
        return out

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what is buffered."""
        if data:
            self._data[0:0] = data
            self._scanned = 0


def strip_line(line: bytes) -> bytes:
    """The line without its CRLF (a bare LF is tolerated on status and listing lines)."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


class BodyDecoder:
    """Undo RFC 1939 section 3 byte-stuffing of a multi-line body, chunk by chunk.

    :meth:`feed` returns the decoded bytes (CRLF line ends kept) and how many input bytes
    it consumed; once the terminating ``CRLF.CRLF`` is seen, :attr:`done` is true and
    the bytes after it were not consumed. Only ``CRLF`` ends a line here: a server that
    sends bare LF never ends its body, and the application sees it close.

    Bulk operations only, whatever the content: one search for the terminator and one
    ``replace`` of CRLF "." by CRLF per chunk (every line starting with "." loses that
    dot: ``..`` becomes ``.``, and a lone dot followed by other octets is stripped as
    the RFC says). The body is treated as if preceded by CRLF, so its first line is no
    special case; at most four bytes that may begin the terminator wait for the next
    chunk.
    """

    __slots__ = ("_held", "_skip", "done")

    def __init__(self) -> None:
        self._held = b"\r\n"  # the body starts a line: as if a CRLF came before it
        self._skip = 2  # output octets still to drop: that CRLF
        #: True once the terminator was read.
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """Decode ``data``; return (decoded bytes, octets of ``data`` consumed)."""
        held = self._held
        buf = held + data
        end = buf.find(b"\r\n" + _TERMINATOR)
        if end >= 0:
            self.done = True
            self._held = b""
            consumed = end + 5 - len(held)
            body = buf[: end + 2]
        else:
            consumed = len(data)
            keep = next((k for k in (4, 3, 2, 1) if buf.endswith(_CRLF_TERMINATOR[:k])), 0)
            self._held = buf[len(buf) - keep :]
            body = buf[: len(buf) - keep]
        out = body.replace(b"\r\n.", b"\r\n")
        if self._skip:
            cut = min(self._skip, len(out))
            out = out[cut:]
            self._skip -= cut
        return out, consumed


@dataclass(frozen=True, slots=True)
class Status:
    """A parsed status line: ``+OK`` or ``-ERR``, the response code and the text."""

    ok: bool
    code: str | None
    text: str


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def parse_status(line: bytes) -> Status:
    """Parse ``+OK [text]`` / ``-ERR [[code] text]`` (RFC 1939 section 3, RFC 2449 s8)."""
    raw = strip_line(line)
    if raw.startswith(b"+OK"):
        ok, rest = True, raw[3:]
    elif raw.startswith(b"-ERR"):
        ok, rest = False, raw[4:]
    else:
        raise RemoteProtocolError(f"not a POP3 status line: {raw[:40]!r}")
    if rest and rest[:1] != b" ":
        raise RemoteProtocolError(f"not a POP3 status line: {raw[:40]!r}")
    rest = rest[1:]
    code = None
    match = _RESP_CODE.match(rest)
    if match:
        code = match.group(1).decode("ascii").upper()
        rest = rest[match.end() :].lstrip(b" ")
    return Status(ok, code, _text(rest))


def find_timestamp(text: str) -> str | None:
    """The APOP timestamp ``<...>`` in a greeting's text (RFC 1939 section 7), if any."""
    match = _TIMESTAMP.search(text.encode("utf-8", "replace"))
    return match.group(0).decode("ascii") if match else None


def parse_scan(line: bytes) -> ScanEntry:
    """``msg octets [more]`` (RFC 1939 section 5: more information may follow)."""
    parts = line.split(b" ")
    if len(parts) < 2 or not _NUMBER.fullmatch(parts[0]) or not _NUMBER.fullmatch(parts[1]):
        raise RemoteProtocolError(f"malformed scan listing {line[:40]!r}")
    msgno = int(parts[0])
    if msgno < 1:
        raise RemoteProtocolError("message number 0 in a scan listing")
    return ScanEntry(msgno, int(parts[1]))


def parse_uid(line: bytes) -> UidEntry:
    """``msg unique-id`` (RFC 1939 section 7: 1-70 characters 0x21-0x7E)."""
    parts = line.split(b" ")
    if len(parts) != 2 or not _NUMBER.fullmatch(parts[0]) or not _UID.fullmatch(parts[1]):
        raise RemoteProtocolError(f"malformed unique-id listing {line[:80]!r}")
    msgno = int(parts[0])
    if msgno < 1:
        raise RemoteProtocolError("message number 0 in a unique-id listing")
    return UidEntry(msgno, parts[1].decode("ascii"))


def parse_stat(text: str) -> tuple[int, int]:
    """``nn mm`` after ``+OK`` of STAT (RFC 1939 section 5)."""
    parts = text.encode("utf-8", "replace").split(b" ")
    if len(parts) < 2 or not _NUMBER.fullmatch(parts[0]) or not _NUMBER.fullmatch(parts[1]):
        raise RemoteProtocolError(f"malformed STAT answer {text[:40]!r}")
    return int(parts[0]), int(parts[1])


def parse_capabilities(lines: list[bytes]) -> Capabilities:
    """Interpret CAPA lines (RFC 2449 section 6); unknown ones land in ``other``.

    Capability names are case-insensitive (RFC 2449 section 5); a malformed argument of
    a known capability is kept in ``other`` rather than guessed at.
    """
    flags: dict[str, bool] = {}
    sasl: tuple[str, ...] = ()
    expire: str | None = None
    expire_user = False
    delay: int | None = None
    delay_user = False
    implementation: str | None = None
    other: list[str] = []
    simple = {
        "TOP": "top",
        "UIDL": "uidl",
        "USER": "user",
        "PIPELINING": "pipelining",
        "STLS": "stls",
        "RESP-CODES": "resp_codes",
        "AUTH-RESP-CODE": "auth_resp_code",
    }
    for raw in lines:
        text = _text(raw)
        name, _, rest = text.partition(" ")
        name = name.upper()
        args = rest.split()
        if name in simple and not args:
            flags[simple[name]] = True
        elif name == "UTF8":  # RFC 6856 section 2: "UTF8" or "UTF8 USER"
            flags["utf8"] = True
        elif name == "SASL":  # RFC 2449 section 6.3
            sasl = tuple(a.upper() for a in args)
        elif name == "EXPIRE" and args and (args[0].upper() == "NEVER" or args[0].isdigit()):
            # RFC 2449 section 6.7: NEVER or days, "USER" when it differs by user.
            expire = "NEVER" if args[0].upper() == "NEVER" else str(int(args[0][:9]))
            expire_user = args[1:2] == ["USER"]
        elif name == "LOGIN-DELAY" and args and args[0].isdigit() and len(args[0]) <= 9:
            delay = int(args[0])  # RFC 2449 section 6.5: seconds
            delay_user = args[1:2] == ["USER"]
        elif name == "IMPLEMENTATION":  # RFC 2449 section 6.9
            implementation = rest
        else:
            other.append(text)
    return Capabilities(
        advertised=True,
        sasl=sasl,
        expire=expire,
        expire_per_user=expire_user,
        login_delay=delay,
        login_delay_per_user=delay_user,
        implementation=implementation,
        other=tuple(other),
        **flags,
    )
