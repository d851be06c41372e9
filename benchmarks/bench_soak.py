"""A long soak of ``nosend serve`` under mixed load: does it leak, and does it lose mail?

For ``--seconds`` (default 600) one server takes, all at once:

- Postfix's ``smtp-source``, again and again (batches of 40 messages of 2 KB on 4
  parallel sessions, a second apart) into the mailbox ``source``: a batch whose
  ``smtp-source`` exits 0 had every message acknowledged (it stops at the first refusal);
- two smtplib senders, several messages per session, each message with a unique
  ``Message-ID`` and marker line, into ``soak`` and the POP3 mailboxes ``pop1..pop3``;
  a marker counts as acknowledged only after its 250 reply;
- three poplib clients, one per mailbox (a second login to a mailbox is refused by
  design): log in, RETR every message, DELE it, QUIT; what they retrieved counts as
  retrieved-and-deleted only once QUIT answered +OK (before that nothing is deleted);
- ``--idle`` (500) idle connections, half SMTP and half POP3, each having read its
  greeting; one the server closes (its idle timeout) is opened again;
- hostile clients from other loopback addresses (so the per-address login lockout they
  earn does not touch the honest clients on 127.0.0.1): a slow drip of a command a byte
  at a time, a 100 KB line without an end on SMTP and POP3, bad POP3 passwords, garbage
  bytes, and a sender that drops the connection in the middle of DATA;
- a configuration reload every ``--reload-every`` seconds: ``mail.cfg`` is rewritten
  with one more alias and the server's own pid gets SIGHUP.

The server's ``mail.cfg`` allows 1100 connections in all and 1100 per address (the idle
connections and the honest clients all come from 127.0.0.1); everything else is at its
defaults (SMTP idle timeout 300 s, POP3 600 s). The benchmark raises its own open-file
limit to the hard limit, which ``nosend serve`` inherits.

Every ``--interval`` seconds (5) it samples the server's RSS (VmRSS), open descriptors
(/proc/PID/fd) and threads, and prints them at the end as a table and as an ASCII plot.
After the load stops, the server is stopped and every Maildir is read: each acknowledged
marker must be found exactly once, in a Maildir or among the retrieved-and-deleted ones;
``source`` must hold exactly the acknowledged ``smtp-source`` messages, each with its own
queue id. The last two lines are ``rss_growth_mb=<growth after the warm-up>`` (the lowest
RSS of the last quarter of the run minus the lowest of the first quarter after the
warm-up: see ``rss_growth``) and ``lost_messages=<n>``. Targets: growth under 5 MB,
nothing lost.

    python benchmarks/bench_soak.py [--seconds 600] [--idle 500] [--interval 5]
                                    [--warmup SECONDS] [--reload-every 20] [--dir PATH]
                                    [--backend asyncio|trio]

Needs ``smtp-source`` (Debian package postfix).
"""

from __future__ import annotations

import argparse
import collections
import os
import poplib
import random
import re
import resource
import selectors
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import DOMAIN, free_port, tool  # noqa: E402
from nosend_store.passwords import hash_password  # noqa: E402

PASSWORD = "soak-Secret-1"
POP_BOXES = ("pop1", "pop2", "pop3")
MAILBOXES = ("source", "soak", "victim", *POP_BOXES)
MARKER = re.compile(rb"X-Soak-Marker: (soak-\d+-\d+)")
QUEUE_ID = re.compile(rb"\bid ([^\s;]+)")
SMTP_SOURCE_BATCH = 40


# ---------------------------------------------------------------------------------------
# The server


@dataclass
class SoakServer:
    """``nosend serve`` on two free ports with a ``mail.cfg`` the soak rewrites."""

    root: Path
    backend: str
    smtp_port: int = field(default_factory=free_port)
    pop3_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    reloads: int = 0
    _hashes: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "mail.cfg"

    @property
    def log_path(self) -> Path:
        return self.root / "nosend.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def maildir(self, mailbox: str) -> Path:
        return self.root / "data" / "mail" / mailbox

    def write_config(self) -> None:
        if not self._hashes:
            self._hashes = {name: hash_password(PASSWORD) for name in MAILBOXES}
        lines = [
            "[server]",
            "hostname = mx.nosend.test",
            f"data_dir = {self.root / 'data'}",
            f"smtp_listen = 127.0.0.1:{self.smtp_port}",
            "submission_listen =",
            f"pop3_listen = 127.0.0.1:{self.pop3_port}",
            "lan_plaintext_auth = yes",
            "max_connections = 1100",
            "max_connections_per_ip = 1100",
            "log_level = info",
            "",
            "[domains]",
            DOMAIN,
        ]
        for name in MAILBOXES:
            lines += ["", f"[mailbox {name}]", f"password = {self._hashes[name]}"]
        # One more alias per reload, so every reload really changes the configuration.
        lines += ["", "[aliases]"]
        lines += [f"reload{n}@{DOMAIN} = soak" for n in range(self.reloads + 1)]
        tmp = self.config_path.with_suffix(".new")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o600)
        os.replace(tmp, self.config_path)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nosend", "serve", "--config", str(self.config_path),
                 "--backend", self.backend],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.root,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "listening" in self.log_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        sys.exit(f"bench_soak: nosend serve did not start:\n{self.log_text()[-3000:]}")

    def reload(self) -> None:
        self.reloads += 1
        self.write_config()
        os.kill(self.pid, signal.SIGHUP)

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        return proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------
# What the clients saw


@dataclass
class Ledger:
    """Client-side bookkeeping, shared by the worker threads (under one lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: set[str] = field(default_factory=set)
    # marker -> how many times a committed POP3 session (QUIT +OK) deleted it
    deleted: collections.Counter[str] = field(default_factory=collections.Counter)
    source_acked: int = 0
    source_failed_batches: int = 0
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n

    def error(self, what: str) -> None:
        with self.lock:
            self.counts["client_errors"] += 1
            if len(self.errors) < 20:
                self.errors.append(what)


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the server process."""

    t: float
    rss_mb: float
    fds: int
    threads: int
    acked: int
    idle_open: int


def proc_sample(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, open descriptors, threads) of ``pid`` from /proc."""
    rss_kb = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads


# ---------------------------------------------------------------------------------------
# Workers (each loops until ``stop`` is set)


def run_smtp_source(server: SoakServer, ledger: Ledger, stop: threading.Event) -> None:
    """``smtp-source`` batches into ``source``; exit 0 means every message got its 250."""
    cmd = [
        tool("smtp-source"), "-s", "4", "-l", "2048", "-m", str(SMTP_SOURCE_BATCH),
        "-f", "source@client.test", "-t", f"source@{DOMAIN}", "-M", "client.test",
        f"127.0.0.1:{server.smtp_port}",
    ]  # fmt: skip
    while not stop.is_set():
        result = subprocess.run(cmd, capture_output=True, timeout=300)
        with ledger.lock:
            if result.returncode == 0:
                ledger.source_acked += SMTP_SOURCE_BATCH
            else:
                ledger.source_failed_batches += 1
        if result.returncode != 0:
            ledger.error(f"smtp-source: {result.stderr.decode(errors='replace')[:200]}")
        # A pause between batches: a mix of loads, not a throughput run (bench_server.py).
        stop.wait(1.0)


def run_sender(
    server: SoakServer,
    ledger: Ledger,
    stop: threading.Event,
    number: int,
    next_id: Callable[[], str],
) -> None:
    """smtplib sessions of 1-5 messages, each with a unique marker; ``soak`` or a POP box."""
    rng = random.Random(number)
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as smtp:
                smtp.ehlo("sender.client.test")
                for _ in range(rng.randint(1, 5)):
                    marker = next_id()
                    box = rng.choice(("soak", *POP_BOXES))
                    size = rng.choice((200, 2000, 2000, 20000, 20000, 200000))
                    body = (
                        f"From: sender{number}@client.test\r\nTo: {box}@{DOMAIN}\r\n"
                        f"Message-ID: <{marker}@client.test>\r\nSubject: soak\r\n"
                        f"X-Soak-Marker: {marker}\r\n\r\n"
                    ).encode() + (b"soak line .\r\n..dots\r\n" * (size // 22))
                    smtp.sendmail(f"sender{number}@client.test", [f"{box}@{DOMAIN}"], body)
                    with ledger.lock:
                        ledger.acked.add(marker)
                        ledger.counts["smtplib_acked"] += 1
        except (OSError, smtplib.SMTPException) as exc:
            ledger.error(f"sender {number}: {exc!r}")
            stop.wait(0.5)
        stop.wait(rng.uniform(0.05, 0.3))


def run_pop3(server: SoakServer, ledger: Ledger, stop: threading.Event, box: str) -> None:
    """Retrieve and delete everything in ``box``; record markers once QUIT said +OK."""
    while not stop.is_set():
        retrieved: list[str] = []
        try:
            pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=60)
            try:
                pop.user(box)
                pop.pass_(PASSWORD)
                count, _size = pop.stat()
                for number in range(1, count + 1):
                    _resp, lines, _octets = pop.retr(number)
                    found = MARKER.search(b"\r\n".join(lines))
                    if found is None:
                        ledger.error(f"pop3 {box}: message {number} without a marker")
                        continue
                    retrieved.append(found.group(1).decode())
                    pop.dele(number)
                pop.quit()  # raises unless +OK: then nothing was deleted
            except BaseException:
                pop.close()
                raise
            with ledger.lock:
                ledger.deleted.update(retrieved)
                ledger.counts["pop3_sessions"] += 1
        except (OSError, poplib.error_proto) as exc:
            ledger.error(f"pop3 {box}: {exc!r}")
        stop.wait(random.uniform(0.5, 2.0))


def run_idle(
    server: SoakServer, ledger: Ledger, stop: threading.Event, wanted: int, gauge: list[int]
) -> None:
    """Keep ``wanted`` idle connections open (half SMTP, half POP3); reopen closed ones."""
    sel = selectors.DefaultSelector()
    ports = (server.smtp_port, server.pop3_port)

    def open_one(port: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            greeting = sock.recv(512)
        except OSError as exc:
            ledger.error(f"idle connect: {exc!r}")
            return
        if not greeting.startswith((b"220", b"+OK")):
            ledger.error(f"idle greeting: {greeting[:80]!r}")
            sock.close()
            return
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, port)
        ledger.count("idle_opened")

    try:
        while not stop.is_set():
            while len(sel.get_map()) < wanted and not stop.is_set():
                open_one(ports[len(sel.get_map()) % 2])
            gauge[0] = len(sel.get_map())
            for key, _ in sel.select(timeout=1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # closed by the server (idle timeout) or after a 421
                    sel.unregister(sock)
                    sock.close()
                    ledger.count("idle_closed_by_server")
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        sel.close()


def _hostile_socket(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(15)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _drain(sock: socket.socket, seconds: float) -> bytes:
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not data:
            break
        got += data
    return got


def run_hostile(
    server: SoakServer, ledger: Ledger, stop: threading.Event, next_id: Callable[[], str]
) -> None:
    """One hostile client after another, from 127.0.0.10-250 (not the honest clients')."""
    rng = random.Random(7)
    kinds = ("drip", "long_smtp", "long_pop3", "bad_login", "garbage", "abort_data")
    while not stop.is_set():
        kind = rng.choice(kinds)
        source = f"127.0.0.{rng.randint(10, 250)}"
        try:
            if kind == "drip":
                with _hostile_socket(server.smtp_port, source) as sock:
                    sock.recv(512)
                    for byte in b"EHLO drip.client.test\r\nMAIL FROM:<drip@client.test>\r\n":
                        if stop.is_set():
                            break
                        sock.sendall(bytes([byte]))
                        time.sleep(0.1)
                    sock.sendall(b"QUIT\r\n")
                    _drain(sock, 2)
            elif kind in ("long_smtp", "long_pop3"):
                port = server.smtp_port if kind == "long_smtp" else server.pop3_port
                with _hostile_socket(port, source) as sock:
                    sock.recv(512)
                    try:
                        sock.sendall(b"NOOP " + b"x" * 100_000)
                        sock.sendall(b"\r\nQUIT\r\n")
                    except OSError:
                        pass  # the server may close on an overlong line: that is fine
                    _drain(sock, 2)
            elif kind == "bad_login":
                with _hostile_socket(server.pop3_port, source) as sock:
                    sock.recv(512)
                    sock.sendall(b"USER victim\r\nPASS wrong-password\r\nQUIT\r\n")
                    _drain(sock, 10)  # the server delays after a failure
            elif kind == "garbage":
                with _hostile_socket(rng.choice((server.smtp_port, server.pop3_port)), source) as s:
                    s.recv(512)
                    s.sendall(bytes(rng.randrange(256) for _ in range(rng.randint(1, 3000))))
                    _drain(s, 1)
            else:  # abort_data: the marker is never acknowledged, so must not be counted
                marker = next_id()
                with _hostile_socket(server.smtp_port, source) as sock:
                    sock.recv(512)
                    sock.sendall(
                        b"EHLO abort.client.test\r\nMAIL FROM:<a@client.test>\r\n"
                        + f"RCPT TO:<soak@{DOMAIN}>\r\nDATA\r\n".encode()
                    )
                    _drain(sock, 0.5)
                    sock.sendall(f"X-Soak-Marker: {marker}\r\n\r\nhalf a body\r\n".encode())
                # closed without the final dot
            ledger.count(f"hostile_{kind}")
        except OSError as exc:
            ledger.count(f"hostile_{kind}_refused")
            if not isinstance(exc, ConnectionError | TimeoutError):
                ledger.error(f"hostile {kind}: {exc!r}")
        stop.wait(rng.uniform(0.05, 0.5))


# ---------------------------------------------------------------------------------------
# The end: what is where


def read_maildir(maildir: Path) -> list[bytes]:
    out = []
    for sub in ("new", "cur"):
        directory = maildir / sub
        if directory.is_dir():
            out += [p.read_bytes() for p in directory.iterdir() if p.is_file()]
    return out


@dataclass
class Verdict:
    lost: int
    duplicated: int
    unacknowledged_stored: int
    source_count: int
    source_ids_unique: bool
    lines: list[str]


def check_mail(server: SoakServer, ledger: Ledger) -> Verdict:
    """Every acknowledged marker exactly once: in a Maildir or retrieved-and-deleted."""
    found: collections.Counter[str] = collections.Counter()
    for box in ("soak", *POP_BOXES):
        for message in read_maildir(server.maildir(box)):
            match = MARKER.search(message)
            if match is None:
                found["<no marker>"] += 1
            else:
                found[match.group(1).decode()] += 1
    total = found + ledger.deleted
    lost = sorted(m for m in ledger.acked if total[m] == 0)
    duplicated = sorted(m for m in ledger.acked if total[m] > 1)
    unacked = sorted(m for m in total if m not in ledger.acked)
    source = read_maildir(server.maildir("source"))
    ids = [m.group(1) for msg in source if (m := QUEUE_ID.search(msg[:600])) is not None]
    source_lost = max(0, ledger.source_acked - len(source))
    lines = [
        f"acknowledged (smtplib, unique markers): {len(ledger.acked)}",
        f"  still in a Maildir: {sum(found[m] for m in ledger.acked)}",
        f"  retrieved and deleted over POP3: {sum(ledger.deleted[m] for m in ledger.acked)}",
        f"  lost: {len(lost)} {lost[:5]}",
        f"  more than once: {len(duplicated)} {duplicated[:5]}",
        f"  stored but never acknowledged: {len(unacked)} {unacked[:5]}",
        f"acknowledged by smtp-source: {ledger.source_acked} "
        f"(failed batches: {ledger.source_failed_batches}); in Maildir source: {len(source)}, "
        f"distinct queue ids: {len(set(ids))}",
    ]
    # A failed smtp-source batch may have had some of its messages acknowledged, so the
    # Maildir may hold up to a batch more per failure; never fewer than acknowledged.
    source_dupes = len(ids) - len(set(ids)) + (len(source) - len(ids))
    return Verdict(
        lost=len(lost) + source_lost,
        duplicated=len(duplicated) + source_dupes,
        unacknowledged_stored=len(unacked),
        source_count=len(source),
        source_ids_unique=source_dupes == 0,
        lines=lines,
    )


def rss_growth(samples: list[Sample], warmup: float) -> tuple[float, float]:
    """(floor growth, mean growth) in MiB over the loaded samples after the warm-up.

    The floor growth is the lowest RSS of the last quarter minus the lowest of the first
    quarter. RSS under this load moves up and down in steps of exactly 16 MiB: each
    password check (scrypt, N=2**14, r=8) takes a 16 MiB buffer, and once glibc's dynamic
    mmap threshold has risen past that size it keeps freed buffers in the worker
    thread's malloc arena instead of unmapping them. A leak raises the floor; a buffer
    kept at the last sample does not. With ``MALLOC_MMAP_THRESHOLD_=1048576`` in the
    environment (passed on to the server) the steps are gone. The mean growth (last three
    samples minus the first after the warm-up) is printed too, for comparison.
    """
    after = [s for s in samples if s.t >= warmup] or samples
    quarter = max(1, len(after) // 4)
    floor = min(s.rss_mb for s in after[-quarter:]) - min(s.rss_mb for s in after[:quarter])
    tail = after[-3:]
    mean = sum(s.rss_mb for s in tail) / len(tail) - after[0].rss_mb
    return floor, mean


def ascii_plot(samples: list[Sample], height: int = 12, width: int = 64) -> list[str]:
    """RSS over time, one column per time slot (the highest sample in it)."""
    if not samples:
        return []
    t_end = max(s.t for s in samples) or 1.0
    columns: list[float | None] = [None] * width
    for s in samples:
        col = min(width - 1, int(s.t / t_end * (width - 1)))
        columns[col] = max(columns[col] or 0.0, s.rss_mb)
    lo = min(s.rss_mb for s in samples)
    hi = max(s.rss_mb for s in samples)
    span = max(hi - lo, 0.5)
    rows = []
    for row in range(height, -1, -1):
        level = lo + span * row / height
        cells = "".join(
            "*" if c is not None and round((c - lo) / span * height) == row else " "
            for c in columns
        )
        rows.append(f"{level:8.1f} |{cells}")
    rows.append(" " * 9 + "+" + "-" * width)
    rows.append(" " * 10 + f"0 s{'':{width - 12}}{t_end:6.0f} s")
    return ["RSS (MiB) over time:", *rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the load")
    parser.add_argument("--idle", type=int, default=500, help="idle connections held")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, help="seconds (default: 20%% of the run, <= 60)")
    parser.add_argument("--reload-every", type=float, default=20.0, help="seconds per SIGHUP")
    parser.add_argument(
        "--dir", help="work under this folder and keep it (default: a temporary one, removed)"
    )
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else min(60.0, args.seconds * 0.2)

    # 500 idle connections plus the clients, in this process and in the server.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="nosend-soak-"))
    server = SoakServer(root / "server", args.backend)
    server.start()
    ledger = Ledger()
    stop = threading.Event()
    serial = iter(range(10**9))
    serial_lock = threading.Lock()

    def next_id() -> str:
        with serial_lock:
            return f"soak-{os.getpid()}-{next(serial)}"

    idle_gauge = [0]
    workers = [
        threading.Thread(target=run_smtp_source, args=(server, ledger, stop)),
        *(
            threading.Thread(target=run_sender, args=(server, ledger, stop, n, next_id))
            for n in range(2)
        ),
        *(threading.Thread(target=run_pop3, args=(server, ledger, stop, b)) for b in POP_BOXES),
        threading.Thread(target=run_idle, args=(server, ledger, stop, args.idle, idle_gauge)),
        threading.Thread(target=run_hostile, args=(server, ledger, stop, next_id)),
    ]
    print(
        f"soak: nosend serve pid {server.pid} ({args.backend}) for {args.seconds:.0f} s, "
        f"{args.idle} idle connections, warm-up {warmup:.0f} s, under {root}",
        flush=True,
    )
    for worker in workers:
        worker.daemon = True
        worker.start()

    samples: list[Sample] = []
    start = time.monotonic()
    next_reload = start + args.reload_every
    try:
        while (now := time.monotonic()) - start < args.seconds:
            if server.proc is not None and server.proc.poll() is not None:
                print(f"soak: the server exited with {server.proc.returncode}", flush=True)
                break
            rss, fds, threads = proc_sample(server.pid)
            with ledger.lock:
                acked = len(ledger.acked) + ledger.source_acked
            samples.append(Sample(now - start, rss, fds, threads, acked, idle_gauge[0]))
            if now >= next_reload:
                server.reload()
                next_reload += args.reload_every
            time.sleep(max(0.0, args.interval - (time.monotonic() - now)))
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=330)
    loaded = list(samples)
    if server.proc is not None and server.proc.poll() is None:
        # One more look once every client is gone: descriptors must be back to the start.
        rss, fds, threads = proc_sample(server.pid)
        with ledger.lock:
            acked = len(ledger.acked) + ledger.source_acked
        samples.append(Sample(time.monotonic() - start, rss, fds, threads, acked, 0))
    # The last SIGHUP may still be in hand: give the server a moment to log it.
    deadline = time.monotonic() + 10
    while server.log_text().count("configuration reloaded") < server.reloads:
        if time.monotonic() > deadline or server.proc is None or server.proc.poll() is not None:
            break
        time.sleep(0.1)
    exit_code = server.stop()
    log = server.log_text()
    verdict = check_mail(server, ledger)

    print(f"{'t (s)':>7} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'acked':>7} {'idle':>5}")
    for s in samples:
        print(f"{s.t:7.0f} {s.rss_mb:8.1f} {s.fds:5d} {s.threads:7d} {s.acked:7d} {s.idle_open:5d}")
    for line in ascii_plot(samples):
        print(line)
    growth, growth_mean = rss_growth(loaded, warmup)
    for what, n in sorted(ledger.counts.items()):
        print(f"{what}: {n}")
    for what in ledger.errors:
        print(f"client error: {what}")
    for line in verdict.lines:
        print(line)
    crashes = len(re.findall(r"session_crashed|Traceback", log))
    print(f"reloads: {server.reloads} sent, {log.count('configuration reloaded')} logged")
    print(f"server exit code: {exit_code}; crash lines in its log: {crashes}")
    print(f"fds: {samples[0].fds} at the start, {samples[-1].fds} after the load")
    print(f"rss_growth_mean_mb={growth_mean:.1f} (last 3 samples - first after warm-up)")
    print(f"peak_rss_mb={max(s.rss_mb for s in samples):.1f}")
    print(f"peak_fds={max(s.fds for s in samples)}")
    print(f"duplicated_messages={verdict.duplicated}")
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    print(f"rss_growth_mb={growth:.1f}")
    print(f"lost_messages={verdict.lost}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
