"""One site's links, schedule and what waits, read from ``mail.cfg`` and the data folder.

Owns: the bridge from a :class:`~nosend_store.config.Config` to the link layer's pure
inputs -- :func:`link_plans` (every ``[link]`` as a :class:`~nosend_link.plan.LinkPlan`
with its probe resolved), :func:`smarthost_for` (the smtp account a link relays
through), :func:`accounts_over` (the pop3 accounts fetched over a link),
:func:`choice_mode` and :func:`plans_in_use` (``[schedule] link``),
:func:`schedule_policy` and :func:`schedule_state` -- and the snapshots of what waits:
:func:`read_queue` (the outbound queue: count, bytes, oldest, urgent, each due
message's size), :func:`read_held` (remote messages held for their size, per
account), :func:`read_mailboxes` and :func:`waiting` (a cycle's
:class:`~nosend_link.plan.Waiting`). ``nosend status``, ``nosend check``, ``nosend
watch`` and the scheduler in ``nosend serve`` all start here, so they agree.

Decisions:

- A link's probe is its ``probe``, else its smarthost's host and port: the smarthost is
  what the cycle needs to reach, and a banner from it proves the route (no ICMP).
- A link's smarthost is its ``smarthost``, else the first smtp ``[account]`` (in file
  order) whose ``links`` is empty or names the link. None: the link has no smarthost
  (fetch only) and, without a ``probe``, ``up``'s exit status is trusted.
- Urgent mail (``[schedule] urgent``): a queued message whose header says so --
  ``Priority: urgent`` (RFC 2156 section 5.3.6), ``Importance: high`` (RFC 2156 section
  5.3.4) or ``X-Priority: 1`` or ``2`` (what mail clients write for "highest" and
  "high") -- from a mailbox the setting names (the envelope sender resolves to it) or
  from anyone (``urgent = all``). A header anyone can write must not dial a satellite
  call by itself: the administrator names who may.
- What a cycle would send is the queue's due messages (their retry time has come), as
  the relay sends; what it fetches is every pop3 account; the bytes it expects to fetch
  are the held messages the administrator asked for (the rest is unknown before the
  call).

Must not: change mail, queue entries or fetch records, or take a lock a cycle could
trip over (a snapshot reads: the queue and the Maildirs are opened only if they exist --
a Maildir's size cache may still be filled -- and the fetch records are read without
their lock, see :func:`_records_unlocked`), run commands or open connections.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from nosend_link.choice import AUTO, COST
from nosend_link.cycle import STALE_LINK
from nosend_link.ledger import CycleRecord, LinkTotals
from nosend_link.plan import Endpoint, LinkPlan, Waiting
from nosend_link.schedule import SchedulePolicy, ScheduleState
from nosend_link.trial import TEST_RESULT
from nosend_store.config import URGENT_ANYONE, Account, Config
from nosend_store.fetch_state import FETCH_DIR, FetchRecord, FetchStatus, _decode
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import OutboundQueue, QueueEntry

__all__ = [
    "HeldSnapshot",
    "MailboxSnapshot",
    "QueueSnapshot",
    "accounts_over",
    "choice_mode",
    "is_urgent",
    "last_cycle",
    "link_plans",
    "plans_in_use",
    "read_held",
    "read_mailboxes",
    "read_queue",
    "schedule_policy",
    "schedule_state",
    "smarthost_for",
    "waiting",
]

#: How much of a queued message's head is read to find its priority fields.
HEAD_LIMIT = 64 * 1024


# -- links and the schedule -----------------------------------------------------------


def smarthost_for(config: Config, link: str | None) -> Account | None:
    """The smtp account mail goes through over ``link`` (None: no link named, the first
    smtp account usable over any link). See the module docstring."""
    if link is not None:
        named = config.links[link].smarthost if link in config.links else None
        if named is not None:
            return config.accounts.get(named)
    for account in config.accounts.values():
        if account.type == "smtp" and (not account.links or link in account.links):
            return account
    return None


def link_plans(config: Config) -> tuple[LinkPlan, ...]:
    """Every ``[link]`` as a plan, in file order, its probe resolved (see above)."""
    plans = []
    for link in config.links.values():
        probe = link.probe
        if probe is None:
            smarthost = smarthost_for(config, link.name)
            if smarthost is not None:
                probe = Endpoint(smarthost.host, smarthost.port)
        plan = LinkPlan.from_link(link, probe=probe)
        if plan.smarthost is None and (account := smarthost_for(config, link.name)):
            plan = replace(plan, smarthost=account.name)
        plans.append(plan)
    return tuple(plans)


def accounts_over(config: Config, link: str) -> tuple[str, ...]:
    """The pop3 accounts fetched over ``link``, in file order: those its ``accounts``
    names (empty: all) whose own ``links`` is empty or names it. The link's plan
    (:meth:`~nosend_link.plan.LinkPlan.fetches`) knows only the link's side; the
    exchange fetches these."""
    own = config.links[link].accounts if link in config.links else ()
    return tuple(
        name for name, account in config.accounts.items()
        if account.type == "pop3"
        and (not own or name in own)
        and (not account.links or link in account.links)
    )


def choice_mode(config: Config) -> str:
    """``auto``, ``cost`` or the name of the link in use (``[schedule] link``)."""
    return config.schedule.link


def plans_in_use(config: Config, plans: Iterable[LinkPlan] | None = None) -> tuple[LinkPlan, ...]:
    """The plans a cycle may use: the link in use alone, or all for ``auto``/``cost``."""
    plans = tuple(plans) if plans is not None else link_plans(config)
    mode = choice_mode(config)
    if mode in (AUTO, COST):
        return plans
    return tuple(p for p in plans if p.name == mode)


def schedule_policy(config: Config) -> SchedulePolicy:
    """``[schedule]``'s triggers and minimum interval."""
    s = config.schedule
    return SchedulePolicy(queue_age=s.queue_age, times=s.times, every=s.every,
                          min_interval=s.min_interval)


def last_cycle(records: Iterable[CycleRecord]) -> float | None:
    """When the last cycle in the ledger started (epoch seconds; None: none yet). A
    ``stale link`` record bills a link left up and a ``link test`` a test by hand;
    neither is a cycle."""
    starts = [r.start for r in records if r.result not in (STALE_LINK, TEST_RESULT)]
    return max(starts) if starts else None


def schedule_state(
    config: Config,
    *,
    queue: QueueSnapshot,
    last_cycle_start: float | None,
    spent: Mapping[str, LinkTotals],
    now: datetime,
) -> ScheduleState:
    """What :func:`~nosend_link.schedule.next_cycle` needs, in ``now``'s time zone."""
    tz = now.tzinfo

    def moment(epoch: float | None) -> datetime | None:
        return None if epoch is None else datetime.fromtimestamp(epoch, tz)

    return ScheduleState(
        policy=schedule_policy(config),
        last_cycle=moment(last_cycle_start),
        oldest_waiting=moment(queue.oldest),
        urgent=queue.urgent > 0,
        links=plans_in_use(config),
        spent=spent,
    )


# -- what waits --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """The outbound queue now: every message (``count``, ``bytes`` in CRLF form,
    ``oldest`` queued at, epoch seconds), those ``urgent`` (see the module docstring),
    and the wire size of each message ``due`` to go (the relay's choice), oldest first.
    ``unreadable``: entries whose envelope cannot be read (never sent; see
    ``nosend queue list``)."""

    count: int = 0
    bytes: int = 0
    oldest: float | None = None
    urgent: int = 0
    due: tuple[int, ...] = ()
    unreadable: int = 0


def is_urgent(head: bytes) -> bool:
    """Whether a message head (its header fields) marks it urgent; see the module
    docstring for the fields."""
    fields = _header_fields(head)
    for name, value in fields:
        v = value.strip().lower()
        if name == "priority" and v == "urgent":
            return True
        if name == "importance" and v == "high":
            return True
        if name == "x-priority" and v[:1] in ("1", "2"):
            return True
    return False


def _header_fields(head: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) up to the blank line (RFC 5322 section 2.2)."""
    fields: list[tuple[str, str]] = []
    for raw in head.split(b"\n"):
        line = raw.rstrip(b"\r").decode("latin-1")
        if not line:
            break
        if line[:1] in (" ", "\t"):
            if fields:
                fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if colon:
            fields.append((name.strip().lower(), value))
    return fields


def _urgent_sender(config: Config, entry: QueueEntry) -> bool:
    allowed = config.schedule.urgent
    if not allowed:
        return False
    if URGENT_ANYONE in allowed:
        return True
    if not entry.sender:
        return False  # a bounce is never urgent
    resolution = config.resolve(entry.sender)
    return resolution is not None and any(m in allowed for m in resolution.mailboxes)


def read_queue(config: Config, now: float | None = None) -> QueueSnapshot:
    """A snapshot of the outbound queue (none on disk: empty). ``now`` decides what is
    due (default: the clock)."""
    queue_dir = config.server.queue_dir
    if not (queue_dir / "active").is_dir():
        return QueueSnapshot()
    queue = OutboundQueue(queue_dir, hostname=config.server.hostname)
    now = time.time() if now is None else now
    readable = queue.entries()
    entries = [e for e in readable if e.pending]
    unreadable = len(queue.ids()) - len(readable)
    urgent = 0
    for entry in entries:
        if _urgent_sender(config, entry) and _head_is_urgent(queue, entry.id):
            urgent += 1
    return QueueSnapshot(
        count=len(entries),
        bytes=sum(e.wire_size for e in entries),
        oldest=min((e.created for e in entries), default=None),
        urgent=urgent,
        due=tuple(e.wire_size for e in entries if e.next_attempt <= now),
        unreadable=max(unreadable, 0),
    )


def _head_is_urgent(queue: OutboundQueue, qid: str) -> bool:
    try:
        with queue.open_message(qid) as f:
            return is_urgent(f.read(HEAD_LIMIT))
    except OSError:
        return False  # it left the queue meanwhile


@dataclass(frozen=True, slots=True)
class HeldSnapshot:
    """One pop3 account's messages left on the server for their size: ``count`` and
    ``bytes`` (sizes as the server listed them), of which ``fetch_requested`` (count and
    bytes) the administrator asked to fetch anyway."""

    account: str
    count: int = 0
    bytes: int = 0
    fetch_requested: int = 0
    fetch_bytes: int = 0


_HELD = (FetchStatus.HELD, FetchStatus.FETCH_REQUESTED, FetchStatus.DELETE_REQUESTED)


def _records_unlocked(path: Path) -> dict[str, FetchRecord]:
    """The records in a fetch record file, read without its lock.

    A fetch opens the record without waiting for the lock, so holding the lock even for
    a moment could make a cycle's fetch of the account fail. Reading without it is
    safe: records are appended whole with one ``write`` and carry a CRC, so a reader sees
    whole lines and at worst a torn last one, which :func:`_decode` refuses (the same
    rule the record applies when it opens the file). A later line replaces an earlier
    one for its UIDL. ``_decode`` is the record's own line parser, so both read a line
    alike; a public read-only reader in :mod:`nosend_store.fetch_state` should replace
    this use of a private name.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    records: dict[str, FetchRecord] = {}
    for line in data.split(b"\n")[:-1]:  # what follows the last LF is not whole
        decoded = _decode(line)
        if decoded is not None:
            records[decoded[0]] = decoded[1]
    return records


def read_held(config: Config) -> tuple[HeldSnapshot, ...]:
    """Every pop3 account's held messages, in file order."""
    out = []
    directory = Path(config.server.data_dir) / FETCH_DIR
    for name, account in config.accounts.items():
        if account.type != "pop3":
            continue
        records = _records_unlocked(directory / f"{name}.uidl")
        held = [r for r in records.values() if r.status in _HELD]
        wanted = [r for r in held if r.status is FetchStatus.FETCH_REQUESTED]
        out.append(HeldSnapshot(
            name, len(held), sum(r.size or 0 for r in held),
            len(wanted), sum(r.size or 0 for r in wanted),
        ))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class MailboxSnapshot:
    """One local mailbox: its messages (``new/`` and ``cur/``) and their bytes."""

    name: str
    count: int = 0
    bytes: int = 0


def read_mailboxes(config: Config) -> tuple[MailboxSnapshot, ...]:
    """Every ``[mailbox]``, in file order (a Maildir not yet made: empty)."""
    out = []
    for name in config.mailboxes:
        try:
            box = MaildirMailbox(config.maildir_path(name), create=False)
            messages = box.list_messages()
        except FileNotFoundError:
            out.append(MailboxSnapshot(name))
            continue
        out.append(MailboxSnapshot(name, len(messages), sum(m.size for m in messages)))
    return tuple(out)


def waiting(
    config: Config, queue: QueueSnapshot, held: Iterable[HeldSnapshot] = ()
) -> Waiting:
    """What a cycle would move now (see the module docstring)."""
    return Waiting(
        sizes_out=queue.due,
        bytes_in=sum(h.fetch_bytes for h in held),
        accounts=tuple(n for n, a in config.accounts.items() if a.type == "pop3"),
        oldest=queue.oldest,
        urgent=queue.urgent > 0,
    )
