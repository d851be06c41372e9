"""The exchange cycle: bring a link up, let the exchange run, bring it down, record it.

Owns: :class:`ExchangeCycle` (the orchestration) and :class:`CycleResult` (the results
and the exit codes the command line uses). It re-exports :class:`Tally`,
:class:`OnlineLink`, :class:`ExchangeResult` and :data:`Exchange`, the contract with the
exchange, from :mod:`nosend_link.online`. Must not: speak SMTP or POP3,
touch the queue or mailboxes (the ``exchange`` callable does), or read ``mail.cfg``
(plans come in as :class:`~nosend_link.plan.LinkPlan`).

One cycle, in order:

1. take the overlap lock (``state/cycle.lock``); if another cycle holds it, the result
   is :attr:`CycleResult.BUSY` ("another cycle is running (pid N)") and nothing else
   happens;
2. bring down any link the marker says is up (a cycle killed with a link up): its
   ``down`` runs, and a ``stale link`` record bills the time it was left up;
3. nothing waits: :attr:`CycleResult.NOTHING`, no link is touched;
4. choose the links (:func:`~nosend_link.choice.choose`: the link in use, ``auto`` by
   priority, or ``cost``); none usable (hours, budget, disabled):
   :attr:`CycleResult.NO_LINK`;
5. for each link in order: write the marker, run ``up`` (``up_timeout``), wait for the
   probe to answer (the probe target is the link's ``probe`` or the caller's default,
   the smarthost; ``up_timeout`` bounds ``up`` and the probe together). If it does not
   come up, ``down`` runs, the attempt and its cost are noted, and the next link is
   tried. Once one is up, ``exchange(online_link)`` runs, cancelled when the link has
   been online ``max_online`` seconds (counted from the start of ``up``) or when its
   ``hours`` end, whichever comes first; then ``down``;
6. append the cycle's record to the ledger -- unless no link was touched (``nothing``,
   ``no usable link``): cron runs a cycle every few minutes, and the ledger is a bill,
   not a log. The record is still returned.

``down`` always runs once ``up`` was started: after a failed ``up`` (a modem left
off-hook), an error or a timeout in the exchange, ``max_online``, and on cancellation
(Ctrl-C, and SIGTERM, which the command line turns into cancellation): it runs in a
shielded cancel scope, and the record is written before the cancellation goes on. If
``down`` fails, the marker stays, so the next cycle tries again, and the result is at
best :attr:`CycleResult.PARTLY` -- a link that may still be up costs money, and cron
must hear of it.

The exchange's side of the contract (``exchange(online) -> ExchangeResult``):

- relay only messages ``online.plan.carries(size)``, fetch only accounts
  ``online.plan.fetches(name)``; ``online.seconds_left`` says how long the call may last;
- count as it goes, so a cut-short cycle still bills what crossed:
  ``online.tally.watch(meter)`` for each connection's wire meter (or
  ``tally.wire(up, down)``), ``tally.sent(user, size)`` once the upstream accepted a
  message from local ``user``, ``tally.received(user, size)`` once a fetched message
  for ``user`` is durably delivered -- or hand the transfer events to
  ``online.on_transfer``, which does the last two and the progress line;
- else ``online.report(direction, n, count, bytes_left)`` at each message, for the
  progress line;
- return ``ExchangeResult(complete, error)``; an exception counts as incomplete, with its
  text as the error (so it must hold no secret); never swallow cancellation: it arrives
  at ``max_online``, at the end of the link's hours, and on Ctrl-C or SIGTERM.

Exit codes (:attr:`CycleResult.exit_code`), chosen for cron and scripts:

======================  ====  ==========================================================
result                  code  meaning
======================  ====  ==========================================================
``done``                0     everything waiting went and every account was fetched
``nothing``             0     nothing waited, no link was used (success for cron; the
                              result value tells it apart)
``partly``              1     a link came up but not everything was done (an error, a
                              deferral, ``max_online``), or ``down`` failed
``link failed``         3     no link came up (each failed ``up`` or its probe)
``no usable link``      4     every link is disabled, outside its hours, over budget or
                              may carry nothing that waits (``max_size``)
``busy``                75    another cycle is running (EX_TEMPFAIL: try again later)
``interrupted``         130   the cycle was cancelled; ``down`` ran. When a signal did
                              it, :func:`~nosend_link.signals.run_until_signalled` gives
                              the shell's 128 + signal number (143 for SIGTERM) instead
======================  ====  ==========================================================

2 is left to argparse, which exits 2 on a usage error.

How ``nosend send`` puts it together (:mod:`nosend_link.site` reads the plans, with each
link's probe resolved to its smarthost, the link in use and what waits)::

    plans = link_plans(config)
    waiting = site.waiting(config, read_queue(config), read_held(config))
    cycle = ExchangeCycle(plans, state_dir(data_dir), exchange,
                          mode=args.link or choice_mode(config),
                          progress=TerminalRenderer(sys.stderr))
    if args.dry_run:
        for line in cycle.dry_run(waiting).lines():
            print(line)
        return 0
    done = anyio.run(run_until_signalled, lambda: cycle.run(waiting))
    return done.exit_code if done.value is None else done.value.result.exit_code
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import anyio
import anyio.to_thread

from nosend_link import _format
from nosend_link.choice import AUTO, Choice, DryRun, choose, dry_run
from nosend_link.commands import KILL_GRACE, CommandResult, run_command
from nosend_link.cycle_lock import CycleBusy, CycleLock, LinkUp, MarkerError, UpMarker
from nosend_link.ledger import (
    Attempt,
    CycleRecord,
    Ledger,
    LinkTotals,
    month_of,
    month_totals,
    split_cost,
)
from nosend_link.online import Exchange, ExchangeResult, OnlineLink, Tally
from nosend_link.plan import Endpoint, LinkPlan, Waiting
from nosend_link.probe import RETRY_INTERVAL, ProbeResult, wait_for_probe
from nosend_link.progress import CycleEnded, LinkState, ProgressEvent, ProgressMeter

__all__ = [
    "STALE_LINK",
    "CycleOutcome",
    "CycleResult",
    "Exchange",
    "ExchangeCycle",
    "ExchangeResult",
    "OnlineLink",
    "Tally",
]

_log = logging.getLogger("nosend.link")

#: The ledger result of a record that bills a link found up at the start of a cycle.
STALE_LINK = "stale link"


class CycleResult(enum.Enum):
    """How a cycle ended; see the module docstring for the exit codes."""

    DONE = "done"
    NOTHING = "nothing"
    PARTLY = "partly"
    LINK_FAILED = "link failed"
    NO_LINK = "no usable link"
    BUSY = "busy"
    INTERRUPTED = "interrupted"

    @property
    def exit_code(self) -> int:
        """The process exit status ``nosend send`` and the like should end with."""
        return _EXIT_CODES[self]


_NOT_RECORDED = frozenset({CycleResult.NOTHING, CycleResult.NO_LINK})

_EXIT_CODES = {
    CycleResult.DONE: 0,
    CycleResult.NOTHING: 0,
    CycleResult.PARTLY: 1,
    CycleResult.LINK_FAILED: 3,
    CycleResult.NO_LINK: 4,
    CycleResult.BUSY: 75,
    CycleResult.INTERRUPTED: 130,
}


@dataclass(frozen=True, slots=True)
class CycleOutcome:
    """A cycle's result and its ledger record (None for ``busy``: nothing was done)."""

    result: CycleResult
    record: CycleRecord | None
    message: str


@dataclass(slots=True)
class _Run:
    """What one cycle gathers on its way."""

    tally: Tally = field(default_factory=Tally)
    link: LinkPlan | None = None
    online_seconds: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    down_failed: bool = False


class ExchangeCycle:
    """Runs cycles for a set of links; see the module docstring.

    ``state`` is the data directory's ``state`` folder (the lock, the marker and, unless
    ``ledger`` is given, ``cycles.jsonl``). ``default_probe`` is the smarthost, probed
    for links without a ``probe`` of their own (None and no ``probe``: ``up``'s exit
    status is trusted). ``mode`` is ``auto``, ``cost`` or a link's name. ``progress``
    receives :mod:`~nosend_link.progress` events. ``local_time`` gives the time for
    ``hours`` and the budget month. ``down_timeout`` bounds ``down`` (None: the link's
    own ``down_timeout``, else its ``up_timeout``).
    """

    def __init__(
        self,
        plans: Sequence[LinkPlan],
        state: str | os.PathLike[str],
        exchange: Exchange,
        *,
        default_probe: Endpoint | None = None,
        mode: str = AUTO,
        ledger: Ledger | None = None,
        progress: Callable[[ProgressEvent], None] | None = None,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        local_time: Callable[[], datetime] = lambda: datetime.now().astimezone(),
        down_timeout: float | None = None,
        probe_interval: float = RETRY_INTERVAL,
        kill_grace: float = KILL_GRACE,
    ) -> None:
        self._plans = tuple(plans)
        self._state = Path(state)
        self._exchange = exchange
        self._default_probe = default_probe
        self._mode = mode
        self._ledger = ledger if ledger is not None else Ledger(self._state / "cycles.jsonl")
        self._progress = progress
        self._log = log if log is not None else _log.info
        self._clock = clock
        self._monotonic = monotonic
        self._local_time = local_time
        self._down_timeout = down_timeout
        self._probe_interval = probe_interval
        self._kill_grace = kill_grace
        self._marker = UpMarker(self._state)

    @property
    def ledger(self) -> Ledger:
        """The ledger this cycle records to."""
        return self._ledger

    # -- what the command line calls -------------------------------------------------

    def dry_run(self, waiting: Waiting) -> DryRun:
        """What :meth:`run` would do for ``waiting`` now. Reads the ledger; writes
        nothing, takes no lock, runs nothing."""
        now = self._local_time()
        return dry_run(self._plans, waiting, mode=self._mode, now=now,
                       spent=self._spent(now))

    async def run(self, waiting: Waiting) -> CycleOutcome:
        """One cycle for ``waiting`` (what the queue and the accounts hold)."""
        self._state.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = CycleLock(self._state)
        try:
            lock.acquire()
        except CycleBusy as busy:
            return CycleOutcome(CycleResult.BUSY, None, str(busy))
        try:
            return await self._locked(waiting)
        finally:
            lock.release()

    async def bring_down_stale(self) -> list[str]:
        """For ``nosend watch``/``serve`` at start: hang up any link left up by a killed
        cycle. Returns what was done; nothing if a cycle is running (it does this)."""
        self._state.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            with CycleLock(self._state):
                return await self._bring_down_stale()
        except CycleBusy:
            return []

    # -- the cycle ------------------------------------------------------------------------

    async def _locked(self, waiting: Waiting) -> CycleOutcome:
        start, began = self._clock(), self._monotonic()
        run = _Run()
        try:
            run.errors += await self._bring_down_stale()
            if not waiting.has_work:
                result = CycleResult.NOTHING
            else:
                now = self._local_time()
                # The ledger is read off the event loop: serve runs cycles inside it.
                spent = await anyio.to_thread.run_sync(self._spent, now)
                choice = choose(self._plans, waiting, mode=self._mode, now=now, spent=spent)
                result = await self._dial(choice, run)
        except BaseException as exc:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class()) or isinstance(
                exc, KeyboardInterrupt)
            run.errors.append("interrupted" if cancelled else f"{type(exc).__name__}: {exc}")
            with anyio.CancelScope(shield=True):
                await self._finish(CycleResult.INTERRUPTED, run, start, began)
            raise
        return await self._finish(result, run, start, began)

    async def _dial(self, choice: Choice, run: _Run) -> CycleResult:
        if not choice.order:
            run.errors += [f"{x.link}: {x.reason}" for x in choice.excluded]
            return CycleResult.NO_LINK
        for estimate in choice.order:
            result = await self._use(estimate.plan, run)
            if result is not None:
                return result
        return CycleResult.LINK_FAILED

    async def _use(self, plan: LinkPlan, run: _Run) -> CycleResult | None:
        """Bring ``plan`` up, exchange, bring it down. None: it did not come up."""
        started = self._monotonic()
        failure: str | None = None
        result: CycleResult | None = None
        try:
            if plan.dialled:
                await anyio.to_thread.run_sync(self._marker.add, LinkUp(
                    plan.name, plan.down, self._clock(), os.getpid()))
                self._emit(LinkState(plan.name, "dialling"))
                up = await run_command(plan.up, timeout=plan.up_timeout,
                                       grace=self._kill_grace, monotonic=self._monotonic)
                self._log_command(plan.name, "up", up)
                if not up.ok:
                    failure = f"up: {up.describe()}"
            probed: ProbeResult | None = None
            endpoint = plan.probe or self._default_probe
            if failure is None and endpoint is not None:
                self._emit(LinkState(plan.name, "probing", str(endpoint)))
                within = plan.up_timeout - (self._monotonic() - started)
                probed = await wait_for_probe(endpoint, within=max(within, 0.001),
                                              interval=self._probe_interval,
                                              monotonic=self._monotonic)
                if not probed.ok:
                    failure = probed.describe()
            if failure is not None:
                self._emit(LinkState(plan.name, "failed", failure))
                return None
            run.link = plan
            self._emit(LinkState(plan.name, "online", probed.banner if probed else ""))
            result = await self._exchange_on(plan, probed, run, started)
            return result
        finally:
            with anyio.CancelScope(shield=True):
                down_error = await self._down(plan)
            seconds = self._monotonic() - started
            if run.link is plan:
                run.online_seconds = seconds
            else:
                error = failure or "interrupted"
                if down_error:
                    error += f"; {down_error}"
                run.attempts.append(Attempt(plan.name, seconds, plan.cost(seconds, 0), error))
            if down_error and run.link is plan:
                run.errors.append(down_error)
                run.down_failed = True

    async def _exchange_on(
        self, plan: LinkPlan, probed: ProbeResult | None, run: _Run, started: float
    ) -> CycleResult:
        online_at = self._monotonic()
        deadline = started + plan.max_online
        why = f"max_online reached ({_format.duration(plan.max_online)})"
        # Never past the link's hours either: a cheap night rate that ends at 06:00 ends
        # the call at 06:00.
        now = self._local_time()
        closes = plan.hours.window_end(now)
        if closes is not None and online_at + (closes - now).total_seconds() < deadline:
            deadline = online_at + (closes - now).total_seconds()
            why = f"the link's hours ended ({closes:%H:%M})"
        online = OnlineLink(
            plan, probed, run.tally, deadline=deadline,
            meter=ProgressMeter(plan, started, online_at, self._monotonic),
            emit=self._emit, monotonic=self._monotonic,
        )
        answer: ExchangeResult | None = None
        with anyio.move_on_after(max(deadline - online_at, 0.0)):
            try:
                answer = await self._exchange(online)
            except Exception as exc:  # the exchange's bug or failure: hang up, record it
                answer = ExchangeResult(False, f"exchange: {type(exc).__name__}: {exc}")
        if answer is None:
            run.errors.append(why)
            return CycleResult.PARTLY
        if answer.error:
            run.errors.append(answer.error)
        return CycleResult.DONE if answer.complete else CycleResult.PARTLY

    async def _down(self, plan: LinkPlan) -> str | None:
        """Run ``down`` for ``plan`` if it is dialled; see :meth:`_hang_up`."""
        if not plan.dialled:
            return None
        return await self._hang_up(plan.name, plan.down, self._down_timeout_for(plan))

    async def _hang_up(self, name: str, down: tuple[str, ...], timeout: float) -> str | None:
        """Run ``down`` (none: nothing to run) and forget the link's marker if it went
        well. Returns the error, if any. Called shielded."""
        self._emit(LinkState(name, "hanging up"))
        if down:
            result = await run_command(down, timeout=timeout, grace=self._kill_grace,
                                       monotonic=self._monotonic)
            self._log_command(name, "down", result)
            if not result.ok:
                error = f"down: {result.describe()} (the link may still be up)"
                self._emit(LinkState(name, "failed", error))
                return error
        await anyio.to_thread.run_sync(self._marker.remove, name)
        self._emit(LinkState(name, "down"))
        return None

    def _down_timeout_for(self, plan: LinkPlan | None) -> float:
        if self._down_timeout is not None:
            return self._down_timeout
        if plan is not None and plan.down_timeout is not None:
            return plan.down_timeout
        return plan.up_timeout if plan is not None else LinkPlan("").up_timeout

    async def _bring_down_stale(self) -> list[str]:
        """Run ``down`` for every link the marker holds; bill and forget those that went
        down. Returns error lines for the record."""
        try:
            entries = await anyio.to_thread.run_sync(self._marker.read)
        except MarkerError as exc:
            await anyio.to_thread.run_sync(self._marker.clear)
            return [f"{exc}; removed"]
        errors = []
        plans = {p.name: p for p in self._plans}
        for entry in entries:
            plan = plans.get(entry.link)
            # The current down if the link still has one; else the one recorded.
            down = plan.down if plan is not None and plan.down else entry.down
            with anyio.CancelScope(shield=True):
                error = await self._hang_up(entry.link, down, self._down_timeout_for(plan))
            if error:
                errors.append(f"{entry.link} left up by pid {entry.pid}: {error}")
                continue
            seconds = max(0.0, self._clock() - entry.since)
            cost = plan.cost(seconds, 0) if plan is not None else Decimal(0)
            record = CycleRecord(
                start=entry.since, duration=seconds, result=STALE_LINK, link=entry.link,
                online_seconds=seconds, cost=cost,
                error=f"left up by pid {entry.pid}, brought down by pid {os.getpid()}",
                users=split_cost(cost, {}),
            )
            self._log(f"{entry.link}: left up by pid {entry.pid} for "
                      f"{_format.duration(seconds)}, brought down")
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._ledger.append, record)
        return errors

    async def _finish(
        self, result: CycleResult, run: _Run, start: float, began: float
    ) -> CycleOutcome:
        if run.down_failed and result is CycleResult.DONE:
            result = CycleResult.PARTLY
        t = run.tally
        link = run.link
        cost = link.cost(run.online_seconds, t.bytes_up + t.bytes_down) if link else Decimal(0)
        record = CycleRecord(
            start=start,
            duration=self._monotonic() - began,
            result=result.value,
            link=link.name if link else None,
            online_seconds=run.online_seconds,
            bytes_up=t.bytes_up,
            bytes_down=t.bytes_down,
            messages_out=t.messages_out,
            messages_in=t.messages_in,
            cost=cost,
            error="; ".join(run.errors) or None,
            attempts=tuple(run.attempts),
            users=split_cost(cost, t.users) if link else (),
        )
        if result not in _NOT_RECORDED or run.attempts:
            await anyio.to_thread.run_sync(self._ledger.append, record)
        message = _summary(record)
        self._emit(CycleEnded(result.value, message))
        return CycleOutcome(result, record, message)

    # -- helpers ----------------------------------------------------------------------

    def _spent(self, now: datetime) -> Mapping[str, LinkTotals]:
        year, month = month_of(now.timestamp(), now.tzinfo)
        return month_totals(self._ledger.records(), year, month, now.tzinfo).links

    def _emit(self, event: ProgressEvent) -> None:
        if self._progress is None:
            return
        try:
            self._progress(event)
        except Exception:  # a display's failure must never leave a link up
            _log.exception("progress callback failed")

    def _log_command(self, link: str, which: str, result: CommandResult) -> None:
        line = f"{link} {which}: {result.describe()}"
        if result.output:
            line += f"; output: {result.output}"
        self._log(line)


def _summary(record: CycleRecord) -> str:
    if record.link is None:
        return record.error or record.result
    text = (f"{record.messages_out} sent, {record.messages_in} fetched over {record.link}, "
            f"{_format.size(record.bytes_up + record.bytes_down)} in "
            f"{_format.duration(record.online_seconds)}, about {_format.money(record.cost)}")
    return f"{text}; {record.error}" if record.error else text
