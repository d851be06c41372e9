"""Trying a link by hand: bring it up, probe it, bring it down, and say how long each took.

Owns: :func:`try_link` and :class:`Trial`, what ``nosend link test NAME`` runs: the same
steps as a cycle's dial (:mod:`nosend_link.cycle`) without the exchange. It takes the
cycle lock (a test must not dial while a cycle holds the line), writes the link-up
marker before ``up`` (so a test killed with the link up is hung up by the next cycle),
and runs ``down`` whatever happened once ``up`` was started -- after a failed ``up``,
a failed probe, and on cancellation (Ctrl-C), shielded. A dialled link's time online
is billed in the ledger (result ``link test``): airtime spent on a test is spent.

Must not: move mail, send anything to the probed server, or run a shell.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from nosend_link.commands import KILL_GRACE, CommandResult, run_command
from nosend_link.cycle_lock import CycleLock, LinkUp, UpMarker
from nosend_link.ledger import CycleRecord, Ledger, split_cost
from nosend_link.plan import Endpoint, LinkPlan
from nosend_link.probe import RETRY_INTERVAL, ProbeResult, wait_for_probe

__all__ = ["TEST_RESULT", "Trial", "try_link"]

#: The ledger result of a test's record.
TEST_RESULT = "link test"


@dataclass(slots=True)
class Trial:
    """What a test did: each step's result (None: not run), the seconds from the start
    of ``up`` to the end of ``down``, and the cost of that time by the link's rates.
    ``interrupted`` stays True if the steps did not run to their end (cancelled)."""

    link: str
    up: CommandResult | None = None
    probe: ProbeResult | None = None
    down: CommandResult | None = None
    probe_target: Endpoint | None = None
    seconds: float = 0.0
    cost_text: str = ""
    notes: list[str] = field(default_factory=list)
    interrupted: bool = True

    @property
    def ok(self) -> bool:
        """Not interrupted; ``up`` (if any) exited 0, the probe (if any) answered,
        ``down`` (if any) too."""
        return not self.interrupted and all(
            r is None or r.ok for r in (self.up, self.probe, self.down))


async def try_link(
    plan: LinkPlan,
    state: str | os.PathLike[str],
    *,
    default_probe: Endpoint | None = None,
    ledger: Ledger | None = None,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    probe_interval: float = RETRY_INTERVAL,
    kill_grace: float = KILL_GRACE,
    take_lock: bool = True,
) -> Trial:
    """Up, probe, down for ``plan``; raises :class:`~nosend_link.cycle_lock.CycleBusy`
    if a cycle is running. ``state`` is the data folder's ``state`` directory.
    ``take_lock=False``: the caller holds the cycle lock already (taken before an event
    loop starts, so that "busy" is a plain exception, not one inside a task group)."""
    state_path = Path(state)
    state_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    ledger = ledger if ledger is not None else Ledger(state_path / "cycles.jsonl")
    trial = Trial(plan.name, probe_target=plan.probe or default_probe)
    marker = UpMarker(state_path)
    with CycleLock(state_path) if take_lock else contextlib.nullcontext():
        start, began = clock(), monotonic()
        try:
            if plan.dialled:
                await anyio.to_thread.run_sync(
                    marker.add, LinkUp(plan.name, plan.down, start, os.getpid()))
                trial.up = await run_command(plan.up, timeout=plan.up_timeout,
                                             grace=kill_grace, monotonic=monotonic)
            if (trial.up is None or trial.up.ok) and trial.probe_target is not None:
                within = plan.up_timeout - (monotonic() - began)
                trial.probe = await wait_for_probe(
                    trial.probe_target, within=max(within, 0.001), interval=probe_interval,
                    monotonic=monotonic)
            trial.interrupted = False
        finally:
            with anyio.CancelScope(shield=True):
                if plan.dialled:
                    if plan.down:
                        timeout = plan.down_timeout or plan.up_timeout
                        trial.down = await run_command(plan.down, timeout=timeout,
                                                       grace=kill_grace, monotonic=monotonic)
                    if trial.down is None or trial.down.ok:
                        await anyio.to_thread.run_sync(marker.remove, plan.name)
                    else:
                        trial.notes.append("down failed: the link may still be up; the next "
                                           "cycle runs down again")
                trial.seconds = monotonic() - began
                if plan.dialled:
                    cost = plan.cost(trial.seconds, 0)
                    trial.cost_text = str(cost)
                    record = CycleRecord(
                        start=start, duration=trial.seconds, result=TEST_RESULT,
                        link=plan.name, online_seconds=trial.seconds, cost=cost,
                        error=("interrupted" if trial.interrupted
                               else None if trial.ok else "test failed"),
                        users=split_cost(cost, {}),
                    )
                    await anyio.to_thread.run_sync(ledger.append, record)
    return trial
