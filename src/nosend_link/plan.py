"""What the link layer knows about one link, and what waits to cross it.

Owns: :class:`LinkPlan` (a ``[link NAME]`` section as the link layer uses it, with
every default filled in), :class:`Waiting`, and the one cost formula (:func:`cost_of`)
that estimates, the ledger and the budget all use. The value types :class:`Hours`,
:class:`Budget` and :class:`Endpoint` and their parsers live in
:mod:`nosend_store.link_values` (``mail.cfg`` is parsed there) and are re-exported
here; :data:`PlanError` is their error.

Must not: read ``mail.cfg`` or any file, start processes, or know the clock. The caller
builds plans from the configuration (:meth:`LinkPlan.from_link`;
:func:`nosend_link.site.link_plans` does it for a whole ``Config``) and passes them in.

Units, decided once here:

- money is a :class:`~decimal.Decimal` in the link's own currency; costs are rounded to
  :data:`COST_QUANTUM` (a hundredth of a cent) with ROUND_HALF_UP, like a bill;
- a megabyte is 1,000,000 bytes (:data:`BYTES_PER_MEGABYTE`), as airtime plans count;
- a link's ``rate`` is in bytes per second on the wire. The default,
  :data:`DEFAULT_RATE` = 300 B/s, is 2,400 bit/s: what an Iridium circuit carries, the
  slowest link nosend is built for. An unknown link is thus assumed slow and dear, which
  errs toward a higher estimate -- the safe side for a least-cost choice and a budget;
- ``setup_seconds`` is the time a link takes to come up before a byte moves. Default:
  :data:`DEFAULT_SETUP_SECONDS` = 20 s (an Iridium PPP call) for a link with an ``up``
  command, 0 for one without (it is always up).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from nosend_store.link_values import (
    BYTES_PER_MEGABYTE,
    Budget,
    Endpoint,
    Hours,
    LinkValueError,
    megabytes,
)

if TYPE_CHECKING:  # only its attributes are read
    from nosend_store.config import Link

__all__ = [
    "BYTES_PER_MEGABYTE",
    "COST_QUANTUM",
    "DEFAULT_RATE",
    "DEFAULT_SETUP_SECONDS",
    "Budget",
    "Endpoint",
    "Hours",
    "LinkPlan",
    "PlanError",
    "Waiting",
    "cost_of",
    "megabytes",
]

COST_QUANTUM = Decimal("0.0001")
DEFAULT_RATE = 300.0
DEFAULT_SETUP_SECONDS = 20.0


#: The error the value parsers raise (:class:`~nosend_store.link_values.LinkValueError`).
PlanError = LinkValueError


def cost_of(
    seconds: float, nbytes: int, cost_per_minute: Decimal, cost_per_megabyte: Decimal
) -> Decimal:
    """Minutes online x ``cost_per_minute`` + megabytes x ``cost_per_megabyte``.

    ``seconds`` counts to the millisecond (a float clock reading has noise below that),
    so the same cycle always costs the same; the sum is rounded once, at the end.
    """
    millis = Decimal(round(seconds * 1000))
    total = millis / 60_000 * cost_per_minute + megabytes(nbytes) * cost_per_megabyte
    return total.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class LinkPlan:
    """One link as the link layer uses it (see the module docstring for units).

    ``up`` and ``down`` are argv lists run without a shell; an empty ``up`` means the
    link is always up and is never dialled (``down`` is then not run either).
    ``probe`` is where to check that the link carries traffic (None: the caller's
    default, the smarthost). ``max_size``: messages larger than this many bytes are not
    sent over this link (None: no cap). ``down_timeout`` bounds ``down`` (None: the
    cycle's own, else ``up_timeout``). ``smarthost`` names the smtp account to relay
    through over this link (None: the default one).
    """

    name: str
    up: tuple[str, ...] = ()
    down: tuple[str, ...] = ()
    priority: int = 100
    cost_per_minute: Decimal = Decimal(0)
    cost_per_megabyte: Decimal = Decimal(0)
    up_timeout: float = 120.0
    max_online: float = 1800.0
    enabled: bool = True
    accounts: tuple[str, ...] = ()
    probe: Endpoint | None = None
    max_size: int | None = None
    hours: Hours = Hours()
    budget: Budget | None = None
    rate: float = DEFAULT_RATE
    setup_seconds: float = DEFAULT_SETUP_SECONDS
    down_timeout: float | None = None
    smarthost: str | None = None

    @classmethod
    def from_link(
        cls,
        link: Link,
        *,
        probe: Endpoint | None = None,
        max_size: int | None = None,
        hours: Hours | None = None,
        budget: Budget | None = None,
        rate: float | None = None,
        setup_seconds: float | None = None,
    ) -> LinkPlan:
        """A plan from a ``[link NAME]`` section; a keyword given here wins over the
        section's value (the caller's defaults: the probe of the smarthost, say)."""
        if probe is None:
            probe = link.probe
        if max_size is None:
            max_size = link.max_size
        if hours is None:
            hours = link.hours
        if budget is None:
            budget = link.budget
        if rate is None:
            rate = link.rate if link.rate is not None else DEFAULT_RATE
        if setup_seconds is None:
            setup_seconds = link.setup_seconds
        if setup_seconds is None:
            setup_seconds = DEFAULT_SETUP_SECONDS if link.up else 0.0
        return cls(
            name=link.name,
            up=tuple(link.up),
            down=tuple(link.down),
            priority=link.priority,
            cost_per_minute=link.cost_per_minute,
            cost_per_megabyte=link.cost_per_megabyte,
            up_timeout=link.up_timeout,
            max_online=link.max_online,
            enabled=link.enabled,
            accounts=tuple(link.accounts),
            probe=probe,
            max_size=max_size,
            hours=hours,
            budget=budget,
            rate=rate,
            setup_seconds=setup_seconds,
            down_timeout=link.down_timeout,
            smarthost=link.smarthost,
        )

    @property
    def dialled(self) -> bool:
        """True if the link is brought up by a command (False: always up)."""
        return bool(self.up)

    def cost(self, seconds: float, nbytes: int) -> Decimal:
        """What ``seconds`` online moving ``nbytes`` costs on this link."""
        return cost_of(seconds, nbytes, self.cost_per_minute, self.cost_per_megabyte)

    def carries(self, size: int) -> bool:
        """Whether a message of ``size`` bytes may go over this link (``max_size``)."""
        return self.max_size is None or size <= self.max_size

    def fetches(self, account: str) -> bool:
        """Whether ``account`` is fetched over this link (empty ``accounts``: all)."""
        return not self.accounts or account in self.accounts


@dataclass(frozen=True, slots=True)
class Waiting:
    """What a cycle would move: the queue and the accounts to fetch.

    ``sizes_out``: the wire size of each queued message due to go. ``bytes_in``: what the
    caller expects to fetch (unknown before the call; 0 unless it has a guess).
    ``accounts``: the remote accounts to fetch. ``oldest``: when the oldest queued
    message was queued (epoch seconds; None if the queue is empty). ``urgent``: a message
    marked urgent waits.
    """

    sizes_out: tuple[int, ...] = ()
    bytes_in: int = 0
    accounts: tuple[str, ...] = ()
    oldest: float | None = None
    urgent: bool = False

    @property
    def has_work(self) -> bool:
        """Something to send or an account to fetch."""
        return bool(self.sizes_out) or bool(self.accounts)
