"""The whole server against what users would run instead, in the same run.

- SMTP deliveries/s: Postfix's ``smtp-source`` (one SMTP session per message; 1 and 20
  sessions in parallel; 2 KB and 100 KB bodies) against ``nosend serve`` and against
  aiosmtpd with a handler that delivers durably into a Maildir
  (``_aiosmtpd_maildir.py``). Both fsync every message before answering 250. The two
  servers alternate in rounds so disk noise hits both; every run is checked by counting
  the files that arrived. Besides the rate, the server's own CPU time per delivery
  (user + system, all threads, from /proc) is reported: on a shared machine it varies
  far less than the rate does.
- POP3 RETR MB/s: Dovecot and ``nosend serve`` serving the *same* Maildirs (filled by
  nosend's store), retrieved by a small raw-socket client (``_servers.pop3_retrieve_all``:
  RETR 1..N, no DELE) with 1 session and with 4 sessions on 4 mailboxes; a warm-up pass
  first so Dovecot has built its index. Timed from the first RETR to the last byte, so
  the login is left out: nosend checks a slow scrypt hash (about 50 ms on purpose), the
  Dovecot fixture a plain passwd file, and that difference is not RETR speed.
- RSS with 1000 idle SMTP connections (each read its greeting), for nosend and aiosmtpd,
  and with 1000 idle POP3 connections for nosend.
- RSS growth while accepting one 100 MB message sent with smtplib: peak VmHWM (reset
  with ``clear_refs``) minus VmRSS before, on a fresh process, for nosend and aiosmtpd.

Targets (issue 5): SMTP at least 1.5x aiosmtpd; POP3 at least 0.5x Dovecot; 1000 idle
connections under 100 MB; the 100 MB message under 30 MB of growth.

    python benchmarks/bench_server.py [--quick] [--rounds R] [--dir PATH]
                                      [--only smtp,pop3,idle,big] [--servers nosend,...]
                                      [--backend asyncio|trio] [--log-level info]
                                      [--settle SECONDS]

It first waits ``--settle`` seconds (35): on ext4 without a journal, as on the VMs this
was written on, every file created within 30 s of mass deletions (the previous run's
clean-up, a test suite) scans past the freed inodes of its block group, which added up
to a millisecond per message to whichever server created there first.

nosend runs with its default log level (info, one line per session event) unless told
otherwise; aiosmtpd and Dovecot log what they log by default.

Prints a table, then ``name=<number>`` summary lines; the last is
``targets_met=<0|1>``. Needs smtp-source (postfix), dovecot, aiosmtpd; runs in about
four minutes (``--quick``: about one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from _servers import (
    DOMAIN,
    Server,
    count_messages,
    cpu_seconds,
    make_maildir,
    nosend_maildir,
    open_idle,
    peak_mb,
    pop3_retrieve_all,
    reset_peak,
    rss_mb,
    send_big_message,
    smtp_source,
    start_aiosmtpd,
    start_dovecot,
    start_nosend,
)
from nosend_store.maildir import MaildirMailbox

MB = 1024 * 1024

# (sessions, body bytes, messages per round)
SMTP_CASES = [(1, 2048, 300), (20, 2048, 1000), (1, 102400, 200), (20, 102400, 500)]
#: Extra start_nosend() options from the command line (backend, log level).
NOSEND_OPTIONS: dict[str, str] = {}
POP3_USERS = {f"pop{i}": f"pop-pass-{i}" for i in range(1, 5)}


def disk_ceiling(root: Path, count: int = 200, size: int = 2048) -> float:
    """Bare durable writes/s on this filesystem (create, write, fsync, rename, fsync dir):
    what any server that fsyncs each message before its 250 can reach with one writer."""
    tmp, new = make_maildir(root / "ceiling") / "tmp", root / "ceiling" / "new"
    payload = b"x" * size
    start = time.perf_counter()
    for i in range(count):
        fd = os.open(tmp / f"m{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, payload)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp / f"m{i}", new / f"m{i}")
        dfd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
    return count / (time.perf_counter() - start)


def smtp_rounds(
    root: Path, servers: list[str], rounds: int, scale: float
) -> dict[tuple[int, int], dict[str, tuple[float, float]]]:
    """(deliveries/s, server CPU ms per delivery) per case and server, over all rounds.

    The CPU figure counts the server process alone (all its threads) and is much less
    sensitive than the rate to other work on the machine."""
    alice = {"alice": "alice-pass"}
    running: dict[str, tuple[Server, Path]] = {}
    if "nosend" in servers:
        srv = start_nosend(root / "nosend-smtp", alice, pop3=False, **NOSEND_OPTIONS)
        running["nosend"] = (srv, nosend_maildir(root / "nosend-smtp", "alice"))
    if "aiosmtpd" in servers:
        maildir = make_maildir(root / "aiosmtpd-smtp" / "Maildir")
        running["aiosmtpd"] = (start_aiosmtpd(root / "aiosmtpd-smtp", maildir), maildir)
    results: dict[tuple[int, int], dict[str, tuple[float, float]]] = {}
    try:
        for sessions, size, base_count in SMTP_CASES:
            count = max(sessions, int(base_count * scale))
            seconds: dict[str, float] = defaultdict(float)
            cpu: dict[str, float] = defaultdict(float)
            delivered: dict[str, int] = defaultdict(int)
            for r in range(rounds):
                order = list(running) if r % 2 == 0 else list(reversed(running))
                for name in order:
                    server, maildir = running[name]
                    before = count_messages(maildir) if maildir.exists() else 0
                    assert server.smtp_port is not None
                    cpu_before = cpu_seconds(server.pid)
                    seconds[name] += smtp_source(
                        server.smtp_port,
                        sessions=sessions,
                        size=size,
                        count=count,
                        to=f"alice@{DOMAIN}",
                    )
                    cpu[name] += cpu_seconds(server.pid) - cpu_before
                    arrived = count_messages(maildir) - before
                    if arrived != count:
                        raise RuntimeError(f"{name}: {arrived} of {count} messages arrived")
                    delivered[name] += arrived
            results[(sessions, size)] = {
                n: (delivered[n] / seconds[n], cpu[n] * 1000 / delivered[n]) for n in running
            }
            line = "  ".join(
                f"{n} {rate:8.1f}/s ({ms:.2f} ms CPU each)"
                for n, (rate, ms) in results[(sessions, size)].items()
            )
            print(f"  smtp {sessions:2d} session(s) {size // 1024:4d} KB: {line}", flush=True)
    finally:
        for server, _ in running.values():
            server.stop()
    return results


def fill_pop3_maildirs(mail_root: Path, messages: int, size: int) -> int:
    """Deliver ``messages`` messages of ``size`` bytes into each POP3 user's Maildir."""
    body_line = b"All work and no play makes Jack a dull boy. 0123456789 abcdefghij\n"
    head = b"From: bench@client.test\nTo: crew@nosend.test\nSubject: pop3 bench\n\n"
    body = body_line * ((size - len(head)) // len(body_line))
    total = 0
    for user in POP3_USERS:
        box = MaildirMailbox(str(mail_root / user))
        for i in range(messages):
            message = head + f"Message {i}\n".encode() + body
            box.deliver([message])
            total += len(message)
    return total


def parallel_retrieve(
    port: int, users: list[tuple[str, str]]
) -> tuple[float, list[tuple[int, int, float, float]]]:
    """Retrieve every user's mailbox at once, one thread per user; (seconds, results).

    The seconds span the RETR phase only: from the earliest first RETR to the latest
    last byte, so the logins (different password schemes per server) are left out.
    """
    outcome: list[tuple[int, int, float, float]] = []
    errors: list[BaseException] = []

    def fetch(user: str, password: str) -> None:
        try:
            outcome.append(pop3_retrieve_all(port, user, password))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=u) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors or len(outcome) != len(users):
        raise RuntimeError(f"POP3 retrieval on port {port} failed: {errors}")
    took = max(end for *_, end in outcome) - min(start for _, _, start, _ in outcome)
    return took, outcome


def pop3_rounds(
    root: Path, servers: list[str], rounds: int, scale: float
) -> dict[int, dict[str, float]]:
    """RETR MB/s with 1 and 4 parallel sessions, per server, on the same Maildirs."""
    nosend_root = root / "pop3"
    mail_root = nosend_root / "data" / "mail"
    count = max(10, int(300 * scale))
    fill_pop3_maildirs(mail_root, count, 100 * 1024)
    running: dict[str, Server] = {}
    results: dict[int, dict[str, float]] = {}
    try:
        if "nosend" in servers:
            running["nosend"] = start_nosend(nosend_root, POP3_USERS, smtp=False, **NOSEND_OPTIONS)
        if "dovecot" in servers:
            running["dovecot"] = start_dovecot(root / "dovecot", mail_root, POP3_USERS)
        for server in running.values():  # warm-up: index, page cache, first logins
            assert server.pop3_port is not None
            for user, password in POP3_USERS.items():
                n, *_ = pop3_retrieve_all(server.pop3_port, user, password)
                if n != count:
                    raise RuntimeError(f"{server.name}: {user} has {n} messages, not {count}")
        for parallel in (1, 4):
            users = list(POP3_USERS.items())[:parallel]
            wire: dict[str, int] = defaultdict(int)
            elapsed: dict[str, float] = defaultdict(float)
            for r in range(rounds):
                order = list(running) if r % 2 == 0 else list(reversed(running))
                for name in order:
                    port = running[name].pop3_port
                    assert port is not None
                    took, outcome = parallel_retrieve(port, users)
                    elapsed[name] += took
                    if any(n != count for n, *_ in outcome):
                        raise RuntimeError(f"{name}: wrong message count {outcome}")
                    wire[name] += sum(b for _, b, *_ in outcome)
            results[parallel] = {n: wire[n] / MB / elapsed[n] for n in running}
            line = "  ".join(f"{n} {v:8.1f} MB/s" for n, v in results[parallel].items())
            print(f"  pop3 RETR {parallel} session(s) x {count} x 100 KB: {line}", flush=True)
    finally:
        for server in running.values():
            server.stop()
    return results


def idle_rss(root: Path, servers: list[str], connections: int) -> dict[str, tuple[float, float]]:
    """(RSS before, RSS with ``connections`` idle connections) in MiB, per server and
    protocol: ``nosend`` and ``aiosmtpd`` on SMTP, ``nosend-pop3`` on POP3."""
    results: dict[str, tuple[float, float]] = {}
    cases = [(n, "smtp") for n in servers if n != "dovecot"]
    if "nosend" in servers:
        cases.append(("nosend", "pop3"))
    for name, protocol in cases:
        label = name if protocol == "smtp" else f"{name}-{protocol}"
        where = root / f"idle-{label}"
        if name == "nosend":
            server = start_nosend(
                where,
                {"alice": "alice-pass"},
                smtp=protocol == "smtp",
                pop3=protocol == "pop3",
                **NOSEND_OPTIONS,
            )
        else:
            server = start_aiosmtpd(where, make_maildir(where / "Maildir"))
        socks = []
        try:
            port = server.smtp_port if protocol == "smtp" else server.pop3_port
            assert port is not None
            time.sleep(0.3)
            before = rss_mb(server.pid)
            socks = list(open_idle(port, connections))
            time.sleep(1.0)
            alive = server.proc.poll() is None
            after = rss_mb(server.pid)
            if not alive:
                raise RuntimeError(f"{name} died with {connections} idle connections")
            results[label] = (before, after)
            print(
                f"  idle: {label} RSS {before:.1f} MB -> {after:.1f} MB with {len(socks)} "
                f"{protocol} connections ({(after - before) * 1024 / len(socks):.1f} KB each)",
                flush=True,
            )
        finally:
            for s in socks:
                s.close()
            server.stop()
    return results


def big_message_growth(root: Path, servers: list[str], size: int) -> dict[str, float]:
    """Peak RSS growth in MiB while accepting one ``size``-byte message, per server."""
    results: dict[str, float] = {}
    for name in servers:
        if name == "dovecot":
            continue
        where = root / f"big-{name}"
        if name == "nosend":
            server = start_nosend(where, {"alice": "alice-pass"}, pop3=False, **NOSEND_OPTIONS)
            maildir = nosend_maildir(where, "alice")
        else:
            maildir = make_maildir(where / "Maildir")
            server = start_aiosmtpd(where, maildir)
        try:
            assert server.smtp_port is not None
            send_big_message(server.smtp_port, 4096, f"alice@{DOMAIN}")  # warm-up
            time.sleep(0.3)
            before = rss_mb(server.pid)
            peak_reset = reset_peak(server.pid)
            seconds = send_big_message(server.smtp_port, size, f"alice@{DOMAIN}")
            peak = peak_mb(server.pid)
            if count_messages(maildir) != 2:
                raise RuntimeError(f"{name}: the big message did not arrive")
            biggest = max(
                os.path.getsize(os.path.join(maildir, sub, f))
                for sub in ("new", "cur")
                for f in os.listdir(maildir / sub)
            )
            results[name] = peak - before
            note = "" if peak_reset else " (VmHWM not reset: peak since start)"
            print(
                f"  big: {name} {size // MB} MB in {seconds:.1f}s ({biggest // MB} MB on disk), "
                f"RSS {before:.1f} MB, peak {peak:.1f} MB, growth {peak - before:.1f} MB{note}",
                flush=True,
            )
        finally:
            server.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", help="work under this folder (default: a temp folder)")
    parser.add_argument("--only", default="smtp,pop3,idle,big")
    parser.add_argument("--servers", default="nosend,aiosmtpd,dovecot")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections")
    parser.add_argument("--big", type=int, default=100, help="big message size in MB")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--log-level", default="info", help="nosend's log_level (default info)")
    parser.add_argument(
        "--settle",
        type=float,
        default=35.0,
        help="seconds to wait before measuring, so that inodes freed by an earlier run do "
        "not slow file creation (ext4 without a journal); 0 to skip (default 35)",
    )
    args = parser.parse_args()
    NOSEND_OPTIONS.update(backend=args.backend, log_level=args.log_level)
    only = set(args.only.split(","))
    servers = args.servers.split(",")
    rounds = 1 if args.quick else args.rounds
    scale = 0.25 if args.quick else 1.0
    root = Path(tempfile.mkdtemp(prefix="nosend-bench-server-", dir=args.dir))
    os.chmod(root, 0o755)
    print(f"folder: {root}; servers: {', '.join(servers)}; rounds: {rounds}", flush=True)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    if args.settle > 0:
        # On ext4 without a journal (this kind of VM) creating a file scans past every
        # inode freed in the last 30 s in its block group: right after a previous run or
        # a test suite deleted thousands of files, each create costs up to a millisecond
        # more, for whichever server happens to create there, and the comparison tilts.
        print(f"settling {args.settle:.0f}s (files freed by earlier runs, see --settle)")
        time.sleep(args.settle)
    started = time.monotonic()
    summary: dict[str, float] = {}
    met = True
    checked = 0  # targets actually measured: none measured is not "met"
    try:
        if "smtp" in only:
            ceiling = disk_ceiling(root)
            summary["disk_ceiling_2k_per_s"] = ceiling
            print(f"  disk ceiling, one writer, 2 KB: {ceiling:.1f}/s", flush=True)
            smtp = smtp_rounds(root, servers, rounds, scale)
            both = [v for v in smtp.values() if {"nosend", "aiosmtpd"} <= set(v)]
            ratios = [v["nosend"][0] / v["aiosmtpd"][0] for v in both]
            # Deliveries per server CPU second, nosend over aiosmtpd: the load-robust view.
            cpu_ratios = [v["aiosmtpd"][1] / v["nosend"][1] for v in both]
            for (sessions, size), v in smtp.items():
                for name, (rate, ms) in v.items():
                    summary[f"smtp_{name}_s{sessions}_{size // 1024}k_per_s"] = rate
                    summary[f"smtp_{name}_s{sessions}_{size // 1024}k_cpu_ms"] = ms
            if cpu_ratios:
                summary["smtp_cpu_efficiency_vs_aiosmtpd_min"] = min(cpu_ratios)
            if ratios:
                summary["smtp_vs_aiosmtpd_min"] = min(ratios)
                summary["smtp_vs_aiosmtpd_geomean"] = statistics.geometric_mean(ratios)
                met &= min(ratios) >= 1.5
                checked += 1
        if "pop3" in only:
            pop3 = pop3_rounds(root, servers, rounds, scale)
            ratios = [v["nosend"] / v["dovecot"] for v in pop3.values() if len(v) == 2]
            for parallel, v in pop3.items():
                for name, rate in v.items():
                    summary[f"pop3_{name}_s{parallel}_mb_per_s"] = rate
            if ratios:
                summary["pop3_vs_dovecot_min"] = min(ratios)
                met &= min(ratios) >= 0.5
                checked += 1
        if "idle" in only:
            for name, (_, after) in idle_rss(root, servers, args.idle).items():
                summary[f"idle_{args.idle}_rss_mb_{name}"] = after
                if name.startswith("nosend"):
                    met &= after < 100
                    checked += 1
        if "big" in only:
            for name, growth in big_message_growth(root, servers, args.big * MB).items():
                summary[f"big_{args.big}mb_growth_mb_{name}"] = growth
                if name == "nosend":
                    met &= growth < 30
                    checked += 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"total time: {time.monotonic() - started:.0f}s; load average at end: "
        f"{os.getloadavg()[0]:.2f}"
    )
    print()
    print("| measure | value |")
    print("| --- | --- |")
    for key, value in summary.items():
        print(f"| {key} | {value:.2f} |")
    print()
    for key, value in summary.items():
        print(f"{key}={value:.2f}")
    print(f"targets_checked={checked}")
    print(f"targets_met={int(met and checked > 0)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
