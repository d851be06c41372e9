"""Durable Maildir deliveries per second versus the disk's bare ceiling.

Two loops, measured in the same run, in sibling folders of one temporary directory (so
on the same filesystem), with 2 KB messages:

- ceiling: create a file in tmp/, write 2 KB, fsync it, rename it into new/, fsync new/
  — the least any durable Maildir delivery must do, in a bare loop;
- nosend: ``MaildirMailbox.deliver`` of the same message received with CRLF line ends
  (line-end normalisation, wire size, unique name, the same fsyncs and rename).

The two alternate delivery by delivery (the order flips each time), so bursts of
foreign disk traffic and journal commits fall on both alike; each is timed alone.
Deliveries/s are count / summed time; per-delivery medians are printed too. Last line:
``delivery_vs_ceiling=<ratio>`` (target: at least 0.8).

    python benchmarks/bench_store.py [--count N] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from nosend_store._durable import fsync_dir
from nosend_store.maildir import MaildirMailbox

LINE = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"  # 74


def make_message(size: int = 2048) -> list[bytes]:
    """A ``size``-octet message with CRLF line ends, as SMTP DATA delivers it."""
    head = b"From: bench@yacht\r\nTo: crew@yacht\r\nSubject: benchmark\r\n\r\n"
    body = LINE * ((size - len(head)) // len(LINE))
    pad = size - len(head) - len(body)
    return [head, body + b"x" * max(pad - 2, 0) + b"\r\n"]


def bare_delivery(tmp: str, new: str, name: str, payload: bytes) -> float:
    start = time.perf_counter()
    fd = os.open(f"{tmp}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, payload)
    os.fsync(fd)
    os.close(fd)
    os.rename(f"{tmp}/{name}", f"{new}/{name}")
    fsync_dir(new)
    return time.perf_counter() - start


def nosend_delivery(mb: MaildirMailbox, message: list[bytes]) -> float:
    start = time.perf_counter()
    mb.deliver(message)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=3000, help="deliveries per loop")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = ap.parse_args()

    base = tempfile.mkdtemp(prefix="nosend-bench-", dir=args.dir)
    try:
        message = make_message()
        payload = b"".join(message).replace(b"\r\n", b"\n")  # what lands on disk
        raw = os.path.join(base, "ceiling")
        tmp, new = os.path.join(raw, "tmp"), os.path.join(raw, "new")
        os.makedirs(tmp)
        os.makedirs(new)
        mb = MaildirMailbox(os.path.join(base, "nosend"))
        # Warm-up outside the measurement: first files, directory blocks, imports.
        for i in range(20):
            bare_delivery(tmp, new, f"w{i}", payload)
            mb.deliver(message)
        t_bare: list[float] = []
        t_nosend: list[float] = []
        for i in range(args.count):
            if i % 2:
                t_nosend.append(nosend_delivery(mb, message))
                t_bare.append(bare_delivery(tmp, new, f"c{i}", payload))
            else:
                t_bare.append(bare_delivery(tmp, new, f"c{i}", payload))
                t_nosend.append(nosend_delivery(mb, message))
        assert len(mb.list_messages()) == args.count + 20
        rate_bare = args.count / sum(t_bare)
        rate_nosend = args.count / sum(t_nosend)
        print(f"folder: {base} (both loops on this filesystem)")
        print(f"message: {len(b''.join(message))} octets; {args.count} deliveries per loop")
        print(
            f"ceiling (create/write/fsync/rename/dir fsync): {rate_bare:7.0f} /s"
            f"   median {statistics.median(t_bare) * 1e6:6.0f} us"
        )
        print(
            f"nosend MaildirMailbox.deliver (durable):        {rate_nosend:7.0f} /s"
            f"   median {statistics.median(t_nosend) * 1e6:6.0f} us"
        )
        print(f"delivery_vs_ceiling={rate_nosend / rate_bare:.3f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
