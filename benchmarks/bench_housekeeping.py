"""Housekeeping figures: what one pass costs on a large queue and many mailboxes.

Run: python benchmarks/bench_housekeeping.py [--queued N] [--mailboxes M]
Prints one line per figure and ends with ``housekeeping_idle_ms=<number>``.

The idle pass is what ``nosend serve`` pays every 5 minutes when nothing is due: it reads
every queued entry's envelope and lists every mailbox's ``tmp/``. The expiring pass
gives up on every entry and writes one durable RFC 3464 report per entry into a local
Maildir (fsync-bound: compare with ``bench_store.py`` on the same disk).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from nosend_runners.mail.housekeeping import housekeep
from nosend_store.config import parse_config
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import Envelope, OutboundQueue

HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"
DAY = 86400.0
MESSAGE = b"From: m0@example.org\r\nSubject: bench\r\n\r\n" + b"x" * 2000 + b"\r\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queued", type=int, default=2000)
    parser.add_argument("--mailboxes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        data = Path(tmp) / "data"
        text = f"[server]\nhostname = mail.example.org\ndata_dir = {data}\n"
        text += "[domains]\nexample.org\n"
        text += "".join(f"[mailbox m{i}]\npassword = {HASH}\n" for i in range(args.mailboxes))
        config = parse_config(text, Path(tmp) / "mail.cfg")
        for i in range(args.mailboxes):
            MaildirMailbox(config.maildir_path(f"m{i}"))
        t0 = time.time()
        queue = OutboundQueue(config.server.queue_dir, clock=lambda: t0)
        for i in range(args.queued):
            sender = f"m{i % args.mailboxes}@example.org"
            queue.enqueue(Envelope.simple(sender, [f"r{i}@remote.example"]), [MESSAGE])

        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            summary = housekeep(config, clock=lambda: t0 + 60)
            best = min(best, time.perf_counter() - start)
            assert summary.idle
        print(f"idle pass, {args.queued} queued, {args.mailboxes} mailboxes: {best * 1000:.1f} ms")

        start = time.perf_counter()
        summary = housekeep(config, clock=lambda: t0 + 6 * DAY)
        took = time.perf_counter() - start
        assert summary.expired == summary.notified == args.queued, summary
        print(
            f"expiring pass: {summary.expired} expired + reported in {took:.2f} s "
            f"({summary.expired / took:,.0f} entries/s)"
        )
        print(f"housekeeping_idle_ms={best * 1000:.1f}")


if __name__ == "__main__":
    main()
