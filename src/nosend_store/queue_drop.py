"""The outbound queue seen as a POP3 mail drop, for a stock fetchmail in multidrop mode.

Owns: :class:`QueueDrop` and its :class:`QueueDropSession`. As in the seed system, a
site may relay its outbound mail by letting another machine's fetchmail collect it by
POP3 and re-inject it there. Each listed message is the queued message preceded by::

    Return-Path: <sender>
    X-Envelope-To: <recipient>

``Return-Path`` is what fetchmail uses as the MAIL FROM of the re-injection (it strips
the header and remembers the address); ``X-Envelope-To`` is the default multidrop
envelope header of fetchmail's ``envelope`` option, the one a stock configuration reads.

One copy per recipient (the default): fetchmail reads only the FIRST envelope header of
a message (fetchmail's ``readheaders()`` records one envelope offset) — several
``X-Envelope-To:`` lines in one message would lose every recipient after the first. So,
like a multidrop mailbox at an ISP, the drop lists one message per pending recipient; its
UIDL is ``<queue id>.<recipient index>``, and deleting it (then QUIT) marks that one
recipient delivered. With ``split_recipients=False`` the drop lists one message per queue
entry with all recipients in a single folded ``X-Envelope-To:`` header, which fetchmail
parses as an address list: less traffic on a costly link, but a partial failure on the
fetchmail side cannot be reported per recipient.

Suggested fetchmail configuration (``.fetchmailrc``)::

    poll yacht.local protocol pop3 envelope "X-Envelope-To" localdomains example.org
        user "queue" with password "..." to * here

Locking: a session holds the drop's own lock (one drop session at a time) and a claim
on every entry it lists, so a transport never sends a message that a fetchmail is
collecting; entries already claimed by a transport are not listed. A claim is an open
file, so one session lists at most ``max_entries`` queue entries (oldest first); the
rest show up in the next session, as new mail does (RFC 1939 section 4).

Must not: speak POP3; the POP3 engine and server session do.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from typing import BinaryIO

from ._durable import wire_size_of_disk_bytes
from .drop import DropMessage, DropSession, MessageGone
from .locks import FileLock, LockBusy
from .queue import OutboundQueue, QueueClaim, RecipientResult

__all__ = ["QueueDrop", "QueueDropSession", "ENVELOPE_HEADER", "MAX_ENTRIES"]

#: The envelope-recipient header written for fetchmail's ``envelope`` option.
ENVELOPE_HEADER = "X-Envelope-To"

_FETCHED_REPLY = "250 2.0.0 collected by POP3 (queue drop)"

#: Queue entries one drop session lists (each holds a claim, i.e. an open descriptor).
MAX_ENTRIES = 200


def _header_value(value: str) -> str:
    # An address with a line break would inject header fields; SMTP engines refuse such
    # addresses already, this is the store's own guard.
    return value.replace("\r", "").replace("\n", "")


def _uidl(text: str) -> str:
    # RFC 1939 section 7: 1..70 printable characters.
    if len(text) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in text):
        return text
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class _Item:
    claim: QueueClaim
    recipients: tuple[str, ...]
    prefix: bytes
    index: int | None  # the recipient's position in the envelope when split


class _PrefixedReader(io.RawIOBase):
    """A read-only stream: ``prefix`` then the rest of ``body``."""

    def __init__(self, prefix: bytes, body: BinaryIO) -> None:
        self._prefix = memoryview(prefix)
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class QueueDrop:
    """POP3 access to an :class:`~nosend_store.queue.OutboundQueue` (see module doc)."""

    def __init__(
        self,
        queue: OutboundQueue,
        *,
        envelope_header: str = ENVELOPE_HEADER,
        split_recipients: bool = True,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._queue = queue
        self._header = envelope_header
        self._split = split_recipients
        self._max_entries = max(1, max_entries)

    @property
    def queue(self) -> OutboundQueue:
        """The queue behind the drop."""
        return self._queue

    def pop3_session(self, timeout: float = 0.0) -> QueueDropSession:
        """Lock the drop, claim every listable entry and snapshot the listing.

        Raises :class:`~nosend_store.locks.LockBusy` if another drop session is active.
        """
        lock = FileLock(os.path.join(self._queue.path, "drop.lock"))
        if not lock.acquire(timeout):
            raise LockBusy(lock.path)
        items: list[_Item] = []
        claimed = 0
        try:
            for entry in self._queue.entries():
                if claimed >= self._max_entries:
                    break  # the rest next session: descriptors are not unlimited
                if not entry.pending or entry.notify_pending:
                    continue
                claim = self._queue.claim(entry.id)
                if claim is None:
                    continue  # a transport is sending it right now
                entry = claim.entry
                if not entry.pending:
                    claim.release()
                    continue
                claimed += 1
                head = f"Return-Path: <{_header_value(entry.sender)}>\n"
                if self._split:
                    for index, r in enumerate(entry.recipients):
                        if r.done:
                            continue
                        prefix = head + f"{self._header}: <{_header_value(r.address)}>\n"
                        items.append(_Item(claim, (r.address,), prefix.encode(), index))
                else:
                    addresses = [r.address for r in entry.pending]
                    joined = ",\n ".join(f"<{_header_value(a)}>" for a in addresses)
                    prefix = head + f"{self._header}: {joined}\n"
                    items.append(_Item(claim, tuple(addresses), prefix.encode(), None))
        except BaseException:
            for item in items:
                item.claim.release()
            lock.release()
            raise
        return QueueDropSession(self._queue, items, lock)


class QueueDropSession(DropSession):
    """A POP3 session's view of the queue drop (see :class:`~nosend_store.drop.DropSession`).

    Deleting a message and committing marks its recipient(s) delivered; an entry leaves
    the queue when all its recipients are done.
    """

    def __init__(self, queue: OutboundQueue, items: list[_Item], lock: FileLock) -> None:
        messages = []
        for number, item in enumerate(items, start=1):
            entry = item.claim.entry
            uidl = _uidl(entry.id if item.index is None else f"{entry.id}.{item.index}")
            size = wire_size_of_disk_bytes(item.prefix) + entry.wire_size
            messages.append(DropMessage(number, uidl, size))
        super().__init__(messages)
        self._queue = queue
        self._items = items
        self._lock = lock

    def recipients(self, number: int) -> tuple[str, ...]:
        """The envelope recipients message ``number`` carries."""
        return self._items[number - 1].recipients

    def _open(self, msg: DropMessage) -> BinaryIO:
        item = self._items[msg.number - 1]
        try:
            body = item.claim.open_message()
        except FileNotFoundError:
            raise MessageGone(item.claim.id) from None
        return io.BufferedReader(_PrefixedReader(item.prefix, body))

    def _apply_deletions(self, msgs: list[DropMessage]) -> None:
        touched: dict[str, QueueClaim] = {}
        for msg in msgs:
            item = self._items[msg.number - 1]
            for address in item.recipients:
                item.claim.record(address, RecipientResult.delivered(_FETCHED_REPLY, relayed=True))
            touched[item.claim.id] = item.claim
        for claim in touched.values():
            # Expiry and reports are housekeeping's: it knows the site's retry policy and
            # has a bounce sink; this queue may have neither.
            claim.finish(count_attempt=False, expire=False, keep_unsent_reports=True)

    def _unlock(self) -> None:
        for item in self._items:
            item.claim.release()
        self._lock.release()
