"""POP3 multi-line message encoding: line-end conversion, byte-stuffing, TOP, wire size.

Owns: turning a stored message (a stream of chunks with LF or CRLF line ends, maybe no
final newline) into what RETR and TOP put on the wire (RFC 1939 section 3: CRLF lines, a
"." doubled at the start of a line, ``.CRLF`` at the end), and counting the octets LIST
reports for it. Works with bulk ``bytes`` operations per chunk and carries two flags
between chunks, so memory is bounded by the chunk size and there is no per-line loop
(except TOP's body lines, at most ``n``).

Must not: know commands, states or replies.

The rules, identical for the encoder and the size functions:

* CRLF stays CRLF; a bare LF becomes CRLF; a CR not followed by LF is kept as is.
* A non-empty message whose last byte is not LF gets CRLF appended (a final CR is taken
  as a CRLF cut short and only gets its LF).
* The size counts the encoded lines *without* the stuffing dots and without the final
  ``.CRLF``: the message as the client sees it after undoing the transfer encoding
  (RFC 1939 section 11; fetchmail subtracts each stuffed dot when it counts).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MessageEncoder", "WireSizeCounter", "wire_size", "TERMINATOR"]

#: The end of every multi-line response (RFC 1939 section 3).
TERMINATOR = b".\r\n"


class MessageEncoder:
    """Encode one stored message for RETR (``top_lines=None``) or TOP (``top_lines=n``).

    Call :meth:`feed` with each chunk and :meth:`finish` once; concatenated, the results
    are the response body including the terminating ``.CRLF``.
    """

    __slots__ = ("_at_line_start", "_pending_cr", "_top", "_in_header", "done")

    def __init__(self, top_lines: int | None = None) -> None:
        self._at_line_start = True  # the last byte emitted was LF (or nothing yet)
        self._pending_cr = False  # a trailing CR held back: its LF may start the next chunk
        self._top = top_lines  # body lines still to send for TOP, None for RETR
        self._in_header = top_lines is not None
        #: True once TOP has sent all it needs; later chunks are dropped unread.
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Encode the next chunk of the stored message."""
        if self.done:
            return b""
        if self._pending_cr:
            data = b"\r" + data
            self._pending_cr = False
        if data[-1:] == b"\r":
            # The CR may be half of a CRLF split across chunks: decide with the next one.
            data = data[:-1]
            self._pending_cr = True
        if not data:
            return b""
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        data = data.replace(b"\n", b"\r\n")
        # RFC 1939 section 3: a line starting with "." gets one more.
        data = data.replace(b"\n.", b"\n..")
        if self._at_line_start and data[0] == 0x2E:
            data = b"." + data
        if self._top is not None:
            data = self._truncate(data)
        if data:
            self._at_line_start = data[-1] == 0x0A
        return data

    def _truncate(self, data: bytes) -> bytes:
        # Runs on encoded output: stuffing adds no LF, and a CRLF never straddles two
        # outputs (a trailing CR is held back above), so lines are counted by LF alone.
        start = 0
        if self._in_header:
            # RFC 1939 section 7 (TOP): the header, then the blank line separating it.
            if self._at_line_start and data.startswith(b"\r\n"):
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
        if data.count(b"\n", start) < remaining:
            self._top = remaining - data.count(b"\n", start)
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
        tail = b""
        if self._pending_cr:
            # A CR as the very last byte is taken as a CRLF cut short: complete it.
            tail = b"\r\n"
        elif not self._at_line_start:
            tail = b"\r\n"
        self._pending_cr = False
        self._at_line_start = True
        self.done = True
        return tail + TERMINATOR


class WireSizeCounter:
    """Count :func:`wire_size` incrementally, for a store that writes a message in chunks."""

    __slots__ = ("_size", "_last")

    def __init__(self) -> None:
        self._size = 0
        self._last = -1  # last byte fed, -1 before any

    def feed(self, data: bytes) -> None:
        """Account for the next chunk of the stored message."""
        if not data:
            return
        bare_lf = data.count(b"\n") - data.count(b"\r\n")
        if self._last == 0x0D and data[0] == 0x0A:
            bare_lf -= 1  # the CR ending the previous chunk makes this LF a CRLF
        self._size += len(data) + bare_lf
        self._last = data[-1]

    @property
    def size(self) -> int:
        """The wire size of everything fed so far, as if the message ended here."""
        if self._last in (-1, 0x0A):
            return self._size
        if self._last == 0x0D:
            return self._size + 1  # a final CR is completed to CRLF
        return self._size + 2

    def copy(self) -> WireSizeCounter:
        """An independent counter in the same state."""
        other = WireSizeCounter()
        other._size = self._size
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
