"""The cycle ledger: what each exchange cycle moved and cost, kept durably, and totals.

Owns: :class:`CycleRecord` (one cycle: link, start, duration, time online, bytes and
messages each way, estimated cost, result, error, failed link attempts, and each local
user's share), the file format, :class:`Ledger` (append, read), :func:`split_cost`
(the bill divided among users) and :func:`month_totals` (per link and per user, for
the budget check and ``nosend status``).

File: ``cycles.jsonl`` in the data directory's ``state`` folder (the caller picks the
path). One JSON object per line, appended with a single ``write`` and fsynced before
:meth:`Ledger.append` returns. A crash mid-write leaves a torn last line without its
newline: readers skip it, and the next append cuts it off before writing, so a torn
line never glues itself to a whole one. Money is written as a decimal string, never a
float; times as ISO 8601 UTC.

Who pays what (owner, captain and crew share one link): a cycle's cost is divided
among the local users in proportion to their bytes (what each sent plus what each
received), rounded to :data:`~nosend_link.plan.COST_QUANTUM` by largest remainder so
the shares add up to the cost exactly. A cycle that moved no user's mail (fetched
nothing, sent nothing) and the cost of links that failed to come up are billed to
:data:`SHARED`.

Must not: choose links, run commands or decide budgets; it records and adds up.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from nosend_link.plan import COST_QUANTUM

__all__ = [
    "SHARED",
    "Attempt",
    "CycleRecord",
    "Ledger",
    "LinkTotals",
    "MonthTotals",
    "UserShare",
    "UserTotals",
    "month_of",
    "month_totals",
    "split_cost",
]

#: The "user" billed for cost no user's mail caused.
SHARED = "*"


@dataclass(frozen=True, slots=True)
class UserShare:
    """One local user's part of a cycle: bytes they sent and received, and their cost."""

    user: str
    bytes_out: int = 0
    bytes_in: int = 0
    cost: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Attempt:
    """A link tried in a cycle that did not come up, and what trying it cost."""

    link: str
    seconds: float
    cost: Decimal
    error: str


@dataclass(frozen=True, slots=True)
class CycleRecord:
    """One exchange cycle, as the ledger keeps it.

    ``link`` is the link that carried the exchange (None if none came up or none was
    needed). ``duration`` is the whole cycle; ``online_seconds`` runs from the start of
    ``up`` to the end of ``down`` on that link, and ``cost`` is what it cost by the link's
    rates. ``bytes_up``/``bytes_down`` are bytes on the wire each way;
    ``messages_out``/``messages_in`` messages sent and fetched. ``result`` is a
    :class:`~nosend_link.cycle.CycleResult` value.
    """

    start: float
    duration: float
    result: str
    link: str | None = None
    online_seconds: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    messages_out: int = 0
    messages_in: int = 0
    cost: Decimal = Decimal(0)
    error: str | None = None
    attempts: tuple[Attempt, ...] = ()
    users: tuple[UserShare, ...] = field(default=())

    def to_line(self) -> bytes:
        """The record as one JSON line, newline included."""
        data: dict[str, Any] = {
            "start": datetime.fromtimestamp(self.start, UTC).isoformat(timespec="milliseconds"),
            "duration": round(self.duration, 3),
            "result": self.result,
            "link": self.link,
            "online_seconds": round(self.online_seconds, 3),
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "messages_out": self.messages_out,
            "messages_in": self.messages_in,
            "cost": str(self.cost),
            "error": self.error,
            "attempts": [
                {"link": a.link, "seconds": round(a.seconds, 3), "cost": str(a.cost),
                 "error": a.error}
                for a in self.attempts
            ],
            "users": [
                {"user": u.user, "bytes_out": u.bytes_out, "bytes_in": u.bytes_in,
                 "cost": str(u.cost)}
                for u in self.users
            ],
        }
        return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> CycleRecord:
        """Parse a line written by :meth:`to_line`; ValueError/KeyError/TypeError if bad."""
        data = json.loads(line)
        return cls(
            start=datetime.fromisoformat(data["start"]).timestamp(),
            duration=float(data["duration"]),
            result=str(data["result"]),
            link=data["link"],
            online_seconds=float(data["online_seconds"]),
            bytes_up=int(data["bytes_up"]),
            bytes_down=int(data["bytes_down"]),
            messages_out=int(data["messages_out"]),
            messages_in=int(data["messages_in"]),
            cost=Decimal(data["cost"]),
            error=data["error"],
            attempts=tuple(
                Attempt(str(a["link"]), float(a["seconds"]), Decimal(a["cost"]), str(a["error"]))
                for a in data["attempts"]
            ),
            users=tuple(
                UserShare(str(u["user"]), int(u["bytes_out"]), int(u["bytes_in"]),
                          Decimal(u["cost"]))
                for u in data["users"]
            ),
        )


def split_cost(cost: Decimal, traffic: Mapping[str, tuple[int, int]]) -> tuple[UserShare, ...]:
    """Divide ``cost`` among users by their bytes; ``traffic`` maps a user to
    ``(bytes_out, bytes_in)``. The shares add up to ``cost`` exactly (largest remainder,
    ties to the user named first in sorted order); with no user bytes it all goes to
    :data:`SHARED`."""
    users = sorted(traffic)
    total = sum(traffic[u][0] + traffic[u][1] for u in users)
    if total == 0:
        shares = [UserShare(u, *traffic[u]) for u in users]
        return (*shares, UserShare(SHARED, cost=cost)) if cost else tuple(shares)
    units = int(cost / COST_QUANTUM)  # cost is already a whole number of quanta
    exact = {u: Fraction(units * (traffic[u][0] + traffic[u][1]), total) for u in users}
    floors = {u: int(exact[u]) for u in users}
    left = units - sum(floors.values())
    for u in sorted(users, key=lambda u: (-(exact[u] - floors[u]), u))[:left]:
        floors[u] += 1
    return tuple(UserShare(u, traffic[u][0], traffic[u][1], floors[u] * COST_QUANTUM)
                 for u in users)


class Ledger:
    """The append-only cycle ledger at ``path`` (created on first append)."""

    __slots__ = ("_path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._path

    def append(self, record: CycleRecord) -> None:
        """Add ``record`` durably: it is on disk, whole, when this returns."""
        line = record.to_line()
        created = not self._path.exists()
        fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # Another process reading or appending (nosend status, a second writer after
            # a crash) must not see our repair and write interleaved.
            fcntl.flock(fd, fcntl.LOCK_EX)
            _cut_torn_tail(fd)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self._path.parent)

    def records(self) -> Iterator[CycleRecord]:
        """Every whole record, oldest first; a torn or unreadable line is skipped."""
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.split(b"\n")[:-1]:  # the part after the last newline is torn
            try:
                yield CycleRecord.from_line(line)
            except (ValueError, KeyError, TypeError):
                continue


def _cut_torn_tail(fd: int) -> None:
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def month_of(when: float, tz: tzinfo | None = None) -> tuple[int, int]:
    """(year, month) of epoch time ``when`` in ``tz`` (None: the local time zone)."""
    moment = datetime.fromtimestamp(when, tz)
    return moment.year, moment.month


@dataclass(frozen=True, slots=True)
class LinkTotals:
    """One link's month: cycles that used it, time online, bytes and cost (failed
    attempts to bring it up included in ``seconds`` and ``cost``)."""

    cycles: int = 0
    seconds: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    cost: Decimal = Decimal(0)

    @property
    def bytes(self) -> int:
        """Bytes both ways."""
        return self.bytes_up + self.bytes_down


@dataclass(frozen=True, slots=True)
class UserTotals:
    """One user's month: bytes sent and received and their share of the cost."""

    bytes_out: int = 0
    bytes_in: int = 0
    cost: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class MonthTotals:
    """A month of the ledger, per link and per user."""

    year: int
    month: int
    links: Mapping[str, LinkTotals]
    users: Mapping[str, UserTotals]

    @property
    def cost(self) -> Decimal:
        """The month's cost over every link."""
        return sum((t.cost for t in self.links.values()), Decimal(0))


def month_totals(
    records: Iterable[CycleRecord], year: int, month: int, tz: tzinfo | None = None
) -> MonthTotals:
    """Add up the cycles that started in ``year``-``month`` (in ``tz``; None: local)."""
    links: dict[str, LinkTotals] = {}
    users: dict[str, UserTotals] = {}
    for rec in records:
        if month_of(rec.start, tz) != (year, month):
            continue
        for attempt in rec.attempts:
            t = links.get(attempt.link, LinkTotals())
            links[attempt.link] = LinkTotals(t.cycles, t.seconds + attempt.seconds,
                                             t.bytes_up, t.bytes_down, t.cost + attempt.cost)
            u = users.get(SHARED, UserTotals())
            users[SHARED] = UserTotals(u.bytes_out, u.bytes_in, u.cost + attempt.cost)
        if rec.link is not None:
            t = links.get(rec.link, LinkTotals())
            links[rec.link] = LinkTotals(
                t.cycles + 1, t.seconds + rec.online_seconds, t.bytes_up + rec.bytes_up,
                t.bytes_down + rec.bytes_down, t.cost + rec.cost,
            )
        for share in rec.users:
            u = users.get(share.user, UserTotals())
            users[share.user] = UserTotals(u.bytes_out + share.bytes_out,
                                           u.bytes_in + share.bytes_in, u.cost + share.cost)
    return MonthTotals(year, month, links, users)
