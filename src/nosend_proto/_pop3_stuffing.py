"""POP3 multi-line message encoding: line-end conversion, byte-stuffing, TOP, wire size.

Owns: turning a stored message (a stream of chunks with LF or CRLF line ends, maybe no
final newline) into what RETR and TOP put on the wire (RFC 1939 section 3: CRLF lines, a
"." doubled at the start of a line, ``.CRLF`` at the end), and counting the octets LIST
reports for it. Works with bulk ``bytes`` operations per chunk and carries a few bytes of
state between chunks, so memory is bounded by the chunk size and there is no per-line
loop (only TOP walks its ``n`` body lines, and stuffing loops once per chunk that holds
a line starting with ".").

Must not: know commands, states or replies.

The rules, identical for the encoder and the size functions, and identical to the
store's on-disk normalisation (``nosend_store._durable.LineEndingNormaliser``), so a size
recorded at delivery is the size RETR sends whichever form the session streams:

* a line end is LF with any CRs right before it (``a\\r\\r\\n`` is the line ``a``; RFC 5321
  section 2.3.8 has no bare CR, so they can only be a mangled line end); it goes out
  as CRLF; every other CR is data and kept;
* a non-empty message that does not end with a line end gets one (trailing CRs count
  as that line end, cut short);
* the size counts the encoded lines *without* the stuffing dots and without the final
  ``.CRLF``: the message as the client sees it after undoing the transfer encoding
  (RFC 1939 section 11; fetchmail subtracts each stuffed dot when it counts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MessageEncoder", "WireSizeCounter", "wire_size", "TERMINATOR"]

#: The end of every multi-line response (RFC 1939 section 3).
TERMINATOR = b".\r\n"

_CRS_LF = re.compile(rb"\r+\n")
# A line starting with "." in CRLF text (every LF there ends a line). A regular
# expression led by the literal LF scans text about twice as fast as
# ``bytes.find(b"\r\n.")``, whose skip table is spoilt by the common "m", "n", "M"
# and "J" sharing bloom bits with CR, LF and "." (100 KB of prose: ~50 us vs ~100 us).
_DOT_LINE = re.compile(rb"\n\.")
_STUFF_LOOP_MAX = 32


def _carry_crs(held: int, data: bytes) -> tuple[bytes, int]:
    """Put back the CRs held from the previous chunk, and hold this chunk's trailing CRs:
    they may belong to a line end whose LF arrives in the next chunk."""
    if held:
        data = b"\r" * held + data
    if data[-1:] == b"\r":
        kept = data.rstrip(b"\r")
        return kept, len(data) - len(kept)
    return data, 0


class _LineEnds:
    """Turn stored chunks into CRLF text; holds back trailing CRs between chunks."""

    __slots__ = ("_held_crs", "last")

    def __init__(self) -> None:
        self._held_crs = 0
        #: Last byte returned (-1 before any): LF means "at the start of a line".
        self.last = -1

    def convert(self, data: bytes) -> bytes:
        data, self._held_crs = _carry_crs(self._held_crs, data)
        if not data:
            return b""
        if b"\r" not in data:
            out = data.replace(b"\n", b"\r\n")  # the Maildir case: LF only
        else:
            out = data.replace(b"\r", b"").replace(b"\n", b"\r\n")
            if out != data:  # not plain CRLF text: bare CRs or CR runs before LF
                out = _CRS_LF.sub(b"\n", data).replace(b"\n", b"\r\n")
            else:
                out = data
        self.last = out[-1]
        return out

    def finish(self) -> bytes:
        """The line end the message lacks, if any."""
        if self._held_crs or self.last not in (-1, 0x0A):
            self._held_crs = 0
            self.last = 0x0A
            return b"\r\n"
        return b""


def _stuff(data: bytes, at_line_start: bool) -> bytes:
    """Double the dot starting each line of CRLF text ``data``.

    One forward scan for LF "." (see ``_DOT_LINE``), a slice per dotted line; past
    ``_STUFF_LOOP_MAX`` of them in one chunk the rest goes to a bulk replace, so even a
    message of nothing but dot lines costs no per-line loop.
    """
    search = _DOT_LINE.search
    found = search(data)
    if found is None:
        if at_line_start and data[0] == 0x2E:
            return b"." + data
        return data
    parts = [b"."] if at_line_start and data[0] == 0x2E else []
    start = 0
    for _ in range(_STUFF_LOOP_MAX):
        idx = found.start() + 1  # the dot
        parts.append(data[start:idx])
        start = idx  # the dot itself starts the next part, after the added one
        parts.append(b".")
        found = search(data, start)
        if found is None:
            parts.append(data[start:])
            return b"".join(parts)
    parts.append(data[start:].replace(b"\n.", b"\n.."))
    return b"".join(parts)


class MessageEncoder:
    """Encode one stored message for RETR (``top_lines=None``) or TOP (``top_lines=n``).

    Call :meth:`feed` with each chunk and :meth:`finish` once; concatenated, the results
    are the response body including the terminating ``.CRLF``.
    """

    __slots__ = ("_ends", "_top", "_in_header", "done")

    def __init__(self, top_lines: int | None = None) -> None:
        self._ends = _LineEnds()
        self._top = top_lines  # body lines still to send for TOP, None for RETR
        self._in_header = top_lines is not None
        #: True once TOP has sent all it needs; later chunks are dropped unread.
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Encode the next chunk of the stored message."""
        if self.done:
            return b""
        at_line_start = self._ends.last in (-1, 0x0A)
        data = self._ends.convert(data)
        if not data:
            return b""
        # RFC 1939 section 3: a line starting with "." gets one more.
        data = _stuff(data, at_line_start)
        if self._top is not None:
            data = self._truncate(data, at_line_start)
        return data

    def _truncate(self, data: bytes, at_line_start: bool) -> bytes:
        # Runs on encoded output: stuffing adds no LF, and a CRLF never straddles two
        # outputs (trailing CRs are held back), so lines are counted by LF alone.
        start = 0
        if self._in_header:
            # RFC 1939 section 7 (TOP): the header, then the blank line separating it.
            if at_line_start and data.startswith(b"\r\n"):
                start = 2
            else:
                idx = data.find(b"\n\r\n")
                if idx < 0:
                    return data
                start = idx + 3
            self._in_header = False
        remaining = self._top
        assert remaining is not None
        if remaining == 0:
            self.done = True
            return data[:start]
        lines = data.count(b"\n", start)
        if lines < remaining:
            self._top = remaining - lines
            return data
        pos = start
        for _ in range(remaining):  # at most n: the body lines TOP asked for
            pos = data.index(b"\n", pos) + 1
        self._top = 0
        self.done = True
        return data[:pos]

    def finish(self) -> bytes:
        """End the message: complete the last line and add the terminating ``.CRLF``."""
        if self.done:
            return TERMINATOR
        self.done = True
        return self._ends.finish() + TERMINATOR


class WireSizeCounter:
    """Count :func:`wire_size` incrementally, for a store that writes a message in chunks."""

    __slots__ = ("_size", "_held_crs", "_last")

    def __init__(self) -> None:
        self._size = 0
        self._held_crs = 0
        self._last = -1  # last byte counted, -1 before any

    def feed(self, data: bytes) -> None:
        """Account for the next chunk of the stored message."""
        data, self._held_crs = _carry_crs(self._held_crs, data)
        if not data:
            return
        if b"\r" not in data:
            self._size += len(data) + data.count(b"\n")
        elif data.replace(b"\r", b"").replace(b"\n", b"\r\n") == data:
            self._size += len(data)  # already plain CRLF text
        else:
            lf = _CRS_LF.sub(b"\n", data)
            self._size += len(lf) + lf.count(b"\n")
        self._last = data[-1]

    @property
    def size(self) -> int:
        """The wire size of everything fed so far, as if the message ended here."""
        if self._held_crs or self._last not in (-1, 0x0A):
            return self._size + 2
        return self._size

    def copy(self) -> WireSizeCounter:
        """An independent counter in the same state."""
        other = WireSizeCounter()
        other._size = self._size
        other._held_crs = self._held_crs
        other._last = self._last
        return other


def wire_size(message: bytes | Iterable[bytes]) -> int:
    """Octets RETR sends for ``message``, without stuffing dots, status line and ``.CRLF``.

    This is the size LIST, STAT and the RETR status line must report (RFC 1939 section
    11); ``message`` is the stored content, whole or as an iterable of chunks.
    """
    counter = WireSizeCounter()
    if isinstance(message, bytes | bytearray | memoryview):
        counter.feed(bytes(message))
    else:
        for chunk in message:
            counter.feed(chunk)
    return counter.size
