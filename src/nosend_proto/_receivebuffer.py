"""A receive buffer that extracts CRLF-terminated lines with bounded memory.

Owns: accumulating received bytes, finding line ends without rescanning what was already
searched (a peer trickling one byte at a time costs linear, not quadratic, time), and
dropping the body of an overlong line instead of buffering it (the engine only learns that
the line was too long, once it finally ends). Knows nothing of any protocol.

Lines end at LF; the CR before it, if any, stays part of the returned line so the caller
can tell ``CRLF`` from a bare ``LF`` when the protocol cares (SMTP smuggling).
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
    """Accumulate bytes and hand them back as lines or raw runs.

    ``max_line`` is the longest line, terminator included, that is ever held; a longer
    line is discarded as it arrives and reported as ``OVERLONG`` when its LF comes.
    """

    __slots__ = ("_data", "_scanned", "_discarding", "max_line")

    def __init__(self, max_line: int) -> None:
        self._data = bytearray()
        self._scanned = 0  # bytes of _data already known to hold no LF
        self._discarding = False  # inside an overlong line: drop until its LF
        self.max_line = max_line

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._data += data

    def next_line(self) -> bytes | _Overlong | None:
        """Return the next complete line (with its terminator), ``OVERLONG`` or ``None``.

        ``None`` means more data is needed. Memory stays below ``max_line`` plus what
        was fed since the last call.
        """
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

    def next_line_from(self, chunks: deque[bytes]) -> bytes | _Overlong | None:
        """``next_line()``, feeding it chunks from the left of ``chunks`` only as needed.

        What stays in ``chunks`` was never copied into the buffer, so a caller that reads a
        body next can take it raw. A chunk that is exactly one line within the limit,
        arriving while nothing is buffered, is returned as it is: one command per read is
        the usual case, and it then costs no copy and no second search.
        """
        data = self._data
        while True:
            if data:
                line = self.next_line()
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

    def take(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` raw bytes (for counted data like BDAT)."""
        if self._discarding:
            return b""
        chunk = bytes(self._data[:max_bytes])
        del self._data[:max_bytes]
        self._scanned = max(0, self._scanned - len(chunk))
        return chunk

    def take_all(self) -> bytes:
        """Remove and return everything buffered."""
        return self.take(len(self._data))

    def peek(self) -> bytes:
        """Return a copy of what is buffered, without consuming it."""
        return bytes(self._data)

    def clear(self) -> int:
        """Drop everything buffered (STARTTLS/STLS injection defence); return the count."""
        n = len(self._data)
        self._data.clear()
        self._scanned = 0
        self._discarding = False
        return n
