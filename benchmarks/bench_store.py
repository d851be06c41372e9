"""Durable Maildir deliveries per second versus the disk's bare ceiling.

Both loops run in the same run, in sibling directories of one temporary folder (so on
the same filesystem), with 2 KB messages:

- ceiling: create a file in tmp/, write 2 KB, fsync, rename into new/, fsync new/ —
  the least any durable Maildir delivery must do;
- for information, the same bare loop with link + unlink instead of rename;
- nosend: ``MaildirMailbox.deliver`` (line-end normalisation, sizes, unique names,
  link + unlink, the same fsyncs).

The two are interleaved in rounds so that disk noise hits both alike; the ratio uses the
totals. Last line: ``delivery_vs_ceiling=<ratio>`` (target: at least 0.8).

    python benchmarks/bench_store.py [--count N] [--rounds R] [--dir PATH]
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
    head = b"From: bench@yacht\r\nTo: crew@yacht\r\nSubject: benchmark\r\n\r\n"
    body = LINE * ((size - len(head)) // len(LINE))
    pad = size - len(head) - len(body)
    return [head, body + b"x" * max(pad - 2, 0) + b"\r\n"]


def ceiling(root: str, count: int, payload: bytes) -> float:
    tmp, new = os.path.join(root, "tmp"), os.path.join(root, "new")
    start = time.perf_counter()
    for i in range(count):
        name = f"c{i}"
        fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, payload)
        os.fsync(fd)
        os.close(fd)
        os.rename(os.path.join(tmp, name), os.path.join(new, name))
        fsync_dir(new)
    return time.perf_counter() - start


def link_ceiling(root: str, count: int, payload: bytes) -> float:
    """The same bare loop with the Maildir specification's link + unlink instead of
    rename (what ``deliver`` does), to show what the method itself costs."""
    tmp, new = os.path.join(root, "tmp"), os.path.join(root, "new")
    start = time.perf_counter()
    for i in range(count):
        name = f"l{i}"
        fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, payload)
        os.fsync(fd)
        os.close(fd)
        os.link(os.path.join(tmp, name), os.path.join(new, name))
        fsync_dir(new)
        os.unlink(os.path.join(tmp, name))
    return time.perf_counter() - start


def nosend(mb: MaildirMailbox, count: int, message: list[bytes]) -> float:
    start = time.perf_counter()
    for _ in range(count):
        mb.deliver(message)
    return time.perf_counter() - start


def run_round(
    order: list[str],
    dirs: dict[str, str],
    mb: MaildirMailbox,
    count: int,
    message: list[bytes],
    payload: bytes,
) -> dict[str, float]:
    out = {}
    for name in order:
        if name == "ceiling":
            out[name] = ceiling(dirs[name], count, payload)
        elif name == "link":
            out[name] = link_ceiling(dirs[name], count, payload)
        else:
            out[name] = nosend(mb, count, message)
    return out


def empty(folder: str) -> None:
    for sub in ("tmp", "new", "cur"):
        d = os.path.join(folder, sub)
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=40, help="deliveries per loop and round")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = ap.parse_args()

    base = tempfile.mkdtemp(prefix="nosend-bench-", dir=args.dir)
    try:
        message = make_message()
        payload = b"".join(message).replace(b"\r\n", b"\n")
        dirs = {name: os.path.join(base, name) for name in ("ceiling", "link")}
        for d in dirs.values():
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(d, sub))
        mb = MaildirMailbox(os.path.join(base, "nosend"))
        names = ["ceiling", "nosend", "link"]
        totals = dict.fromkeys(names, 0.0)
        ratios = []
        for r in range(args.rounds):
            # Short rounds in rotating order: disk noise (other processes, journal
            # commits) falls on every loop alike.
            k = r % len(names)
            times = run_round(names[k:] + names[:k], dirs, mb, args.count, message, payload)
            for name, elapsed in times.items():
                totals[name] += elapsed
            ratios.append(times["ceiling"] / times["nosend"])
            for d in (*dirs.values(), mb.path):
                empty(d)
        total = args.count * args.rounds
        rate = {name: total / t for name, t in totals.items()}
        print(f"folder: {base} (all loops on this filesystem)")
        print(f"message size: {len(b''.join(message))} bytes; {args.rounds} rounds x {args.count}")
        print(f"ceiling (create/write/fsync/rename/dir fsync): {rate['ceiling']:.0f} /s")
        print(f"same bare loop with link+unlink (Maildir spec): {rate['link']:.0f} /s")
        print(f"nosend MaildirMailbox.deliver (durable):        {rate['nosend']:.0f} /s")
        print(f"median of per-round ratios: {statistics.median(ratios):.3f}")
        print(f"delivery_vs_ceiling={rate['nosend'] / rate['ceiling']:.3f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
