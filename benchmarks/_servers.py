"""Servers and clients for ``bench_server.py``: nosend, the aiosmtpd Maildir baseline,
Dovecot, Postfix's ``smtp-source``, a POP3 retrieval client and memory probes.

Every server is a child process on a free 127.0.0.1 port under one temporary folder and
is stopped by its own pid. Nothing here measures by itself; ``bench_server.py`` decides
what to time.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nosend_store.passwords import hash_password

HERE = Path(__file__).resolve().parent
DOMAIN = "nosend.test"
READY_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    """Full path of a program, looking in the sbin directories too, or exit."""
    path = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )
    if path is None:
        sys.exit(f"bench_server: {name} is not installed")
    return path


# ---------------------------------------------------------------------------------------
# Memory probes (Linux /proc)


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int) -> float:
    """Resident set size now (VmRSS), in MiB."""
    return _status_kb(pid, "VmRSS") / 1024


def peak_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) since start or the last ``reset_peak``, in MiB."""
    return _status_kb(pid, "VmHWM") / 1024


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time (user + system, all threads) a process used so far; with ``children``,
    plus that of its children it has already reaped (Dovecot's per-session processes)."""
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the parenthesised command name: utime is 14, cstime 17 (1-based).
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5; Linux 4.0+, needs ownership)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Processes


@dataclass
class Server:
    """A benchmark server child process."""

    name: str
    proc: subprocess.Popen[bytes]
    smtp_port: int | None = None
    pop3_port: int | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)

    def log(self) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _wait_for_line(server: Server, needle: str) -> Server:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if needle in server.log():
            return server
        if server.proc.poll() is not None:
            break
        time.sleep(0.05)
    server.stop()
    sys.exit(f"bench_server: {server.name} did not start:\n{server.log()}")


def _wait_for_listen(server: Server, port: int) -> Server:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(512)  # the greeting: the server is really serving
            return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    sys.exit(f"bench_server: {server.name} did not start:\n{server.log()}")


def make_maildir(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def count_messages(maildir: Path) -> int:
    return sum(len(os.listdir(maildir / sub)) for sub in ("new", "cur") if (maildir / sub).is_dir())


def start_nosend(
    root: Path,
    mailboxes: dict[str, str],
    *,
    smtp: bool = True,
    pop3: bool = True,
    max_message_size: str = "200M",
    max_connections: int = 1100,
    backend: str = "asyncio",
    log_level: str = "info",
) -> Server:
    """``nosend serve`` with mail in ``root/data/mail/<mailbox>``; plaintext LAN logins."""
    root.mkdir(parents=True, exist_ok=True)
    smtp_port = free_port() if smtp else None
    pop3_port = free_port() if pop3 else None
    lines = [
        "[server]",
        "hostname = mx.nosend.test",
        f"data_dir = {root / 'data'}",
        f"smtp_listen = 127.0.0.1:{smtp_port}" if smtp_port else "smtp_listen =",
        "submission_listen =",
        f"pop3_listen = 127.0.0.1:{pop3_port}" if pop3_port else "pop3_listen =",
        "lan_plaintext_auth = yes",
        f"max_message_size = {max_message_size}",
        f"max_connections = {max_connections}",
        f"max_connections_per_ip = {max_connections}",
        f"log_level = {log_level}",
        "",
        "[domains]",
        DOMAIN,
    ]
    for name, password in mailboxes.items():
        lines += ["", f"[mailbox {name}]", f"password = {hash_password(password)}"]
    config = root / "mail.cfg"
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)
    log_path = root / "nosend.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nosend", "serve", "--config", str(config),
             "--backend", backend],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=root,
        )  # fmt: skip
    server = Server("nosend", proc, smtp_port, pop3_port, log_path)
    return _wait_for_listen(server, smtp_port or pop3_port or 0)


def nosend_maildir(root: Path, mailbox: str) -> Path:
    return root / "data" / "mail" / mailbox


def start_aiosmtpd(root: Path, maildir: Path) -> Server:
    """The aiosmtpd durable-Maildir baseline (``_aiosmtpd_maildir.py``)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = root / "aiosmtpd.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "_aiosmtpd_maildir.py"), "--port", str(port),
             "--maildir", str(maildir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=root,
        )  # fmt: skip
    server = Server("aiosmtpd", proc, smtp_port=port, log_path=log_path)
    return _wait_for_line(server, f"listening {port}")


def start_dovecot(root: Path, mail_root: Path, users: dict[str, str]) -> Server:
    """Dovecot (full daemon, foreground, private config) serving ``mail_root/<user>``.

    Dovecot will not access mail as root, so the Maildirs are handed to ``nobody``;
    passwords are in a passwd-file (PLAIN scheme: login cost is not what we measure).
    """
    dovecot = tool("dovecot")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() == 0:
        os.chmod(root, 0o755)
        path = mail_root
        while path != path.parent:
            # Every directory above the Maildirs must be searchable by nobody.
            os.chmod(path, os.stat(path).st_mode | 0o711)
            path = path.parent
        for dirpath, dirnames, filenames in os.walk(mail_root):
            for name in (*dirnames, *filenames):
                os.chown(os.path.join(dirpath, name), nobody.pw_uid, nobody.pw_gid)
            os.chown(dirpath, nobody.pw_uid, nobody.pw_gid)
        uid, gid = nobody.pw_uid, nobody.pw_gid
    else:
        uid, gid = os.getuid(), os.getgid()
    passwd = root / "passwd"
    passwd.write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
    passwd.chmod(0o644)
    (root / "state").mkdir(exist_ok=True)
    log_path = root / "dovecot.log"
    conf = root / "dovecot.conf"
    conf.write_text(
        f"base_dir = {root}/run\n"
        f"state_dir = {root}/state\n"
        f"log_path = {log_path}\n"
        "ssl = no\n"
        "protocols = pop3\n"
        "listen = 127.0.0.1\n"
        "disable_plaintext_auth = no\n"
        "auth_mechanisms = plain\n"
        f"passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {passwd}\n}}\n"
        f"userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={root}/home/%u\n}}\n"
        f"mail_location = maildir:{mail_root}/%u\n"
        "pop3_uidl_format = %f\n"
        "first_valid_uid = 0\nfirst_valid_gid = 0\n"
        f"service pop3-login {{\n  inet_listener pop3 {{\n    port = {port}\n  }}\n}}\n"
    )
    proc = subprocess.Popen(
        [dovecot, "-F", "-c", str(conf)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=root,
    )  # fmt: skip
    server = Server("dovecot", proc, pop3_port=port, log_path=log_path)
    return _wait_for_listen(server, port)


# ---------------------------------------------------------------------------------------
# Clients


def smtp_source(port: int, *, sessions: int, size: int, count: int, to: str) -> float:
    """Run ``smtp-source`` (one SMTP session per message, ``sessions`` in parallel);
    return the wall-clock seconds it took."""
    cmd = [
        tool("smtp-source"), "-s", str(sessions), "-l", str(size), "-m", str(count),
        "-f", "bench@client.test", "-t", to, "-M", "client.test", f"127.0.0.1:{port}",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, timeout=240)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {result.stderr.decode(errors='replace')}")
    return elapsed


class _Pop3Reader:
    """A minimal fast POP3 client: lines and multi-line blocks with one bytearray."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        out = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return out

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"{text.split()[0]}: {reply!r}")
        return reply

    def block(self) -> int:
        """Read a multi-line body up to CRLF.CRLF; return its size on the wire."""
        searched = 0
        while True:
            end = self.buf.find(b"\r\n.\r\n", max(0, searched - 4))
            if end >= 0:
                size = end + 2
                del self.buf[: end + 5]
                return size
            # A block may also be empty: ".\r\n" right after the +OK line.
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return 0
            searched = len(self.buf)
            self._fill()


def pop3_retrieve_all(port: int, user: str, password: str) -> tuple[int, int, float, float]:
    """Log in, RETR every message one after the other, QUIT without deleting.

    Returns (messages, bytes on the wire, perf_counter at the first RETR, perf_counter at
    its last byte): RETR throughput leaves the login out, since the servers check
    different password schemes (nosend scrypt, the Dovecot fixture a plain passwd file).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        pop = _Pop3Reader(sock)
        if not pop.line().startswith(b"+OK"):
            raise RuntimeError("no POP3 greeting")
        pop.command(f"USER {user}")
        pop.command(f"PASS {password}")
        count = int(pop.command("STAT").split()[1])
        total = 0
        start = time.perf_counter()
        for number in range(1, count + 1):
            pop.command(f"RETR {number}")
            total += pop.block()
        end = time.perf_counter()
        pop.command("QUIT")
    return count, total, start, end


def open_idle(port: int, count: int) -> Iterator[socket.socket]:
    """Open ``count`` connections that each read their greeting and then stay silent."""
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        greeting = sock.recv(512)
        if not greeting.startswith((b"220", b"+OK")):
            sock.close()
            raise RuntimeError(f"connection refused by the server: {greeting!r}")
        yield sock


def send_big_message(port: int, size: int, to: str) -> float:
    """Send one message of ``size`` bytes with smtplib, streaming the body in 64 KB
    chunks (the client never holds it whole); return seconds until the 250."""
    line = b"x" * 998 + b"\r\n"
    chunk = line * 64
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("big@client.test", [f"SIZE={size}"] if smtp.has_extn("size") else [])
        smtp.rcpt(to)
        code, reply = smtp.docmd("DATA")
        if code != 354:
            raise RuntimeError(f"DATA: {code} {reply!r}")
        header = b"From: big@client.test\r\nTo: " + to.encode() + b"\r\nSubject: big\r\n\r\n"
        smtp.sock.sendall(header)
        sent = len(header)
        while sent + len(chunk) <= size:
            smtp.sock.sendall(chunk)
            sent += len(chunk)
        while sent + len(line) <= size:
            smtp.sock.sendall(line)
            sent += len(line)
        smtp.sock.sendall(b".\r\n")
        code, reply = smtp.getreply()
        if code != 250:
            raise RuntimeError(f"end of data: {code} {reply!r}")
    return time.perf_counter() - start
