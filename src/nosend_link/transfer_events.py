"""Progress of mail crossing a link, as events the relay and the fetch both report.

Owns: the small frozen values a transfer hands to its ``progress`` callback, so the
command line can draw a progress line and the link layer can total a cycle, whichever
direction the mail goes. Must not: draw, log or count anything itself.

Order for one account: :class:`TransferStarted`, then one :class:`MessageDone` per
message that was handled (sent, fetched, held, deferred, refused, deleted unread on the
server, or failed), then
:class:`TransferFinished`. ``BytesMoved`` may come at any time in between, as often as
the transfer likes (the relay and the fetch send one per body chunk they pass on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Direction",
    "Outcome",
    "TransferStarted",
    "BytesMoved",
    "MessageDone",
    "TransferFinished",
    "TransferEvent",
    "Progress",
    "ProgressCallback",
]

#: ``out``: the queue to the smarthost; ``in``: a remote mailbox to local Maildirs.
Direction = Literal["out", "in"]
#: What became of one message.
Outcome = Literal["sent", "fetched", "held", "deferred", "refused", "deleted", "failed"]


@dataclass(frozen=True, slots=True)
class TransferStarted:
    """An account's transfer began: how many messages and message bytes it will move."""

    account: str
    direction: Direction
    messages: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class BytesMoved:
    """Message bytes of the current message passed so far (for a rate and time left)."""

    account: str
    direction: Direction
    message: int  # 1-based position among TransferStarted.messages
    done_bytes: int  # of this message
    message_bytes: int  # its size, as known beforehand


@dataclass(frozen=True, slots=True)
class MessageDone:
    """One message handled: ``outcome`` says how; ``user`` is the local user it was for
    (the sender of outbound mail, the recipient mailbox of inbound), for the bill."""

    account: str
    direction: Direction
    message: int  # 1-based
    of: int
    size: int
    outcome: Outcome
    user: str | None = None


@dataclass(frozen=True, slots=True)
class TransferFinished:
    """An account's transfer ended, ``ok`` when it did all it could on this link."""

    account: str
    direction: Direction
    ok: bool
    error: str | None = None


TransferEvent = TransferStarted | BytesMoved | MessageDone | TransferFinished

#: The callback a transfer reports to; it must return quickly and never raise.
Progress = Callable[[TransferEvent], None]
ProgressCallback = Progress
