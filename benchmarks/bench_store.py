"""Durable Maildir deliveries per second versus the disk's bare ceiling, and the CPU
each delivery costs.

Three loops, measured in the same run, in sibling folders of one temporary directory (so
on the same filesystem), with 2 KB messages:

- ceiling: create a file in tmp/, write 2 KB, fsync it, rename it into new/, fsync new/
  — the least any durable Maildir delivery must do, in a bare loop;
- nosend: ``MaildirMailbox.deliver`` of the same message received with CRLF line ends
  (line-end normalisation, wire size, unique name, the same fsyncs and rename);
- sink: ``MessageSink(...).finish(body)`` for one local mailbox, what the SMTP session
  does once per message in a worker thread (Received: and Return-Path: added, header
  scanned, the same durable steps).

The loops alternate delivery by delivery (the order rotates each time), so bursts of
foreign disk traffic and journal commits fall on all alike; each is timed alone, in wall
time and in this thread's CPU time (user + system together). On a shared machine the
CPU figures vary far less than the rates; CPU over the ceiling is the Python cost of a
delivery. Deliveries/s are count / summed time; per-delivery
medians are printed too. Last line: ``delivery_vs_ceiling=<ratio>`` (MaildirMailbox
against the ceiling; target: at least 0.8).

    python benchmarks/bench_store.py [--count N] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nosend_runners.mail.delivery import MessageSink
from nosend_store._durable import fsync_dir
from nosend_store.config import Config, load_config
from nosend_store.maildir import MaildirMailbox

LINE = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"  # 74
TRACE = b"Received: from client.test ([127.0.0.1])\r\n\tby mx.bench.test with ESMTP id b1\r\n"
# Any well-formed hash: the benchmark never logs in.
HASH = (
    "{SCRYPT}$scrypt$ln=14,r=8,p=1$mS6KXOB1y6c5DpiLEvqr8A"
    "$bbIWS0hgKO7CpBjCB7ka4rEaj89EjPwnEvvPXTCgOZI"
)
_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


def make_message(size: int = 2048) -> list[bytes]:
    """A ``size``-octet message with CRLF line ends, as SMTP DATA delivers it."""
    head = b"From: bench@yacht\r\nTo: crew@yacht\r\nSubject: benchmark\r\n\r\n"
    body = LINE * ((size - len(head)) // len(LINE))
    pad = size - len(head) - len(body)
    return [head, body + b"x" * max(pad - 2, 0) + b"\r\n"]


def make_config(base: str) -> Config:
    path = Path(base, "mail.cfg")
    path.write_text(
        "[server]\nhostname = mx.bench.test\n"
        f"data_dir = {os.path.join(base, 'sink')}\n"
        "[domains]\nbench.test\n"
        f"[mailbox crew]\npassword = {HASH}\n"
    )
    return load_config(path)


class Loop:
    """Times one kind of delivery: wall time and this thread's CPU time (user + system,
    CLOCK_THREAD_CPUTIME_ID, exact to the nanosecond) per call; the split into user and
    system time comes from getrusage (tick-sampled per call, so only its mean is
    meaningful)."""

    def __init__(self, label: str, deliver: Callable[[], object]) -> None:
        self.label = label
        self.deliver = deliver
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.user = 0.0
        self.sys = 0.0

    def once(self) -> None:
        r0 = resource.getrusage(_THREAD)
        c0 = time.thread_time()
        start = time.perf_counter()
        self.deliver()
        self.wall.append(time.perf_counter() - start)
        self.cpu.append(time.thread_time() - c0)
        r1 = resource.getrusage(_THREAD)
        self.user += r1.ru_utime - r0.ru_utime
        self.sys += r1.ru_stime - r0.ru_stime

    def report(self) -> str:
        n = len(self.wall)
        return (
            f"{self.label:<48} {n / sum(self.wall):7.0f} /s"
            f"   median {statistics.median(self.wall) * 1e6:6.0f} us"
            f"   CPU median {statistics.median(self.cpu) * 1e6:4.0f} us"
            f" (mean user {self.user / n * 1e6:4.0f} + sys {self.sys / n * 1e6:4.0f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=3000, help="deliveries per loop")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = ap.parse_args()

    base = tempfile.mkdtemp(prefix="nosend-bench-", dir=args.dir)
    try:
        message = make_message()
        whole = b"".join(message)  # the SMTP session hands a small body over in one piece
        payload = whole.replace(b"\r\n", b"\n")  # what lands on disk
        raw = os.path.join(base, "ceiling")
        tmp, new = os.path.join(raw, "tmp"), os.path.join(raw, "new")
        os.makedirs(tmp)
        os.makedirs(new)
        mb = MaildirMailbox(os.path.join(base, "nosend"))
        config = make_config(base)
        serial = iter(range(10**9))

        def bare() -> None:
            name = f"c{next(serial)}"
            fd = os.open(f"{tmp}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, payload)
            os.fsync(fd)
            os.close(fd)
            os.rename(f"{tmp}/{name}", f"{new}/{name}")
            fsync_dir(new)

        def sink() -> None:
            MessageSink(
                config,
                mailboxes=("crew",),
                envelope=None,
                trace=TRACE,
                return_path="bench@client.test",
                hostname="mx.bench.test",
            ).finish(whole)

        loops = [
            Loop("ceiling (create/write/fsync/rename/dir fsync):", bare),
            Loop("nosend MaildirMailbox.deliver (durable):", lambda: mb.deliver(message)),
            Loop("nosend MessageSink.finish (SMTP path, durable):", sink),
        ]
        # Warm-up outside the measurement: first files, directory blocks, imports, the
        # objects a running server keeps per configuration.
        for _ in range(20):
            for loop in loops:
                loop.deliver()
        for i in range(args.count):
            for k in range(len(loops)):
                loops[(i + k) % len(loops)].once()
        assert len(mb.list_messages()) == args.count + 20
        got = len(MaildirMailbox(config.maildir_path("crew"), create=False).list_messages())
        assert got == args.count + 20
        ceiling, nosend, via_sink = loops
        print(f"folder: {base} (all loops on this filesystem)")
        print(f"message: {len(whole)} octets; {args.count} deliveries per loop")
        for loop in loops:
            print(loop.report())
        cpu_bare = statistics.median(ceiling.cpu) * 1e6
        for loop in (nosend, via_sink):
            over = statistics.median(loop.cpu) * 1e6 - cpu_bare
            print(f"CPU over the ceiling, {loop.label.split(' (')[0]}: {over:.0f} us per message")
        print(f"sink_cpu_us={statistics.median(via_sink.cpu) * 1e6:.0f}")
        print(f"ceiling_cpu_us={cpu_bare:.0f}")
        rate_bare = len(ceiling.wall) / sum(ceiling.wall)
        rate_nosend = len(nosend.wall) / sum(nosend.wall)
        print(f"delivery_vs_ceiling={rate_nosend / rate_bare:.3f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
