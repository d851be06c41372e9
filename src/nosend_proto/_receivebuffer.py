"""The receive buffer: every octet an engine holds from its peer, in one place.

Owns: keeping received bytes until the engine reads them, as lines or as raw runs;
finding line ends without rescanning what was already searched (a peer trickling one byte
at a time costs linear, not quadratic, time); dropping the body of an overlong line
instead of buffering it (the engine only learns that the line was too long, once it
finally ends); and a line found ahead of time for a flush decision (``has_line``). Since
nothing else holds input, ``clear()`` drops all of it: the STARTTLS/STLS defence (RFC 3207
section 4.2, RFC 2595 section 4) cannot miss a cache. Knows nothing of any protocol.

Must not: interpret the bytes beyond finding LF.

Lines end at LF; the CR before it, if any, stays part of the returned line so the caller
can tell ``CRLF`` from a bare ``LF`` when the protocol cares (SMTP smuggling). Received
chunks wait uncopied until a line search needs them, so a body read raw after its command
line (SMTP DATA, BDAT) costs no copy, and a chunk that is exactly one line is returned as
it is (one command per read is the usual case).
"""

from __future__ import annotations

from collections import deque

__all__ = ["ReceiveBuffer", "OVERLONG"]


class _Overlong:
    """Sentinel type: a line ended that was longer than the limit; its bytes were dropped."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OVERLONG"


OVERLONG = _Overlong()


class ReceiveBuffer:
    """Hold received bytes and hand them back as lines or raw runs.

    ``max_line`` is the longest line, terminator included, that is ever held; a longer
    line is discarded as it arrives and reported as ``OVERLONG`` when its LF comes.
    """

    __slots__ = ("_data", "_chunks", "_scanned", "_discarding", "_ahead", "max_line")

    def __init__(self, max_line: int) -> None:
        self._data = bytearray()  # bytes a line search has started on
        self._chunks: deque[bytes] = deque()  # received after them, not copied yet
        self._scanned = 0  # bytes of _data already known to hold no LF
        self._discarding = False  # inside an overlong line: drop until its LF
        self._ahead: bytes | _Overlong | None = None  # found by has_line(), returned next
        self.max_line = max_line

    def __len__(self) -> int:
        ahead = self._ahead
        held = len(self._data) + sum(map(len, self._chunks))
        return held + len(ahead) if isinstance(ahead, bytes) else held

    def __bool__(self) -> bool:
        return bool(self._data or self._chunks or self._ahead is not None)

    def feed(self, data: bytes) -> None:
        """Append received bytes (a bytes-like value other than ``bytes`` is copied)."""
        if data:
            self._chunks.append(data if type(data) is bytes else bytes(data))

    def next_line(self) -> bytes | _Overlong | None:
        """Return the next complete line (with its terminator), ``OVERLONG`` or ``None``.

        ``None`` means more data is needed. Memory stays below ``max_line`` plus what
        was fed since the last call.
        """
        line = self._ahead
        if line is not None:
            self._ahead = None
            return line
        data = self._data
        chunks = self._chunks
        while True:
            if data:
                line = self._line_from_data()
                if line is not None:
                    return line
            if not chunks:
                return None
            chunk = chunks.popleft()
            if not data and not self._discarding:
                end = chunk.find(b"\n") + 1
                if end == len(chunk) and 0 < end <= self.max_line:
                    return chunk
            data += chunk

    def has_line(self) -> bool:
        """True when a complete line (or the end of an overlong one) is already here.

        The line found is kept and returned by the next ``next_line()``.
        """
        if self._ahead is None:
            self._ahead = self.next_line()
        return self._ahead is not None

    def _line_from_data(self) -> bytes | _Overlong | None:
        data = self._data
        while True:
            idx = data.find(b"\n", self._scanned)
            if idx < 0:
                if self._discarding:
                    data.clear()
                    self._scanned = 0
                elif len(data) > self.max_line:
                    data.clear()
                    self._scanned = 0
                    self._discarding = True
                else:
                    self._scanned = len(data)
                return None
            end = idx + 1
            if self._discarding or end > self.max_line:
                del data[:end]
                self._scanned = 0
                self._discarding = False
                return OVERLONG
            line = bytes(data[:end])
            del data[:end]
            self._scanned = 0
            return line

    def take(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` raw bytes (for bodies); ``b""`` when none.

        A line ``has_line()`` found ahead is handed back as raw bytes first.
        """
        ahead = self._ahead
        if ahead is not None:
            self._ahead = None
            if isinstance(ahead, bytes):
                self.unread(ahead)
        data = self._data
        if data:
            if self._discarding:
                return b""
            chunk = bytes(data[:max_bytes])
            del data[:max_bytes]
            self._scanned = max(0, self._scanned - len(chunk))
            return chunk
        if not self._chunks:
            return b""
        chunk = self._chunks.popleft()
        if len(chunk) > max_bytes:
            data += chunk[max_bytes:]
            return chunk[:max_bytes]
        return chunk

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of everything held (what followed a body's end)."""
        if data:
            self._data[:0] = data
            self._scanned = 0

    def clear(self) -> int:
        """Drop everything held (STARTTLS/STLS injection defence); return the count."""
        n = len(self)
        self._data.clear()
        self._chunks.clear()
        self._ahead = None
        self._scanned = 0
        self._discarding = False
        return n
