"""Message bodies in bulk: DATA unstuffing and the content checks shared with BDAT.

Owns: finding the end of DATA (``CRLF.CRLF`` and nothing else, RFC 5321 section 4.1.1.4),
undoing dot-stuffing (section 4.5.2), and checking the content stream for size
(RFC 1870), bare CR/LF (section 2.3.8; the SMTP smuggling class of attacks) and line
length (section 4.5.3.1.6). Works on whole chunks with ``bytes.find``/``count``, never a
Python loop per line or per byte, and keeps only a few bytes of state between chunks.

Must not: know commands, replies or the engine's states.
"""

from __future__ import annotations

import re

__all__ = ["DotDecoder", "ContentChecker"]

_TERMINATOR = b"\r\n.\r\n"
_STUFFED = b"\r\n."
# Proper prefixes of the terminator that a chunk may end with, longest first: they are
# held back until the next chunk says whether they end the data or unstuff a dot.
_PARTIALS = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")
# Bytes of the next chunk examined together with the held bytes: the held part is at most
# 4 bytes, so 8 more always settle it or leave a new partial wholly inside the chunk.
_HEAD = 8
# Stuffed dots handled one by one per chunk before switching to bulk replace: typical
# mail has few, so slicing around each is cheapest; a flood of them is not.
_LOOP_BUDGET = 256
_BARE_RE = re.compile(rb"\r\n|\r|\n")
# The search for CRLF "." as a literal-led regular expression: it scans text with no
# dots about twice as fast as bytes.find does for a three-octet needle.
_STUFFED_RE = re.compile(rb"\r\n\.")
# RFC 5321 section 2.3.8: an LF without the CR before it, a CR without the LF after it.
_BARE_LF_RE = re.compile(rb"\n(?<!\r\n)")
_BARE_CR_RE = re.compile(rb"\r(?!\n)")


class DotDecoder:
    """Undo dot-stuffing and find ``CRLF.CRLF`` across arbitrarily split chunks.

    The stream conceptually starts with the CRLF that ended the DATA command, so a dot at
    the very start is handled like any dot after CRLF. Between chunks only ``_hold`` (at
    most 4 bytes, a prefix of the terminator) is kept.
    """

    __slots__ = ("_hold", "_strip")

    def __init__(self) -> None:
        self._hold = b"\r\n"  # the DATA command's CRLF, not part of the content
        self._strip = 2

    def feed(self, chunk: bytes) -> tuple[bytes, int]:
        """Decode ``chunk``; return the content and the index just after the terminator.

        The index is ``-1`` while the terminator has not been seen; when it is found, the
        bytes of ``chunk`` after it belong to the next command.
        """
        pieces: list[bytes | memoryview] = []
        start = 0
        if chunk and chunk[0] != 0x2E and self._strip == 2 and self._hold == b"\r\n":
            # The body's first chunk, not starting with a dot: the DATA command's CRLF
            # can neither end the body nor unstuff a dot, and it is no content: drop it
            # here rather than carry it through the scan and strip it from the result.
            self._hold = b""
            self._strip = 0
        elif self._hold:
            head = self._hold + chunk[:_HEAD]
            held = len(self._hold)
            end, hold = _scan(head, 0, pieces)
            if end >= 0:
                self._hold = b""
                return self._join(pieces), end - held
            if len(chunk) <= _HEAD:
                self._hold = head[len(head) - hold :] if hold else b""
                return self._join(pieces), -1
            # The new partial lies inside the chunk: rescan it from there.
            start = _HEAD - hold
            self._hold = b""
        end, hold = _scan(chunk, start, pieces)
        if end < 0 and hold:
            self._hold = chunk[len(chunk) - hold :]
        return self._join(pieces), end

    def _join(self, pieces: list[bytes | memoryview]) -> bytes:
        if self._strip:
            while pieces and self._strip:
                first = pieces[0]
                if len(first) <= self._strip:
                    self._strip -= len(first)
                    pieces.pop(0)
                else:
                    pieces[0] = memoryview(first)[self._strip :]
                    self._strip = 0
        if len(pieces) == 1 and isinstance(pieces[0], bytes):
            return pieces[0]
        return b"".join(pieces)


def _scan(buf: bytes, start: int, pieces: list[bytes | memoryview]) -> tuple[int, int]:
    """Append the unstuffed content of ``buf[start:]`` to ``pieces``.

    Returns (index after the terminator or -1, number of trailing bytes held back). One
    search pass serves both jobs: every ``CRLF.`` is either the terminator (when CRLF
    follows) or a stuffed dot to drop.
    """
    n = len(buf)
    pos = start
    view: memoryview | None = None
    match = _STUFFED_RE.search(buf, pos)
    budget = _LOOP_BUDGET
    while match is not None:
        found = match.start()
        budget -= 1
        if not budget:
            # Dense dot lines (a hostile client can send nothing else): finish the chunk
            # with C-speed bulk operations instead of one Python step per line.
            return _scan_bulk(buf, pos, pieces)
        if buf.startswith(b"\r\n", found + 3):
            # RFC 5321 section 4.1.1.4: CRLF.CRLF ends the data; its first CRLF ends the
            # last line of the content.
            if view is None and pos == 0 and found + 2 == n:
                pieces.append(buf)
            elif view is None and found + 2 > pos:
                pieces.append(buf[pos : found + 2])  # one copy, no view and no join
            elif found + 2 > pos:
                view = view or memoryview(buf)
                pieces.append(view[pos : found + 2])
            return found + 5, 0
        if found + 3 >= n or (found + 4 == n and buf[found + 3] == 0x0D):
            break  # a possible terminator cut by the chunk's end: held back below
        view = view or memoryview(buf)
        pieces.append(view[pos : found + 2])
        pos = found + 3  # RFC 5321 section 4.5.2: drop the first dot of the line
        match = _STUFFED_RE.search(buf, pos)
    hold = 0
    for partial in _PARTIALS:
        if buf.endswith(partial, pos):
            hold = len(partial)
            break
    stop = n - hold
    if view is None and pos == 0 and stop == n:
        pieces.append(buf)  # nothing to undo: hand the chunk on without a copy
    elif stop > pos:
        view = view or memoryview(buf)
        pieces.append(view[pos:stop])
    return -1, hold


def _scan_bulk(buf: bytes, pos: int, pieces: list[bytes | memoryview]) -> tuple[int, int]:
    """``_scan`` from ``pos`` with ``find`` and ``replace`` over the rest of ``buf``.

    ``pos`` follows a dropped dot, so no terminator or stuffed dot starts before it.
    """
    n = len(buf)
    term = buf.find(_TERMINATOR, pos)
    if term >= 0:
        pieces.append(buf[pos : term + 2].replace(_STUFFED, b"\r\n"))
        return term + 5, 0
    hold = 0
    for partial in _PARTIALS:
        if buf.endswith(partial, pos):
            hold = len(partial)
            break
    pieces.append(buf[pos : n - hold].replace(_STUFFED, b"\r\n"))
    return -1, hold


class ContentChecker:
    """Count and check content octets as they stream past, for DATA and BDAT alike.

    ``feed`` returns the content to hand on (the same object unless bare line ends are
    normalised). Flags: ``oversize``, ``bare`` (a bare CR or LF was seen), ``long_line``.
    """

    __slots__ = (
        "max_size",
        "max_line",
        "normalise",
        "size",
        "oversize",
        "bare",
        "long_line",
        "_run",
        "_pending_cr",
    )

    def __init__(self, max_size: int, max_line: int, normalise: bool) -> None:
        self.max_size = max_size
        self.max_line = max_line
        self.normalise = normalise
        self.size = 0
        self.oversize = False
        self.bare = False
        self.long_line = False
        self._run = 0  # octets since the last LF
        self._pending_cr = False  # the previous chunk ended with CR

    def feed(self, data: bytes) -> bytes:
        """Check one piece of content; return it (normalised if the policy says so)."""
        if not data:
            return data
        if self.oversize:
            self.size += len(data)
            return b""
        prev_cr = self._pending_cr
        lead_lf = prev_cr and data[0] == 0x0A
        # The previous piece ended with a CR: bare unless this piece starts with LF.
        bare_here = prev_cr and not lead_lf
        self._pending_cr = data[-1] == 0x0D
        if not bare_here:
            # Regular expressions that start with a literal scan at memchr speed; clean
            # text costs two passes and no Python loop.
            match = _BARE_LF_RE.search(data, 1 if lead_lf else 0)
            if match is None:
                match = _BARE_CR_RE.search(data)
                if match is not None and match.start() == len(data) - 1:
                    match = None  # a CR at the very end is settled by the next piece
            bare_here = match is not None
        if self.max_line and not self.long_line:
            self._check_lines(data)
        if bare_here:
            self.bare = True
            if self.normalise:
                data = self._normalised(data, prev_cr, lead_lf)
        self.size += len(data)
        if self.max_size and self.size > self.max_size:
            self.oversize = True
            return b""
        return data

    def finish(self) -> bytes:
        """The content ended; return what must still be handed on (normalising only).

        A CR left pending at the very end was bare.
        """
        if not self._pending_cr:
            return b""
        self._pending_cr = False
        self.bare = True
        if self.normalise and not self.oversize:
            self.size += 1
            if self.max_size and self.size > self.max_size:
                self.oversize = True
                return b""
            return b"\n"  # completes the CR already handed on
        return b""

    def _normalised(self, data: bytes, prev_cr: bool, lead_lf: bool) -> bytes:
        # RFC 5321 section 2.3.8: turn every bare CR and bare LF into CRLF. A CR at either
        # edge of the piece is settled together with the neighbouring piece.
        prefix = b"\n" if prev_cr else b""
        body = data[1:] if lead_lf else data
        if self._pending_cr:
            return prefix + _BARE_RE.sub(b"\r\n", body[:-1]) + b"\r"
        return prefix + _BARE_RE.sub(b"\r\n", body)

    def _check_lines(self, data: bytes) -> None:
        limit = self.max_line
        first = data.find(b"\n")
        if first < 0:
            self._run += len(data)
            if self._run >= limit:
                self.long_line = True
            return
        # A line is too long when its octets with CRLF exceed the limit, i.e. when the
        # run of non-LF octets (CR included) is at least ``limit`` long.
        if self._run + first >= limit:
            self.long_line = True
            return
        last = data.rfind(b"\n")
        pos = first
        # Jump window by window: the last LF within the next ``limit`` octets bounds every
        # line before it; no LF in a whole window means a line that is too long.
        while last - pos > limit:
            nxt = data.rfind(b"\n", pos + 1, pos + 1 + limit)
            if nxt < 0:
                self.long_line = True
                return
            pos = nxt
        self._run = len(data) - last - 1
        if self._run >= limit:
            self.long_line = True
