"""Housekeeping of the outbound queue and the mailboxes, which no connection triggers.

Owns: one blocking pass (:func:`housekeep`) that expires queued messages that waited too
long (RFC 5321 section 4.5.4.1: give up after 4-5 days, ``bounce_after`` in mail.cfg),
delivers the delivery status notifications still owed (RFC 3464 reports, including
NOTIFY=DELAY warnings, RFC 3461 section 4.1) and removes crash leftovers from the
queue's and every mailbox's ``tmp/``; the periodic loop :func:`run_housekeeping` that
``nosend serve`` runs; and where a report for an envelope sender is delivered
(:func:`report_mailbox`).

``nosend inetd`` serves one connection per process and runs no loop: such sites run
``nosend queue maintain`` (one :func:`housekeep` pass) from cron instead.

Must not: send mail over the network, pick links (the link layer does), create a
mailbox or the queue that does not exist yet, or log a secret (counts and error texts
only; one line per pass).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

from nosend_runners.serve.log import SessionLog
from nosend_runners.session.boundary import ServerState
from nosend_store.config import Config
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import MaildirBounceSink, OutboundQueue, RetryPolicy

__all__ = [
    "DEFAULT_INTERVAL",
    "TMP_MAX_AGE",
    "HousekeepingSummary",
    "retry_policy",
    "report_mailbox",
    "housekeep",
    "run_housekeeping",
]

#: Seconds between two passes under ``nosend serve``: expiry is due within minutes of
#: its time, and an idle pass costs one directory listing per mailbox.
DEFAULT_INTERVAL = 300.0

#: The Maildir specification's age after which a ``tmp/`` file is a crash leftover
#: (36 hours); the queue's staging area uses the same.
TMP_MAX_AGE = 36 * 3600.0

_LOGGER = "nosend.housekeeping"


@dataclass(frozen=True, slots=True)
class HousekeepingSummary:
    """What one pass did.

    ``expired``: queued messages whose undelivered recipients were given up (status
    4.4.7, RFC 3463 section 3.5). ``notified``: reports delivered (failure, relayed or
    delay; one report per message and pass). ``notify_failed``: reports that could not
    be delivered now; their messages stay queued and the next pass tries again.
    ``tmp_removed``: leftovers removed from the queue's and the mailboxes' ``tmp/``.
    ``errors``: steps that failed (a mailbox or the queue unreadable). ``error``: the
    text of the first problem of the pass, a failed step or an undelivered report.
    """

    expired: int = 0
    notified: int = 0
    notify_failed: int = 0
    tmp_removed: int = 0
    errors: int = 0
    error: str | None = None

    @property
    def idle(self) -> bool:
        """Whether the pass found nothing to do and nothing went wrong."""
        return not (
            self.expired or self.notified or self.notify_failed or self.tmp_removed or self.errors
        )


def retry_policy(config: Config) -> RetryPolicy:
    """The queue's :class:`RetryPolicy` from ``[server]``: ``bounce_after`` (expiry),
    ``warn_after`` (NOTIFY=DELAY warnings) and ``retry_interval`` (first retry; RFC 5321
    section 4.5.4.1 asks for at least 30 minutes between attempts)."""
    server = config.server
    default = RetryPolicy()
    return RetryPolicy(
        first_retry=server.retry_interval,
        max_interval=max(default.max_interval, server.retry_interval),
        expire_after=server.bounce_after,
        delay_warning_after=server.warn_after,
    )


def report_mailbox(config: Config, sender: str) -> Path | None:
    """The Maildir that a report for envelope sender ``sender`` goes into, or None when
    the sender is not ours (the report is then queued outbound with the null sender).

    A local sender gets it in its own mailbox (the first one, for an alias with
    several). A sender in a local domain without a local mailbox (an unknown address,
    or an alias that forwards elsewhere) cannot be reached here, and relaying the report
    to our own domain would loop: the postmaster gets it (RFC 5321 section 4.5.1).
    """
    resolution = config.resolve(sender)
    if resolution is not None and resolution.mailboxes:
        return config.maildir_path(resolution.mailboxes[0])
    _, at, domain = sender.rpartition("@")
    if at and not config.is_local_domain(domain):
        return None
    # That domain's postmaster first (it may be an alias of its own), else the server's.
    for address in (f"postmaster@{domain}", "postmaster") if at else ("postmaster",):
        postmaster = config.resolve(address)
        if postmaster is not None and postmaster.mailboxes:
            return config.maildir_path(postmaster.mailboxes[0])
    return None


def housekeep(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    tmp_max_age: float = TMP_MAX_AGE,
    log: SessionLog | None = None,
) -> HousekeepingSummary:
    """Run one blocking housekeeping pass over the queue and every mailbox.

    Safe to run while the server delivers and transports send, and from several
    processes at once: entries a transport (or another pass) holds are skipped. A
    report is delivered durably before its message leaves the queue; a crash in
    between means a duplicate report, never a lost one. Logs one line.
    """
    log = log if log is not None else SessionLog(logging.getLogger(_LOGGER), task="housekeeping")
    server = config.server
    expired = notified = notify_failed = tmp_removed = errors = 0
    first_error: str | None = None

    def failed(what: str, exc: BaseException) -> None:
        nonlocal errors, first_error
        errors += 1
        if first_error is None:
            first_error = f"{what}: {exc}"

    started = time.monotonic()
    # The queue directory appears with the first remote message; before that there is
    # nothing to maintain, and creating it here would hide that.
    if server.queue_dir.is_dir():
        try:
            policy = retry_policy(config)
            # Reports for senders that are not ours go back into this same queue (with
            # the null sender and NOTIFY=NEVER, so a report is never reported on).
            outbound = OutboundQueue(
                server.queue_dir, policy=policy, clock=clock, hostname=server.hostname
            )
            sink = MaildirBounceSink(functools.partial(report_mailbox, config), queue=outbound)
            queue = OutboundQueue(
                server.queue_dir,
                policy=policy,
                clock=clock,
                bounce_sink=sink,
                hostname=server.hostname,
            )
            now = queue.now()
            overdue = [
                e.id
                for e in queue.entries()
                if e.pending and now >= e.created + policy.expire_after
            ]
            for outcome in queue.maintain(now):
                if outcome.notified:
                    notified += 1
                if outcome.notify_error is not None:
                    notify_failed += 1
                    if first_error is None:
                        first_error = f"report: {outcome.notify_error}"
            for qid in overdue:
                # Gone, or every recipient done: this pass expired it. (An entry a
                # transport held was skipped and is still pending.)
                entry = queue.get(qid)
                if entry is None or not entry.pending:
                    expired += 1
        except OSError as exc:
            failed("queue", exc)
        try:
            tmp_removed += OutboundQueue(server.queue_dir, clock=clock).clean_tmp(tmp_max_age)
        except OSError as exc:
            failed("queue tmp", exc)
    for name in config.mailboxes:
        try:
            box = MaildirMailbox(config.maildir_path(name), create=False, clock=clock)
        except FileNotFoundError:
            continue  # never received mail: no tmp/ to clean
        try:
            tmp_removed += box.clean_tmp(tmp_max_age)
        except OSError as exc:
            failed(f"mailbox {name}", exc)

    summary = HousekeepingSummary(
        expired, notified, notify_failed, tmp_removed, errors, first_error
    )
    level = logging.INFO
    if summary.errors or summary.notify_failed:
        level = logging.WARNING
    elif summary.idle:
        level = logging.DEBUG  # every few minutes: only worth a line when debugging
    log.event(
        "housekeeping",
        level=level,
        expired=summary.expired,
        notified=summary.notified,
        notify_failed=summary.notify_failed or None,
        tmp_removed=summary.tmp_removed,
        errors=summary.errors or None,
        error=summary.error,
        ms=round((time.monotonic() - started) * 1000),
    )
    return summary


async def run_housekeeping(
    state: ServerState,
    interval: float = DEFAULT_INTERVAL,
    *,
    clock: Callable[[], float] = time.time,
    tmp_max_age: float = TMP_MAX_AGE,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run :func:`housekeep` at once and then every ``interval`` seconds until the
    server's graceful shutdown begins.

    Each pass uses the configuration current at its start (a SIGHUP reload applies to
    the next pass) and runs in a worker thread under the server's limiter for blocking
    work, so it never stalls sessions. A pass that fails is logged and the loop goes
    on; a pass in progress when the shutdown begins is finished, not torn off (its
    thread is never abandoned, like every disk operation here). Without a loaded
    ``mail.cfg`` (``state.config`` is not a :class:`Config`) passes are skipped.
    """
    log = SessionLog(logging.getLogger(_LOGGER), task="housekeeping")
    task_status.started()
    while not state.shutdown.requested:
        config = state.config
        if isinstance(config, Config):
            try:
                await anyio.to_thread.run_sync(
                    functools.partial(
                        housekeep, config, clock=clock, tmp_max_age=tmp_max_age, log=log
                    ),
                    limiter=state.limiter(),
                )
            except Exception as exc:  # noqa: BLE001 - the next pass may well succeed
                log.error("housekeeping_failed", error=f"{type(exc).__name__}: {exc}")
                logging.getLogger(_LOGGER).debug("housekeeping pass failed", exc_info=True)
        with anyio.move_on_after(interval):
            await state.shutdown.wait()
