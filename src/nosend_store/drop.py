"""The POP3 maildrop contract shared by Maildir mailboxes and the queue drop.

Owns: :class:`DropMessage` (one entry of a session's listing) and :class:`DropSession`,
the object a POP3 session holds from successful authentication to QUIT:

- the listing is a snapshot taken when the session starts (RFC 1939 section 4: on
  opening the maildrop the server numbers the messages and notes their sizes; messages
  arriving meanwhile show up next session);
- ``size`` is the exact wire size (see ``nosend_store._durable``), computed without
  reading every message;
- deletions are only marks until :meth:`DropSession.commit` (RFC 1939 section 6: the
  UPDATE state after QUIT); :meth:`DropSession.close` without commit — a dropped
  connection — deletes nothing;
- the session holds an exclusive lock for its whole life (see ``nosend_store.locks``).

Must not: speak POP3 (no reply codes, no dot-stuffing); the engine does that.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from ._durable import crlf_chunks

__all__ = ["DropMessage", "DropSession", "MessageGone"]


class MessageGone(Exception):
    """The message was removed by another program (e.g. a MUA) during the session."""


@dataclass(frozen=True, slots=True)
class DropMessage:
    """One message in a POP3 session's listing.

    ``number`` is the 1-based message-number of RFC 1939 section 4; ``uidl`` is stable
    across sessions and restarts (printable ASCII 0x21..0x7E, at most 70 octets, RFC 1939
    section 7 UIDL); ``size`` is the wire size in octets.
    """

    number: int
    uidl: str
    size: int


class DropSession:
    """Base class: a locked, snapshotted POP3 view of a maildrop.

    Subclasses implement :meth:`_open` and :meth:`_apply_deletions` and :meth:`_unlock`.
    All methods are blocking and meant to be called from a worker thread; one session is
    used by one POP3 connection at a time.
    """

    def __init__(self, messages: Sequence[DropMessage]) -> None:
        self._messages = tuple(messages)
        self._deleted: set[int] = set()
        self._retrieved: set[int] = set()
        self._closed = False

    # -- listing -------------------------------------------------------------------------

    @property
    def messages(self) -> tuple[DropMessage, ...]:
        """Every message of the snapshot, deleted-marked ones included, in number order."""
        return self._messages

    def visible(self) -> list[DropMessage]:
        """Messages not marked deleted (what STAT/LIST/UIDL without argument show)."""
        return [m for m in self._messages if m.number not in self._deleted]

    def get(self, number: int) -> DropMessage | None:
        """The message ``number`` unless it does not exist or is marked deleted."""
        if 1 <= number <= len(self._messages) and number not in self._deleted:
            return self._messages[number - 1]
        return None

    def is_deleted(self, number: int) -> bool:
        """True when ``number`` was marked by DELE in this session."""
        return number in self._deleted

    # -- reading -------------------------------------------------------------------------

    def open(self, number: int) -> BinaryIO:
        """Open message ``number`` for streaming: LF line ends, ends with LF.

        Reading it through :func:`nosend_store.crlf_chunks` yields exactly ``size``
        octets. Raises :class:`KeyError` for an unknown or deleted number and
        :class:`MessageGone` if another program removed the file meanwhile.
        """
        msg = self.get(number)
        if msg is None:
            raise KeyError(number)
        return self._open(msg)

    def wire_chunks(self, number: int, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """Stream message ``number`` as CRLF wire bytes (no dot-stuffing), closing the
        file at the end. The octets add up to the listed ``size``."""
        f = self.open(number)
        try:
            yield from crlf_chunks(f, chunk_size)
        finally:
            f.close()

    def note_retrieved(self, number: int) -> None:
        """Remember that RETR sent message ``number`` in full. A Maildir then marks it
        seen at :meth:`commit`, as Dovecot does by default (``pop3_no_flag_updates =
        no``), so a MUA on the same Maildir shows it as read; other drops ignore it."""
        if self.get(number) is not None:
            self._retrieved.add(number)

    # -- deletion ------------------------------------------------------------------------

    def mark_deleted(self, number: int) -> bool:
        """DELE: mark ``number``; False if unknown or already marked."""
        if self.get(number) is None:
            return False
        self._deleted.add(number)
        return True

    def reset(self) -> None:
        """RSET: unmark every message."""
        self._deleted.clear()

    def commit(self) -> int:
        """QUIT in TRANSACTION state: apply deletions durably, then unlock.

        Returns the number of messages removed. Messages another program removed already
        count as removed.
        """
        if self._closed:
            raise RuntimeError("session already closed")
        try:
            doomed = [self._messages[n - 1] for n in sorted(self._deleted)]
            if doomed:
                self._apply_deletions(doomed)
            seen = [self._messages[n - 1] for n in sorted(self._retrieved - self._deleted)]
            if seen:
                self._apply_seen(seen)
            return len(doomed)
        finally:
            self.close()

    def close(self) -> None:
        """End the session WITHOUT applying deletions and release the lock. Idempotent."""
        if not self._closed:
            self._closed = True
            self._unlock()

    def __enter__(self) -> DropSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- for subclasses ------------------------------------------------------------------

    def _open(self, msg: DropMessage) -> BinaryIO:
        raise NotImplementedError

    def _apply_deletions(self, msgs: list[DropMessage]) -> None:
        raise NotImplementedError

    def _apply_seen(self, msgs: list[DropMessage]) -> None:
        """Hook for :meth:`note_retrieved`; nothing by default."""

    def _unlock(self) -> None:
        raise NotImplementedError
