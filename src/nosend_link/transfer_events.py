"""Progress of one transfer (a fetch from a POP3 account, a send to the smarthost).

Owns: the small frozen values a transfer reports, message by message, through a
callback (:data:`ProgressCallback`): :class:`TransferStarted` once it knows how much
there is, :class:`MessageDone` after each message is dealt with, and
:class:`TransferFinished` at the end, whatever happened. The link layer's progress
display and accounting consume them; the fetch (:mod:`nosend_link.fetch`) and the SMTP
relay both produce them, so they share these types.

Must not: do I/O, format text for people, or carry a secret or a message's content.
A callback is called from the transfer's task and must return quickly (it may not
block on the link: that is what it is measuring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Direction",
    "Outcome",
    "TransferStarted",
    "MessageDone",
    "TransferFinished",
    "TransferEvent",
    "ProgressCallback",
]

#: ``fetch``: from a remote mailbox to here; ``send``: from our queue to the smarthost.
Direction = Literal["fetch", "send"]
#: What became of one message: ``fetched`` (delivered here), ``held`` (too large: a
#: notice was delivered instead), ``deleted`` (on the server, unread), ``sent``,
#: ``failed`` (an error for this message; the transfer may go on).
Outcome = Literal["fetched", "held", "deleted", "sent", "failed"]


@dataclass(frozen=True, slots=True)
class TransferStarted:
    """The transfer for ``account`` knows its work: ``messages`` of ``bytes`` octets in
    total (sizes as the server listed them, or as queued)."""

    account: str
    direction: Direction
    messages: int
    bytes: int


@dataclass(frozen=True, slots=True)
class MessageDone:
    """Message ``n`` of ``of`` (``bytes`` octets) is done with ``outcome``;
    ``bytes_so_far`` of ``total_bytes`` have been dealt with."""

    account: str
    direction: Direction
    n: int
    of: int
    bytes: int
    bytes_so_far: int
    total_bytes: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class TransferFinished:
    """The transfer is over: ``messages`` dealt with, ``bytes`` octets on the wire
    (both ways, TLS included, when metered), ``ok`` false when it stopped on an error
    (``error`` says which, without any secret)."""

    account: str
    direction: Direction
    messages: int
    bytes: int
    ok: bool
    error: str | None = None


#: Anything a transfer reports.
TransferEvent = TransferStarted | MessageDone | TransferFinished
#: What a caller passes to be told of progress.
ProgressCallback = Callable[[TransferEvent], None]
