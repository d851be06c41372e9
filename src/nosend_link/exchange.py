"""The exchange itself: relay the queue, then fetch the remote mailboxes -- one sequence
for ``nosend exchange`` (the network as it is) and for every cycle over a link
(``nosend check``, ``nosend watch``, the scheduler in ``nosend serve``).

Owns: :func:`exchange_accounts` (smtp accounts first, then pop3, one after the other,
each a :func:`~nosend_link.relay.relay_queue` or
:func:`~nosend_link.fetch.fetch_account` with the link's name and ``max_size`` cap),
:class:`ExchangeSummary`, the accounts a cycle uses over one link
(:func:`accounts_for_link`: the link's smarthost and :func:`~nosend_link.site.accounts_over`)
and the :data:`~nosend_link.online.Exchange` a cycle calls (:func:`cycle_exchange`), which
hands the transfer events to :meth:`~nosend_link.online.OnlineLink.on_transfer` (per-user
accounting, progress) and lets the tally watch the wire meter (the ledger's bytes).
:func:`site_cycle` builds the :class:`~nosend_link.cycle.ExchangeCycle` for a site and
:func:`waiting_now` what it would move, so the command line and the scheduler agree.

Must not: bring a link up or down (the cycle does), print, or put a secret into a text.

Why the queue goes first: outbound mail is what the crew waits to see leave, and a call
that drops early has then carried it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nosend_link.cycle import ExchangeCycle
from nosend_link.online import Exchange, ExchangeResult, OnlineLink
from nosend_link.plan import LinkPlan, Waiting
from nosend_link.progress import ProgressEvent
from nosend_link.site import (
    accounts_over,
    choice_mode,
    link_plans,
    read_held,
    read_queue,
    smarthost_for,
    waiting,
)
from nosend_link.transfer_events import Progress
from nosend_runners.client.connection import LinkMeter
from nosend_store.config import Account, Config

__all__ = [
    "AccountOutcome",
    "ExchangeSummary",
    "accounts_for_link",
    "cycle_exchange",
    "exchange_accounts",
    "site_cycle",
    "waiting_now",
]


@dataclass(frozen=True, slots=True)
class AccountOutcome:
    """What one account's transfer did: ``ok`` and a one-line ``text`` without secrets."""

    account: str
    ok: bool
    text: str


@dataclass(frozen=True, slots=True)
class ExchangeSummary:
    """Every account's outcome, in the order they ran."""

    outcomes: tuple[AccountOutcome, ...]

    @property
    def ok(self) -> bool:
        """Every account did its work."""
        return all(o.ok for o in self.outcomes)

    @property
    def error(self) -> str | None:
        """The failed accounts and why, for the ledger (None: none failed)."""
        failed = [f"{o.account}: {o.text}" for o in self.outcomes if not o.ok]
        return "; ".join(failed) or None


def _ordered(accounts: Iterable[Account]) -> list[Account]:
    chosen = list(accounts)
    return [a for a in chosen if a.type == "smtp"] + [a for a in chosen if a.type == "pop3"]


async def exchange_accounts(
    config: Config,
    accounts: Iterable[Account],
    *,
    link: str | None = None,
    link_max_size: int | None = None,
    progress: Progress | None = None,
    meter: LinkMeter | None = None,
) -> ExchangeSummary:
    """Relay through the smtp ``accounts``, then fetch the pop3 ones, one by one.

    ``link`` names the link in use (a held message asked for on another link waits);
    ``link_max_size`` is its cap both ways; ``progress`` gets every transfer event and
    ``meter`` the bytes on the wire (added as each account ends, or is cancelled).
    Cancellation is never swallowed: what was recorded stays recorded.
    """
    from nosend_link.fetch import fetch_account  # noqa: PLC0415 -- see relay's import
    from nosend_link.relay import relay_queue  # noqa: PLC0415

    outcomes: list[AccountOutcome] = []
    for account in _ordered(accounts):
        if account.type == "smtp":
            report = await relay_queue(config, account, link_max_size=link_max_size,
                                       progress=progress, meter=meter)
            text = (f"{report.sent} sent, {report.deferred} deferred, {report.failed} "
                    f"failed, {report.skipped} skipped")
            if report.error:
                text += f"; {report.error}"
            outcomes.append(AccountOutcome(account.name, report.ok, text))
        else:
            fetched = await fetch_account(config, account, link=link,
                                          link_max_size=link_max_size, progress=progress,
                                          meter=meter)
            text = f"{fetched.fetched} fetched, {fetched.held} held, {fetched.deleted} deleted"
            if fetched.errors:
                text += "; " + "; ".join(fetched.errors)
            outcomes.append(AccountOutcome(account.name, fetched.ok, text))
    return ExchangeSummary(tuple(outcomes))


def accounts_for_link(config: Config, plan: LinkPlan) -> list[Account]:
    """What a cycle over ``plan`` uses: the smtp account it relays through (its
    ``smarthost``, else the default for the link) and the pop3 accounts fetched over it."""
    chosen: list[Account] = []
    smarthost = (config.accounts.get(plan.smarthost) if plan.smarthost is not None
                 else smarthost_for(config, plan.name))
    if smarthost is not None and smarthost.type == "smtp":
        chosen.append(smarthost)
    chosen += [config.accounts[n] for n in accounts_over(config, plan.name)
               if plan.fetches(n)]
    return chosen


def cycle_exchange(config: Config) -> Exchange:
    """The exchange a cycle runs once a link is up (see the module docstring)."""

    async def exchange(online: OnlineLink) -> ExchangeResult:
        meter = LinkMeter()
        online.tally.watch(meter)
        summary = await exchange_accounts(
            config, accounts_for_link(config, online.plan), link=online.plan.name,
            link_max_size=online.plan.max_size, progress=online.on_transfer, meter=meter)
        return ExchangeResult(summary.ok, summary.error)

    return exchange


def waiting_now(config: Config) -> Waiting:
    """What a cycle would move now (reads the queue and the fetch records)."""
    return waiting(config, read_queue(config), read_held(config))


def site_cycle(
    config: Config,
    state: Path,
    *,
    mode: str | None = None,
    plans: Sequence[LinkPlan] | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    log: Callable[[str], None] | None = None,
    exchange: Exchange | None = None,
) -> ExchangeCycle:
    """The cycle for ``config``'s links; ``mode`` (``--link``) wins over
    ``[schedule] link``. ``state`` is the data folder's ``state`` folder (not created
    here: a dry run must not make it). ``exchange``: default :func:`cycle_exchange`."""
    return ExchangeCycle(
        link_plans(config) if plans is None else plans, state,
        exchange if exchange is not None else cycle_exchange(config),
        mode=mode or choice_mode(config), progress=progress, log=log)
