"""``nosend check`` (one exchange cycle) and ``nosend watch`` (the scheduler alone).

Owns: the two commands' syntax, output and exit status, and who runs what when they are
started as root. ``check``: if anything waits, choose a link (``--link``, else
``[schedule] link``), bring it up, wait for its probe, relay the queue, fetch the
accounts used over it, bring it down, record the cycle
(:class:`nosend_link.cycle.ExchangeCycle`; the exchange is
:func:`nosend_link.exchange.cycle_exchange`, the sequence ``nosend exchange`` runs too).
``--dry-run`` says what it would do and changes nothing. ``watch``: for sites whose
server runs from inetd, the scheduler of ``nosend serve`` on its own
(:class:`nosend_link.scheduler_loop.SchedulerLoop`) until SIGTERM.

Exit status of ``check``: as :mod:`nosend_link.cycle` documents -- 0 done or nothing to
do, 1 partly done (or a user error), 3 no link came up, 4 no usable link, 75 another
cycle is running, 128 + N when signal N cut the cycle short (``down`` ran). ``watch``
exits 0 when SIGTERM, SIGINT or SIGHUP ends it.

Started as root with ``user =`` in ``mail.cfg`` (a root crontab, the systemd timer):
root stays root for the link's ``up`` and ``down`` -- ``pon``/``poff`` and ``nmcli``
usually need it -- and the exchange runs with the service user's effective ids
(:func:`nosend.privileges.acting_as`), so every Maildir file, queue record and fetch
record it writes belongs to the service user from the moment it exists. The cycle's
own files (``state/``: the lock, the link-up marker, the ledger) are written as root and
given to the service user before and after the cycle; the marker is the service user's
from the moment it is written, so a check killed with -9 leaves none the server cannot
read and clear. Started as another user who is
not the service user, both commands refuse (what they wrote would belong to the wrong
user), as the admin commands do.

Must not: print a secret; leave a link up (the cycle runs ``down`` on every path).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nosend.admin import UserError, _config_path, _guarded
from nosend_store.config import Config, ConfigError, RunAs, load_config

if TYPE_CHECKING:
    from nosend_link.online import Exchange, ExchangeResult, OnlineLink
    from nosend_link.progress import ProgressEvent

__all__ = ["register"]

_EPILOG_CHECK = """\
examples:
  nosend check                  # a cycle if anything waits (cron, nosend-check.timer)
  nosend check --dry-run        # which link, how many messages, how long, what cost
  nosend check --link gsm       # this link only, this once
  nosend check --link cost      # the cheapest estimate first, this once
exit status: 0 done or nothing to do, 1 partly, 3 no link came up, 4 no usable link,
75 another cycle is running, 128+N stopped by signal N (the link was brought down)
"""
_EPILOG_WATCH = """\
examples (for a server run from inetd; `nosend serve` schedules cycles itself):
  nosend watch --config /etc/nosend/mail.cfg
"""


def register(subparsers: Any) -> None:
    """Add ``nosend check`` and ``nosend watch``."""
    help_text = "one exchange cycle if anything waits: link up, send, fetch, link down"
    p = subparsers.add_parser(
        "check", help=help_text, description=help_text + ".", epilog=_EPILOG_CHECK,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                   help="mail.cfg to use")
    p.add_argument("--link", metavar="NAME",
                   help="auto, cost or a link's name (default: [schedule] link)")
    p.add_argument("--dry-run", action="store_true",
                   help="say what a cycle would do; change nothing")
    p.set_defaults(handler=_guarded(_check))
    help_text = "run cycles when [schedule] says, until SIGTERM (for inetd sites)"
    w = subparsers.add_parser(
        "watch", help=help_text, description=help_text + ".", epilog=_EPILOG_WATCH,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                   help="mail.cfg to use")
    w.set_defaults(handler=_guarded(_watch))


def _printer(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _renderer() -> Callable[[ProgressEvent], None]:
    from nosend_link.progress import LogRenderer, TerminalRenderer  # noqa: PLC0415

    return TerminalRenderer(sys.stderr) if sys.stderr.isatty() else LogRenderer(_printer)


def service_user(config: Config, path: Path) -> RunAs | None:
    """The service user a root ``check``/``watch`` writes mail as (see the docstring)."""
    from nosend.privileges import PrivilegeError, plan_switch  # noqa: PLC0415

    try:
        return plan_switch(config.server.run_as, path)
    except PrivilegeError as exc:
        raise UserError(str(exc)) from None


def _as_user(run_as: RunAs | None) -> Callable[[Exchange], Exchange]:
    """Wrap an exchange so that it runs with ``run_as``'s effective ids."""
    # Imported while still root: the service user need not be able to read the sources.
    import nosend_link.fetch  # noqa: F401, PLC0415
    import nosend_link.relay  # noqa: F401, PLC0415
    from nosend.privileges import acting_as  # noqa: PLC0415

    def wrap(exchange: Exchange) -> Exchange:
        async def as_user(online: OnlineLink) -> ExchangeResult:
            with acting_as(run_as):
                return await exchange(online)

        return as_user

    return wrap


def give_state(config: Config, run_as: RunAs | None) -> None:
    """Root, before and after a cycle: the data folder's top folders and ``state/``
    (lock, marker, ledger) to the service user."""
    if run_as is None:
        return
    from nosend.privileges import give_data_dir, give_tree  # noqa: PLC0415

    data_dir = Path(config.server.data_dir)
    give_data_dir(data_dir, run_as, recursive=False)
    give_tree(data_dir / "state", run_as)


def _check(args: argparse.Namespace) -> int:
    from nosend_link.choice import AUTO, COST  # noqa: PLC0415

    path = _config_path(args)
    config = load_config(path)
    if args.link is not None and args.link not in (AUTO, COST, *config.links):
        known = ", ".join(config.links) or "none"
        raise UserError(f"no link {args.link!r} (auto, cost, or one of: {known})")
    if args.dry_run:
        return _dry_run(config, args.link)
    run_as = service_user(config, path)
    return _cycle(config, args.link, run_as)


def _dry_run(config: Config, mode: str | None) -> int:
    """Print what a cycle would do. Reads the queue, the fetch records and the ledger;
    creates nothing (not even ``state/``)."""
    from nosend_link.exchange import site_cycle, waiting_now  # noqa: PLC0415

    state = Path(config.server.data_dir) / "state"
    cycle = site_cycle(config, state, mode=mode)
    for line in cycle.dry_run(waiting_now(config)).lines():
        print(line)
    return 0


def _cycle(config: Config, mode: str | None, run_as: RunAs | None) -> int:
    import anyio  # noqa: PLC0415 -- the admin commands do not pay for the runners

    from nosend_link.cycle import CycleOutcome, CycleResult  # noqa: PLC0415
    from nosend_link.cycle_lock import state_dir  # noqa: PLC0415
    from nosend_link.exchange import cycle_exchange, site_cycle, waiting_now  # noqa: PLC0415
    from nosend_link.signals import run_until_signalled  # noqa: PLC0415

    state = state_dir(config.server.data_dir)
    give_state(config, run_as)
    cycle = site_cycle(config, state, mode=mode, progress=_renderer(), log=_printer,
                       exchange=_as_user(run_as)(cycle_exchange(config)))

    async def one() -> CycleOutcome:
        waiting = await anyio.to_thread.run_sync(waiting_now, config)
        return await cycle.run(waiting)

    try:
        done = anyio.run(run_until_signalled, one)
    finally:
        give_state(config, run_as)
    if done.value is None:
        print("nosend: interrupted; the link was brought down", file=sys.stderr)
        return done.exit_code or CycleResult.INTERRUPTED.exit_code
    outcome = done.value
    if outcome.result is CycleResult.BUSY:
        print(f"nosend: {outcome.message}", file=sys.stderr)
    else:
        print(f"{outcome.result.value}: {outcome.message}")
        _report(config, outcome, run_as)
    return outcome.result.exit_code


def _report(config: Config, outcome: Any, run_as: RunAs | None) -> None:
    """``[schedule] report``: the report to the postmaster, after a recorded cycle."""
    if config.schedule.report == "no" or outcome.record is None:
        return
    from nosend.privileges import acting_as  # noqa: PLC0415
    from nosend_link.report import report_after_cycle  # noqa: PLC0415

    with acting_as(run_as):
        try:
            report_after_cycle(config, outcome.record)
        except OSError as exc:
            print(f"nosend: the report to the postmaster was not delivered: "
                  f"{exc.strerror or exc}", file=sys.stderr)


# -- watch -------------------------------------------------------------------------------


def _watch(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415

    from nosend.control import config_stamp  # noqa: PLC0415
    from nosend.serve import _setup_logging  # noqa: PLC0415
    from nosend_link.exchange import site_cycle  # noqa: PLC0415
    from nosend_link.progress import LogRenderer  # noqa: PLC0415
    from nosend_link.scheduler_loop import SchedulerLoop, run_site_cycle  # noqa: PLC0415
    from nosend_link.signals import run_until_signalled  # noqa: PLC0415

    path = _config_path(args)
    config = load_config(path)
    run_as = service_user(config, path)
    _setup_logging(config.server.log_level, logging.StreamHandler(sys.stderr))
    log = logging.getLogger("nosend.watch")
    current = [config, config_stamp(path)]

    def config_now() -> Config:
        # mail.cfg is re-read when it changed, so `nosend link use` takes effect at the
        # next look; a broken edit keeps the last good configuration.
        stamp = config_stamp(path)
        if stamp != current[1]:
            current[1] = stamp
            try:
                current[0] = load_config(path)
                log.info("%s re-read", path)
            except (ConfigError, OSError) as exc:
                log.error("%s; keeping the configuration read before", exc)
        new: Config = current[0]  # type: ignore[assignment]
        return new

    async def cycle(conf: Config) -> None:
        await anyio.to_thread.run_sync(give_state, conf, run_as)
        try:
            outcome = await run_site_cycle(conf, progress=LogRenderer(log.info),
                                           log=log.info, wrap=_as_user(run_as))
        finally:
            await anyio.to_thread.run_sync(give_state, conf, run_as)
        log.info("cycle %s: %s", outcome.result.value, outcome.message)
        if outcome.record is not None:
            await anyio.to_thread.run_sync(_report, conf, outcome, run_as)

    async def main() -> None:
        from nosend_link.cycle_lock import state_dir  # noqa: PLC0415

        state = state_dir(config.server.data_dir)
        give_state(config, run_as)
        for line in await site_cycle(config, state, log=log.info).bring_down_stale():
            log.warning("%s", line)
        log.info("watching the queue (scheduler)")
        await SchedulerLoop(config_now, cycle, log=log.info).run()

    done = anyio.run(run_until_signalled, main)
    log.info("stopped")
    return 0 if done.interrupted else 1
