"""``nosend check`` end to end: a link whose ``up`` starts the shore (a second ``nosend
serve``) and whose ``down`` stops it; the cycle relays the boat's queue to it, fetches
a POP3 account from it and records what it moved and cost.

Also: a failing ``up`` falls back to the next link, a hanging one is cut at
``up_timeout``, a dropped link loses and duplicates nothing, ``down`` runs on SIGTERM and
after a kill -9 (by the next check), two checks never overlap, a dry run changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from nosend_store.passwords import encode_shared_secret
from nosend_store.queue import Envelope, OutboundQueue
from tests.interop.conftest import _hash
from tests.link.link_proxy import LinkProxy
from tests.link.link_scripts import alive, free_port, gone, read_pid

pytestmark = pytest.mark.interop

SHORE_UP = r"""
import os, socket, subprocess, sys, time
cfg, pidfile, log, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
open(log, "a").write("up\n")
out = open(pidfile + ".log", "ab")
proc = subprocess.Popen([sys.executable, "-m", "nosend", "serve", "--config", cfg],
                        stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                        start_new_session=True)
open(pidfile + ".tmp", "w").write(str(proc.pid))
os.rename(pidfile + ".tmp", pidfile)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        break
    except OSError:
        time.sleep(0.05)
"""

SHORE_DOWN = r"""
import os, signal, sys, time
pidfile, log = sys.argv[1], sys.argv[2]
open(log, "a").write("down\n")
if os.path.exists(pidfile):
    pid = int(open(pidfile).read())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.05)
    os.unlink(pidfile)
"""

HANG = "import time, sys; open(sys.argv[1], 'a').write('up\\n'); time.sleep(3600)\n"
FAIL = "import sys; open(sys.argv[1], 'a').write('up\\n'); print('NO CARRIER'); sys.exit(1)\n"
NOTE = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\n"


@dataclass
class Shore:
    root: Path
    config: Path
    smtp: int
    pop3: int

    def mailbox(self, name: str) -> list[bytes]:
        out = []
        for sub in ("new", "cur"):
            d = self.root / "data" / "mail" / name / sub
            if d.is_dir():
                out += [p.read_bytes() for p in sorted(d.iterdir())]
        return out

    def deliver(self, name: str, message: bytes) -> None:
        from nosend_store.maildir import MaildirMailbox

        MaildirMailbox(str(self.root / "data" / "mail" / name)).deliver([message])


def make_shore(root: Path) -> Shore:
    root.mkdir()
    smtp, pop3 = free_port(), free_port()
    lines = [
        "[server]", "hostname = mx.nosend.test", f"data_dir = {root / 'data'}",
        f"smtp_listen = 127.0.0.1:{smtp}", "submission_listen =", "smtps_listen =",
        f"pop3_listen = 127.0.0.1:{pop3}", "pop3s_listen =", "auth_requires_tls = no",
        "", "[domains]", "nosend.test", "",
        "[mailbox alice]", f"password = {_hash('alice-Secret-1')}", "",
        "[mailbox bob]", f"password = {_hash('bob-Secret-1')}", "",
    ]  # fmt: skip
    config = root / "mail.cfg"
    config.write_text("\n".join(lines))
    config.chmod(0o600)
    return Shore(root, config, smtp, pop3)


def script(path: Path, code: str, *args: object) -> str:
    """A mail.cfg command line running ``code`` (saved to ``path``) with ``args``."""
    path.write_text(code)
    return " ".join([sys.executable, str(path), *(str(a) for a in args)])


@dataclass
class Boat:
    root: Path
    shore: Shore
    links: str
    schedule: str = ""

    @property
    def config(self) -> Path:
        return self.root / "mail.cfg"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "link.log"

    @property
    def pidfile(self) -> Path:
        return self.root / "shore.pid"

    def write(self, smtp_port: int | None = None, pop3_port: int | None = None) -> None:
        lines = [
            "[server]", "hostname = boat.example", f"data_dir = {self.data}",
            *(f"{s}_listen =" for s in ("smtp", "submission", "smtps", "pop3", "pop3s")),
            "", "[domains]", "boat.example", "",
            "[mailbox skipper]", f"password = {_hash('skipper-Secret-1')}", "",
            "[mailbox mate]", f"password = {_hash('mate-Secret-1')}", "",
            "[account upstream]", "type = smtp", "host = 127.0.0.1",
            f"port = {smtp_port or self.shore.smtp}", "tls = none", "",
            "[account shore]", "type = pop3", "host = 127.0.0.1",
            f"port = {pop3_port or self.shore.pop3}", "tls = none", "user = alice",
            f"secret = {encode_shared_secret('alice-Secret-1')}", "deliver_to = mate", "",
            self.links, "", self.schedule, "",
        ]  # fmt: skip
        self.config.write_text("\n".join(lines))
        self.config.chmod(0o600)

    def shore_link(self, name: str = "sat", extra: str = "") -> str:
        up = script(self.root / "up.py", SHORE_UP, self.shore.config, self.pidfile, self.log,
                    self.shore.smtp)
        down = script(self.root / "down.py", SHORE_DOWN, self.pidfile, self.log)
        return (f"[link {name}]\nup = {up}\ndown = {down}\ncost_per_minute = 1.20\n"
                f"cost_per_megabyte = 10\nup_timeout = 40s\npriority = 50\n{extra}")

    def enqueue(self, n: int, sender: str = "skipper@boat.example", size: int = 0) -> str:
        body = (f"From: {sender}\nTo: bob@nosend.test\nSubject: note {n}\n"
                f"Message-ID: <n{n}@boat.example>\n\nbody of {n}\n").encode()
        body += b"".join(b"padding line %08d\n" % i for i in range(size // 22))
        queue = OutboundQueue(self.data / "queue", hostname="boat.example")
        return queue.enqueue(Envelope.simple(sender, ["bob@nosend.test"]), [body])

    def queued(self) -> list[str]:
        queue = OutboundQueue(self.data / "queue", hostname="boat.example")
        return [e.id for e in queue.entries() if e.pending]

    def mailbox(self, name: str) -> list[bytes]:
        out = []
        for sub in ("new", "cur"):
            d = self.data / "mail" / name / sub
            if d.is_dir():
                out += [p.read_bytes() for p in sorted(d.iterdir())]
        return out

    def ledger(self) -> list[dict[str, object]]:
        path = self.data / "state" / "cycles.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def link_log(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def check(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nosend", "check", "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start_check(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "nosend", "check", "--config", str(self.config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL)


@pytest.fixture
def boat(tmp_path: Path) -> Iterator[Boat]:
    shore = make_shore(tmp_path / "shore")
    root = tmp_path / "boat"
    root.mkdir()
    b = Boat(root, shore, "")
    b.links = b.shore_link()
    b.write()
    try:
        yield b
    finally:
        if b.pidfile.exists():  # a test that failed with the shore up: stop it by pid
            pid = int(b.pidfile.read_text())
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
                gone(pid)


def wait_for(predicate: object, patience: float = 60.0) -> None:
    deadline = time.monotonic() + patience
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)


def test_a_cycle_relays_fetches_and_records_what_it_moved_and_cost(boat: Boat) -> None:
    for n in range(3):
        boat.enqueue(n)
    boat.enqueue(9, sender="mate@boat.example")
    for n in range(2):
        boat.shore.deliver("alice", b"From: shore@nosend.test\nTo: alice@nosend.test\n"
                           b"Subject: in %d\n\nhello %d\n" % (n, n))
    done = boat.check()
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.startswith("done: 4 sent, 2 fetched over sat"), done.stdout
    # Not a terminal: plain progress lines, one per state and message.
    assert "sat dialling" in done.stderr and "\nsat down\n" in done.stderr
    assert boat.link_log() == ["up", "down"]
    assert not boat.pidfile.exists()  # down stopped the shore
    assert boat.queued() == []
    assert sorted(m.split(b"Subject: ")[1].split(b"\n")[0] for m in
                  boat.shore.mailbox("bob") if b"note" in m) == [
        b"note 0", b"note 1", b"note 2", b"note 9"]
    fetched = boat.mailbox("mate")
    assert len(fetched) == 2 and all(b"Subject: in " in m for m in fetched)
    (record,) = boat.ledger()
    print(json.dumps(record))
    assert record["result"] == "done" and record["link"] == "sat"
    assert record["messages_out"] == 4 and record["messages_in"] == 2
    bytes_up, bytes_down = record["bytes_up"], record["bytes_down"]
    assert isinstance(bytes_up, int) and isinstance(bytes_down, int)
    assert bytes_up > 4 * 60 and bytes_down > 2 * 40  # the bodies and the protocol
    online = float(record["online_seconds"])  # type: ignore[arg-type]
    expected = (Decimal(round(online * 1000)) / 60_000 * Decimal("1.20")
                + Decimal(bytes_up + bytes_down) / 1_000_000 * Decimal(10))
    assert Decimal(str(record["cost"])) == expected.quantize(Decimal("0.0001"))
    users = {u["user"]: u for u in record["users"]}  # type: ignore[attr-defined]
    assert set(users) == {"skipper", "mate"}
    assert users["skipper"]["bytes_out"] > 0 and users["mate"]["bytes_in"] > 0
    assert users["mate"]["bytes_out"] > 0
    assert sum(Decimal(u["cost"]) for u in users.values()) == Decimal(str(record["cost"]))
    # nosend status shows the month's cost from the same ledger.
    status = subprocess.run([sys.executable, "-m", "nosend", "status", "--config",
                             str(boat.config)], capture_output=True, text=True, timeout=60)
    print(status.stdout)
    assert status.returncode == 0 and "sat" in status.stdout
    # Nothing left: the next check still fetches (an account is always "waiting"), but
    # sends nothing and fetches nothing twice.
    again = boat.check()
    assert again.returncode == 0, again.stderr
    assert len(boat.mailbox("mate")) == 2 and boat.link_log() == ["up", "down"] * 2


def test_a_dry_run_says_what_would_happen_and_changes_nothing(boat: Boat) -> None:
    boat.enqueue(1)
    boat.check()  # a ledger and state to compare
    boat.enqueue(2)
    boat.enqueue(3)

    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(boat.data)): (p.stat().st_mtime_ns, p.stat().st_size)
                for p in boat.data.rglob("*")}

    before = snapshot()
    log_before = boat.link_log()
    done = boat.check("--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("waiting: 2 message(s), ")
    assert lines[1].startswith("would use sat: 2 message(s), 1 account(s), ")
    assert "about $" in lines[1] or "about " in lines[1]
    assert snapshot() == before and boat.link_log() == log_before


def test_a_failed_up_falls_back_to_the_next_link(boat: Boat) -> None:
    bad_up = script(boat.root / "fail.py", FAIL, boat.root / "bad.log")
    bad_down = script(boat.root / "note.py", NOTE, boat.root / "bad.log", "down")
    boat.links = (f"[link gsm]\nup = {bad_up}\ndown = {bad_down}\npriority = 10\n"
                  "cost_per_minute = 0.50\n\n" + boat.shore_link())
    boat.write()
    boat.enqueue(1)
    done = boat.check()
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert (boat.root / "bad.log").read_text().split() == ["up", "down"]
    (record,) = boat.ledger()
    assert record["link"] == "sat" and record["messages_out"] == 1
    (attempt,) = record["attempts"]  # type: ignore[misc]
    assert attempt["link"] == "gsm" and "exit status 1" in attempt["error"]


def test_an_up_that_hangs_is_cut_at_up_timeout_and_down_runs(boat: Boat) -> None:
    up = script(boat.root / "hang.py", HANG, boat.root / "hang.log")
    down = script(boat.root / "note.py", NOTE, boat.root / "hang.log", "down")
    boat.links = f"[link sat]\nup = {up}\ndown = {down}\nup_timeout = 2s\n"
    boat.write()
    boat.enqueue(1)
    done = boat.check()
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert (boat.root / "hang.log").read_text().split() == ["up", "down"]
    assert len(boat.queued()) == 1
    (record,) = boat.ledger()
    assert record["result"] == "link failed"


def test_a_link_that_drops_mid_cycle_loses_and_duplicates_nothing(boat: Boat) -> None:
    # The relay goes through a proxy that drops the call in the middle of a big message
    # (the small ones before it are confirmed first: see nosend_link.relay).
    with LinkProxy("127.0.0.1", boat.shore.smtp, cut_up=60_000) as proxy:
        boat.write(smtp_port=proxy.port)
        for n in range(3):
            boat.enqueue(n)
        big = boat.enqueue(9, size=200_000)
        first = boat.check()
        assert first.returncode == 1, (first.stdout, first.stderr)
        assert proxy.counters.snapshot()["cuts"] == 1
        assert boat.link_log() == ["up", "down"]
        assert boat.queued() == [big]
        proxy.cut_up = None
        second = boat.check()
        assert second.returncode == 0, (second.stdout, second.stderr)
    assert boat.queued() == []
    assert boat.link_log() == ["up", "down", "up", "down"]
    subjects = sorted(m.split(b"Subject: ")[1].split(b"\n")[0]
                      for m in boat.shore.mailbox("bob") if b"note" in m)
    assert subjects == [b"note 0", b"note 1", b"note 2", b"note 9"]
    first_record, second_record = boat.ledger()
    assert first_record["result"] == "partly" and second_record["result"] == "done"
    assert (first_record["messages_out"], second_record["messages_out"]) == (3, 1)
    # The cut call billed the bytes that crossed before the drop.
    assert first_record["bytes_up"] > 60_000


def test_sigterm_runs_down_and_a_second_check_exits_75_meanwhile(boat: Boat) -> None:
    # A cycle that stays online: the shore's POP3 is replaced by a port nobody answers
    # until the idle timeout, so the fetch waits.
    silent = free_port()
    with socket.create_server(("127.0.0.1", silent)) as _listener:
        boat.write(pop3_port=silent)
        boat.enqueue(1)
        proc = boat.start_check()
        wait_for(lambda: boat.pidfile.exists() and "up" in boat.link_log())
        shore_pid = read_pid(boat.pidfile)
        wait_for(lambda: (boat.data / "state" / "link-up.json").exists())
        busy = boat.check()
        assert busy.returncode == 75, (busy.stdout, busy.stderr)
        assert "another cycle is running (pid" in busy.stderr
        wait_for(lambda: boat.queued() == [])  # the relay is done; the fetch waits
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert boat.link_log() == ["up", "down"]
    assert gone(shore_pid)
    assert not (boat.data / "state" / "link-up.json").exists()
    (record,) = boat.ledger()
    assert record["result"] == "interrupted" and record["messages_out"] == 1


def test_after_a_kill_9_the_next_check_brings_the_link_down_first(boat: Boat) -> None:
    silent = free_port()
    with socket.create_server(("127.0.0.1", silent)) as _listener:
        boat.write(pop3_port=silent)
        boat.enqueue(1)
        proc = boat.start_check()
        wait_for(lambda: boat.queued() == [])
        shore_pid = read_pid(boat.pidfile)
        proc.kill()
        proc.communicate(timeout=30)
    assert alive(shore_pid)  # left up: nobody hung up
    assert (boat.data / "state" / "link-up.json").exists()
    boat.write()  # the shore's POP3 again
    done = boat.check()
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert gone(shore_pid)
    assert boat.link_log() == ["up", "down", "up", "down"]
    stale, cycle = boat.ledger()
    assert stale["result"] == "stale link" and stale["link"] == "sat"
    assert Decimal(str(stale["cost"])) > 0
    assert cycle["result"] == "done"


def test_an_unknown_link_is_a_user_error(boat: Boat) -> None:
    done = boat.check("--link", "nope")
    assert done.returncode == 1 and "no link 'nope'" in done.stderr


def test_report_each_puts_the_cycle_report_into_the_postmasters_mailbox(boat: Boat) -> None:
    boat.schedule = "[schedule]\nreport = each\n"
    boat.write()
    boat.enqueue(1)
    done = boat.check()
    assert done.returncode == 0, (done.stdout, done.stderr)
    # The postmaster is the first mailbox (skipper); delivered locally, never queued.
    (report,) = boat.mailbox("skipper")
    assert b"Subject: nosend cycle: done" in report
    assert b"link sat" in report and b"sent 1 message(s), fetched 0" in report
    assert b"skipper: " in report
    assert boat.queued() == []
