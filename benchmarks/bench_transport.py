"""One exchange cycle over a slow link: ``nosend exchange`` against Postfix plus fetchmail.

The world is one ``nosend serve`` on loopback playing the shore: submission (STARTTLS,
AUTH required: its ``trusted_networks`` is empty) as the smarthost, and POP3 (STLS) as
the provider, where mailbox ``alice`` holds the inbound messages. Both contenders reach
it through the SAME two ``tests/link/link_proxy.py`` proxies (one per service) adding
``--delay`` seconds each way; each contender's turnarounds and bytes are the difference
of the proxies' counters across its run.

* nosend: a boat data folder whose queue holds N outbound messages (put there with the
  store API, as the boat's server would) and whose ``mail.cfg`` has an smtp account and a
  pop3 account, both through the proxies with TLS verified against the shore's
  certificate; then ONE ``nosend exchange`` subprocess (the command a user runs,
  interpreter start-up included), timed from spawn to exit.
* baseline: a private Postfix (``postfix -c DIR``, started as root, its own queue and
  configuration under /tmp; no listener of its own) with ``relayhost =
  [127.0.0.1]:PROXYPORT``, STARTTLS (``smtp_tls_security_level = encrypt``) and SASL
  client AUTH as alice -- the same login nosend uses. The N messages are submitted with
  its ``sendmail`` and held by a ``header_checks`` HOLD rule; the measure starts at
  ``postsuper -H ALL`` + ``postqueue -f`` and ends when its queue is empty. Then
  fetchmail (STLS, ``sslcertck``, ``uidl``, no keep) fetches the same account's N
  messages into an MDA writing files. Its time is Postfix's flush plus fetchmail's run,
  one after the other, as a cycle would do them.

Both sides move N x ``--size`` byte messages each way, to bob@nosend.test (outbound) and
from alice (inbound); every run is checked (the shore got N for bob, the boat's or the
MDA's folder got N, alice's mailbox is empty) and a mismatch is printed. Needs root
(Postfix's master), postfix and fetchmail. Run:

    PYTHONPATH=$PWD/src:$PWD python benchmarks/bench_transport.py [--messages 50]
        [--delay 0.15] [--size 5000]

Ends with ``cycle_vs_fetchmail=<nosend seconds / (Postfix + fetchmail seconds)>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.interop.conftest import (  # noqa: E402
    NosendServer,
    TLSFiles,
    build_server,
    make_tls_files,
)
from tests.interop.postfix_fixture import MASTER_SERVICES, private_main_cf  # noqa: E402
from tests.link.link_proxy import LinkProxy  # noqa: E402
from tests.link.relay_support import boat_config, enqueue  # noqa: E402

from nosend_store.passwords import encode_shared_secret  # noqa: E402

SENDER = "skipper@boat.example"
OUT_RCPT = "bob@nosend.test"
_WAIT = 240.0  # bound on any one phase, so a broken run ends instead of hanging

# Postfix as the boat's MTA: everything goes to the relayhost (our proxy), over
# STARTTLS, authenticated; mail submitted with Subject "bench" is held until released.
# (after private_main_cf)
_MAIN_CF = """\
relayhost = [127.0.0.1]:{port}
header_checks = regexp:{root}/hold
smtp_tls_security_level = encrypt
smtp_tls_CAfile = {cert}
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:{root}/sasl_passwd
smtp_sasl_security_options = noanonymous
"""

# No smtpd: the messages come in through sendmail/pickup.
_MASTER_CF = MASTER_SERVICES


@dataclass(frozen=True, slots=True)
class Result:
    """One contender's run: wall time, what the link proxies saw, and whether it did it."""

    seconds: float
    turnarounds: int
    bytes_up: int
    bytes_down: int
    connections: int
    ok: bool


def message(n: int, size: int, to: str, subject: str) -> bytes:
    """A plain-text message of about ``size`` octets, numbered ``n``."""
    head = f"From: <{SENDER}>\nTo: <{to}>\nSubject: {subject} {n}\n\n".encode()
    lines = [head]
    total = len(head)
    i = 0
    while total < size:
        line = b"line %04d of message %04d, words to make it look like a letter home\n" % (
            i, n)
        lines.append(line)
        total += len(line)
        i += 1
    return b"".join(lines)


class _Proxies:
    """The two link proxies every contender shares, and counters per contender."""

    def __init__(self, smtp: LinkProxy, pop3: LinkProxy) -> None:
        self.smtp, self.pop3 = smtp, pop3

    def _sum(self) -> dict[str, int]:
        a, b = self.smtp.counters.snapshot(), self.pop3.counters.snapshot()
        return {k: a[k] + b[k] for k in a}

    @contextmanager
    def measure(self, into: dict[str, int]) -> Iterator[None]:
        before = self._sum()
        yield
        after = self._sum()
        into.update({k: after[k] - before[k] for k in after})


def _count(path: Path) -> int:
    return sum(1 for sub in ("new", "cur") if (path / sub).is_dir()
               for _ in (path / sub).iterdir())


def run_nosend(root: Path, shore: NosendServer, proxies: _Proxies, tls: TLSFiles,
               count: int, size: int) -> Result:
    """Queue ``count`` messages in a boat and time one ``nosend exchange``."""
    boat = root / "boat"
    boat.mkdir()
    password = shore.users["alice"]
    pop3 = ["", "[account isp]", "type = pop3", "host = 127.0.0.1",
            f"port = {proxies.pop3.port}", "tls = starttls", f"ca_file = {tls.cert}",
            "user = alice", f"secret = {encode_shared_secret(password)}",
            "deliver_to = skipper"]
    config = boat_config(boat, proxies.smtp.port, *pop3, user="alice", password=password,
                         ca_file=tls.cert)
    for n in range(count):
        enqueue(config, message(n, size, OUT_RCPT, "nosend out"), [OUT_RCPT])
    for n in range(count):
        shore.deliver_directly("alice", message(n, size, "alice@nosend.test", "nosend in"))
    bob_before = len(shore.messages("bob"))
    counters: dict[str, int] = {}
    with proxies.measure(counters):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "nosend", "exchange", "--config", str(boat / "mail.cfg")],
            capture_output=True, text=True, timeout=_WAIT, env={**os.environ, "HOME": str(boat)})
        seconds = time.monotonic() - started
    got_out = len(shore.wait_for_messages("bob", bob_before + count)) - bob_before
    got_in = _count(boat / "data" / "mail" / "skipper")
    ok = done.returncode == 0 and got_out == count and got_in == count
    if not ok:
        print(f"nosend: exit {done.returncode}, relayed {got_out}/{count}, "
              f"fetched {got_in}/{count}\n{done.stdout}{done.stderr[-2000:]}")
    return Result(seconds, counters["turnarounds"], counters["bytes_up"],
                  counters["bytes_down"], counters["connections"], ok)


class PrivatePostfix:
    """A Postfix of our own under ``root`` (mode 0755: its daemons run as ``postfix``)."""

    def __init__(self, root: Path, relay_port: int, cert: Path, user: str,
                 password: str) -> None:
        self.root = root
        self.etc = root / "etc"
        for sub in ("etc", "queue", "data"):
            (root / sub).mkdir()
        shutil.chown(root / "data", "postfix")
        values = {"root": root, "port": relay_port, "cert": cert}
        (self.etc / "main.cf").write_text(
            private_main_cf(root, "boat.example") + _MAIN_CF.format(**values))
        (self.etc / "master.cf").write_text(_MASTER_CF)
        (root / "hold").write_text("/^Subject: postfix out/ HOLD benchmark\n")
        # Read by the smtp client before it drops privileges, as /etc/postfix/sasl_passwd.
        secrets = root / "sasl_passwd"
        secrets.touch(mode=0o600)
        secrets.write_text(f"[127.0.0.1]:{relay_port} {user}:{password}\n")
        self.master: subprocess.Popen[bytes] | None = None

    def _cmd(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(list(args), input=stdin, capture_output=True, timeout=60,
                              check=True)

    def start(self) -> None:
        """``postfix -c DIR start-fg``; ready once the master wrote its pid file."""
        with (self.root / "postfix.out").open("wb") as out:
            self.master = subprocess.Popen(
                ["postfix", "-c", str(self.etc), "start-fg"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (self.root / "queue" / "pid" / "master.pid").exists():
            if self.master.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("postfix did not start:\n" + self.log())
            time.sleep(0.05)
        time.sleep(0.5)  # the master forks pickup and qmgr after writing its pid

    def submit(self, body: bytes, recipient: str) -> None:
        """``sendmail -C DIR -f SENDER recipient`` (its pickup will hold it)."""
        self._cmd("sendmail", "-C", str(self.etc), "-f", SENDER, "-i", recipient, stdin=body)

    def queued(self, *queues: str) -> int:
        """Files in the named queue folders (hashed sub-folders included)."""
        return sum(len(files) for q in queues
                   for _, _, files in os.walk(self.root / "queue" / q))

    def wait(self, condition: str, test: object, bound: float = _WAIT) -> bool:
        """Poll ``test()`` every 20 ms until true or ``bound`` seconds passed."""
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            if test():  # type: ignore[operator]
                return True
            time.sleep(0.02)
        print(f"postfix: timed out waiting for {condition}")
        return False

    def release_and_flush(self) -> None:
        """Move the held messages to the deferred queue and ask qmgr to deliver now."""
        self._cmd("postsuper", "-c", str(self.etc), "-H", "ALL")
        self._cmd("postqueue", "-c", str(self.etc), "-f")

    def log(self) -> str:
        """Postfix's log so far."""
        try:
            return (self.root / "postfix.out").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """``postfix -c DIR stop``, then our master by its pid if it lingers."""
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True,
                       timeout=30, check=False)
        if self.master is not None:
            try:
                self.master.wait(15)
            except subprocess.TimeoutExpired:
                self.master.send_signal(signal.SIGKILL)
                self.master.wait(15)
        # start-fg's master may be a child of the process we started: wait for the pid
        # our own queue names, and end it if it outlives the stop.
        try:
            pid = int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


def run_postfix(root: Path, shore: NosendServer, proxies: _Proxies, tls: TLSFiles,
                count: int, size: int) -> Result:
    """Hold ``count`` messages in a private Postfix, then time its flush to the relayhost."""
    pf_root = Path(tempfile.mkdtemp(prefix="bench-postfix-", dir="/tmp"))
    pf_root.chmod(0o755)
    postfix = PrivatePostfix(pf_root, proxies.smtp.port, tls.cert, "alice",
                             shore.users["alice"])
    try:
        postfix.start()
        for n in range(count):
            postfix.submit(message(n, size, OUT_RCPT, "postfix out"), OUT_RCPT)
        held = postfix.wait(f"{count} held messages",
                            lambda: postfix.queued("hold") == count
                            and postfix.queued("maildrop", "incoming") == 0, 60)
        bob_before = len(shore.messages("bob"))
        counters: dict[str, int] = {}
        with proxies.measure(counters):
            started = time.monotonic()
            postfix.release_and_flush()
            empty = postfix.wait("an empty queue", lambda: postfix.queued(*_QUEUES) == 0)
            seconds = time.monotonic() - started
        got = len(shore.wait_for_messages("bob", bob_before + count)) - bob_before
        ok = held and empty and got == count
        if not ok:
            print(f"postfix: relayed {got}/{count}\n" + postfix.log()[-3000:])
    finally:
        postfix.stop()
        shutil.rmtree(pf_root, ignore_errors=True)
    return Result(seconds, counters["turnarounds"], counters["bytes_up"],
                  counters["bytes_down"], counters["connections"], ok)


def run_fetchmail(root: Path, shore: NosendServer, proxies: _Proxies, tls: TLSFiles,
                  count: int, size: int) -> Result:
    """Put ``count`` messages in alice's shore mailbox and time one fetchmail run."""
    work = root / "fetchmail"
    out = work / "delivered"
    out.mkdir(parents=True)
    for n in range(count):
        shore.deliver_directly("alice", message(n, size, "alice@nosend.test", "fetchmail in"))
    rc = work / "fetchmailrc"
    rc.touch(mode=0o600)
    rc.write_text(
        "set no syslog\n"
        f"poll localhost protocol pop3 port {proxies.pop3.port} uidl\n"
        f'  user "alice" there with password "{shore.users["alice"]}" is "root" here\n'
        f'  sslproto tls1.2+ sslcertck sslcertfile "{tls.cert}"\n  nokeep\n'
        f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n")
    counters: dict[str, int] = {}
    with proxies.measure(counters):
        started = time.monotonic()
        done = subprocess.run(
            ["fetchmail", "-f", str(rc), "-i", str(work / "ids"), "--pidfile",
             str(work / "pid"), "--nosyslog"],
            capture_output=True, timeout=_WAIT,
            env={"PATH": os.environ["PATH"], "HOME": str(work), "FETCHMAILHOME": str(work)})
        seconds = time.monotonic() - started
    got = len(os.listdir(out))
    ok = done.returncode == 0 and got == count and not shore.messages("alice")
    if not ok:
        print(f"fetchmail: exit {done.returncode}, fetched {got}/{count}\n"
              + done.stderr.decode(errors="replace")[-2000:])
    return Result(seconds, counters["turnarounds"], counters["bytes_up"],
                  counters["bytes_down"], counters["connections"], ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50, help="messages each way")
    parser.add_argument("--delay", type=float, default=0.15, help="seconds added each way")
    parser.add_argument("--size", type=int, default=5_000, help="octets per message")
    args = parser.parse_args()
    for tool in ("postfix", "fetchmail"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            sys.exit(f"{tool} is not installed")
    if os.geteuid() != 0:
        sys.exit("Postfix's master must be started as root")
    root = Path(tempfile.mkdtemp(prefix="bench-transport-"))
    tls = make_tls_files(root)
    (root / "shore").mkdir()
    shore = build_server(root / "shore", tls, ("submission", "pop3"), trusted_networks="")
    shore.start()
    n, size = args.messages, args.size
    try:
        with LinkProxy("127.0.0.1", shore.port("submission"), delay=args.delay) as smtp, \
                LinkProxy("127.0.0.1", shore.port("pop3"), delay=args.delay) as pop3:
            proxies = _Proxies(smtp, pop3)
            ours = run_nosend(root, shore, proxies, tls, n, size)
            relay = run_postfix(root, shore, proxies, tls, n, size)
            fetch = run_fetchmail(root, shore, proxies, tls, n, size)
    finally:
        shore.stop()
        shutil.rmtree(root, ignore_errors=True)
    both = Result(relay.seconds + fetch.seconds, relay.turnarounds + fetch.turnarounds,
                  relay.bytes_up + fetch.bytes_up, relay.bytes_down + fetch.bytes_down,
                  relay.connections + fetch.connections, relay.ok and fetch.ok)
    print(f"one cycle: {n} out + {n} in, {size} octets each, link delay {args.delay:g} s "
          f"each way")
    print(f"{'contender':<22} {'seconds':>8} {'turnarounds':>11} {'conns':>5} "
          f"{'bytes up':>9} {'bytes down':>10} {'ok':>3}")
    for name, r in (("nosend exchange", ours), ("Postfix flush", relay),
                    ("fetchmail", fetch), ("Postfix + fetchmail", both)):
        print(f"{name:<22} {r.seconds:>8.2f} {r.turnarounds:>11} {r.connections:>5} "
              f"{r.bytes_up:>9} {r.bytes_down:>10} {'yes' if r.ok else 'NO':>3}")
    print(f"cycle_vs_fetchmail={ours.seconds / both.seconds:.3f}")
    if not (ours.ok and both.ok):
        sys.exit(1)  # the figures of a run that did not do the work mean nothing


if __name__ == "__main__":
    main()
