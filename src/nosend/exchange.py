"""``nosend exchange``: one cycle over the network as it is now -- no dialling.

Owns: the command's syntax, its live progress and its summary. The work is done by
:func:`nosend_link.exchange.exchange_accounts`, the sequence every cycle over a link
runs too: :func:`nosend_link.relay.relay_queue` (every smtp account: the outbound queue
to the smarthost) and then :func:`nosend_link.fetch.fetch_account` (every pop3 account:
remote mailboxes into local Maildirs); both report :mod:`nosend_link.transfer_events`, from
which the progress line and the message counts are drawn, and share one
:class:`~nosend_runners.client.connection.LinkMeter` for the link's bytes and round trips.

Must not: bring a link up or down (the link layer does), or show a secret.

Progress goes to standard error: one line redrawn in place on a terminal, plain log
lines otherwise (cron, a pipe). The summary goes to standard output. Exit status 0 only
when every account did its work; 1 otherwise (the summary names what failed).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from nosend.admin import UserError, _config_path, _guarded
from nosend_store.config import Account, Config, load_config

__all__ = ["register", "ProgressPrinter"]

_EPILOG = """\
examples:
  nosend exchange                     # send the queue, fetch every POP3 account
  nosend exchange --account upstream  # only the smarthost
"""


def register(subparsers: Any) -> None:
    """Add ``nosend exchange`` to the ``nosend`` parser."""
    help_text = "send the queue and fetch remote mail now, over the network as it is"
    p = subparsers.add_parser(
        "exchange", help=help_text,
        description=help_text + " (no link is dialled). Exit 0 only when every account "
        "did its work.", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                   help="mail.cfg to use")
    p.add_argument("--account", action="append", metavar="NAME", dest="accounts",
                   help="only this account (repeatable; default: all)")
    p.set_defaults(handler=_guarded(_exchange))


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


@dataclass
class _Tally:
    messages: int = 0
    bytes: int = 0


@dataclass
class ProgressPrinter:
    """Turns transfer events into a live line (terminal) or log lines, and counts the
    messages and message bytes moved each way."""

    stream: TextIO
    live: bool
    out: _Tally = field(default_factory=_Tally)
    inbound: _Tally = field(default_factory=_Tally)
    _total: dict[str, int] = field(default_factory=dict)
    _width: int = 0

    def _line(self, text: str) -> None:
        if self.live:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def __call__(self, event: object) -> None:
        """Take one transfer event (never raises)."""
        from nosend_link.transfer_events import (  # noqa: PLC0415
            BytesMoved,
            MessageDone,
            TransferFinished,
            TransferStarted,
        )

        try:
            if isinstance(event, TransferStarted):
                self._total[event.account] = event.messages
                verb = "sending" if event.direction == "out" else "fetching"
                self._line(f"{event.account}: {verb} {event.messages} message"
                           f"{'s' if event.messages != 1 else ''} "
                           f"({_size(event.total_bytes)})")
            elif isinstance(event, BytesMoved):
                if self.live:
                    share = (100 * event.done_bytes // event.message_bytes
                             if event.message_bytes else 100)
                    arrow = "out" if event.direction == "out" else "in"
                    self._line(f"{event.account} {arrow}: message {event.message}/"
                               f"{self._total.get(event.account, '?')} {min(share, 100)}% "
                               f"of {_size(event.message_bytes)}")
            elif isinstance(event, MessageDone):
                tally = self.out if event.direction == "out" else self.inbound
                if event.outcome in ("sent", "fetched"):
                    tally.messages += 1
                    tally.bytes += event.size
                self._line(f"{event.account}: message {event.message}/{event.of} "
                           f"{event.outcome} ({_size(event.size)})")
            elif isinstance(event, TransferFinished):
                self._line(f"{event.account}: {'done' if event.ok else 'stopped'}"
                           + (f": {event.error}" if event.error else ""))
                self._end_line()
        except Exception:  # noqa: BLE001 -- progress must never stop a transfer
            pass

    def close(self) -> None:
        """End a live line that is still open."""
        self._end_line()


def _pick(config: Config, names: list[str] | None) -> list[Account]:
    if names:
        unknown = [n for n in names if n not in config.accounts]
        if unknown:
            raise UserError(f"no account {unknown[0]!r}")
        chosen = [config.accounts[n] for n in dict.fromkeys(names)]
    else:
        chosen = list(config.accounts.values())
    if not chosen:
        raise UserError("no accounts in mail.cfg; add one with `nosend account add`")
    return chosen


def _exchange(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415 -- the other commands do not pay for the runners

    from nosend_link.exchange import exchange_accounts  # noqa: PLC0415
    from nosend_runners.client.connection import LinkMeter  # noqa: PLC0415

    config = load_config(_config_path(args))
    accounts = _pick(config, args.accounts)
    progress = ProgressPrinter(sys.stderr, live=sys.stderr.isatty())
    meter = LinkMeter()
    started = time.monotonic()
    try:
        summary = anyio.run(functools.partial(
            exchange_accounts, config, accounts, progress=progress, meter=meter))
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    out, inbound = progress.out, progress.inbound
    print(f"sent {out.messages} message{'s' if out.messages != 1 else ''} "
          f"({_size(out.bytes)}), received {inbound.messages} "
          f"message{'s' if inbound.messages != 1 else ''} ({_size(inbound.bytes)})")
    print(f"link: {_size(meter.bytes_sent)} up, {_size(meter.bytes_received)} down, "
          f"{meter.round_trips} round trip{'s' if meter.round_trips != 1 else ''}, "
          f"{elapsed:.1f} s")
    for outcome in summary.outcomes:
        print(f"{outcome.account}: {'ok' if outcome.ok else 'FAILED'}: {outcome.text}")
    return 0 if summary.ok else 1
