"""Reading stored messages for a POP3 RETR/TOP with few trips to a worker thread.

Owns: how a maildrop's message files are read for sending: a message up to
:data:`WHOLE_MAX` in one piece by the call that opens it, a larger one in
:data:`READ_CHUNK` pieces, and, for clients that RETR one message after the other
(fetchmail, getmail and mpop all do), the next messages read whole in the same call, up
to :data:`READ_AHEAD` octets in all. Every function here is blocking: a session calls it
through its worker threads. Each trip to a worker thread costs about 40 us of CPU in
wake-ups plus its latency, hence the batching.

Must not: hold more than ``WHOLE_MAX`` + ``READ_AHEAD`` octets per call, trust a file's
size (the end is always found by reading: another program may have changed it), or know
POP3 (no dot-stuffing, no CRLF: the engine does that).

The functions and limits are module globals looked up when called, so a test may
replace them with ``monkeypatch.setattr``.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO, Protocol

from .drop import MessageGone
from .faults import name_path

__all__ = [
    "READ_CHUNK",
    "WHOLE_MAX",
    "READ_AHEAD",
    "MessageOpener",
    "read_some",
    "stored_size",
    "open_and_read",
    "read_whole_messages",
]

#: Octets read from a stored message per call while streaming it (and the most of it
#: held in memory at once) when it is larger than ``WHOLE_MAX``.
READ_CHUNK = 256 * 1024

#: A stored message up to this size is read whole by the call that opens it, into one
#: buffer of its exact size: one worker-thread trip per message, no over-allocation.
WHOLE_MAX = 1024 * 1024

#: Read-ahead budget: the call for message n also reads n+1, n+2, ... whole, up to this
#: many octets in all. The caller holds them for the next messages only.
READ_AHEAD = 512 * 1024


class MessageOpener(Protocol):
    """Anything that opens message ``number`` of a maildrop (a ``DropSession`` does)."""

    def open(self, number: int) -> BinaryIO:
        """Open message ``number``; ``KeyError``/``MessageGone``/``OSError`` if it cannot."""
        ...


def read_some(f: BinaryIO, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` octets and whether the end was reached (then ``f`` is closed).

    Loops because a drop's reader may return short reads before its end."""
    parts: list[bytes] = []
    size = 0
    try:
        while size < limit:
            data = f.read(limit - size)
            if not data:
                f.close()
                return b"".join(parts), True  # one part: the same object, not a copy
            parts.append(data)
            size += len(data)
    except OSError as exc:
        # A read error (EIO from a failing disk) names no file: name the message's.
        name = getattr(f, "name", None)
        if isinstance(name, str):
            name_path(exc, name)
        raise
    return b"".join(parts), False


def stored_size(f: BinaryIO) -> int | None:
    """The size of the file behind ``f`` now, or None when it is no plain file.

    Only a hint for the size of the first read: the end is always found by reading."""
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def open_and_read(
    drop: MessageOpener, number: int, follow: tuple[int, ...]
) -> tuple[BinaryIO | None, bytes, bool, list[tuple[int, bytes]]]:
    """Open ``number`` and read it whole if it is at most ``WHOLE_MAX`` (else its first
    ``READ_CHUNK``); then, if it was read whole, read ahead ``follow`` (see
    ``READ_AHEAD``). Returns the still-open file (None at the end), the content read,
    whether the end was reached, and the messages read ahead."""
    f = drop.open(number)
    try:
        size = stored_size(f)
        # size + 1: the read that returns nothing proves the end in the same call.
        limit = size + 1 if size is not None and size < WHOLE_MAX else READ_CHUNK
        data, eof = read_some(f, limit)
    except BaseException:
        f.close()
        raise
    if not eof:
        return f, data, False, []
    return None, data, True, read_whole_messages(drop, follow)


def read_whole_messages(drop: MessageOpener, numbers: tuple[int, ...]) -> list[tuple[int, bytes]]:
    """Read ahead: each of ``numbers`` whole while the total stays within READ_AHEAD.

    Stops at the first that cannot be read or does not fit; its own RETR will open it
    again and report any error then."""
    out: list[tuple[int, bytes]] = []
    budget = READ_AHEAD
    for number in numbers:
        try:
            f = drop.open(number)
        except (MessageGone, KeyError, OSError):
            break
        try:
            size = stored_size(f)
            if size is None or size > budget:
                break
            data, eof = read_some(f, size + 1)
        except OSError:
            break
        finally:
            f.close()
        if not eof:
            break  # it grew since: leave it to its own RETR
        out.append((number, data))
        budget -= len(data)
    return out
