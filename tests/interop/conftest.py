"""Fixtures that run the real ``nosend serve`` (and ``nosend inetd`` under socat) for
interop and hostile-peer tests.

A server here is a subprocess started from a ``mail.cfg`` written for the test: local
domain ``nosend.test``, mailboxes ``alice`` and ``bob`` with known passwords, listeners
on free 127.0.0.1 ports, a self-signed certificate made at test time with ``openssl``,
and whatever ``[server]`` options the test asks for (tiny timeouts, small size limits,
an untrusted network). Readiness is the server's own ``listening`` log line; the server
is stopped by its pid (SIGTERM, then SIGKILL after a bound) when the test ends.

``tests/runners/test_hostile*.py`` import these fixtures by name, so a hostile-peer test
and an interop test run exactly the same server.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nosend_store.passwords import hash_password
from tests.conftest import require_tool
from tests.ports import free_port

DOMAIN = "nosend.test"
#: mailbox -> password of every server these fixtures start.
USERS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2"}
SERVICES = ("smtp", "submission", "smtps", "pop3", "pop3s")
_READY_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0

# Hashing is deliberately slow; hash once per test process.
_HASHES: dict[str, str] = {}


#: Messages for retrieval tests, as a client would see them (LF line ends): a plain
#: one, one whose lines start with dots (POP3 byte-stuffing), an 8-bit one, a big one.
SAMPLE_MESSAGES = (
    b"From: skipper@nosend.test\nTo: alice@nosend.test\nSubject: one\n\nfirst body\n",
    b"From: skipper@nosend.test\nTo: alice@nosend.test\nSubject: dots\n\n.\n..two\n"
    b".leading dot\nend\n",
    b"From: skipper@nosend.test\nTo: alice@nosend.test\nSubject: eight bit\n"
    b"Content-Type: text/plain; charset=latin-1\n\nK\xf8benhavn \xe9t\xe9\n",
    b"From: skipper@nosend.test\nTo: alice@nosend.test\nSubject: big\n\n"
    + b"".join(b"line %06d of a big message, with some padding text\n" % i for i in range(6000)),
)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A self-signed certificate for ``localhost`` and 127.0.0.1, made at test time."""

    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this certificate."""
        return ssl.create_default_context(cafile=str(self.cert))

    def fingerprint(self, digest: str = "sha256") -> str:
        """The certificate fingerprint as ``AA:BB:...`` (what fetchmail/mpop accept)."""
        der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        raw = hashlib.new(digest, der).hexdigest().upper()
        return ":".join(raw[i : i + 2] for i in range(0, len(raw), 2))


def make_tls_files(directory: Path) -> TLSFiles:
    """Generate a fresh RSA key and self-signed certificate in ``directory``."""
    openssl = require_tool("openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return TLSFiles(cert, key)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """One certificate for the whole test run."""
    return make_tls_files(tmp_path_factory.mktemp("interop-tls"))


def _hash(password: str) -> str:
    if password not in _HASHES:
        _HASHES[password] = hash_password(password)
    return _HASHES[password]


def mail_cfg_text(
    data_dir: Path,
    ports: dict[str, int],
    tls: TLSFiles | None,
    options: dict[str, str],
    users: dict[str, str] = USERS,
) -> str:
    """A ``mail.cfg`` for a test server; ``options`` override ``[server]`` keys."""
    server = {
        "hostname": "mx.nosend.test",
        "data_dir": str(data_dir),
        **{f"{s}_listen": f"127.0.0.1:{ports[s]}" if s in ports else "" for s in SERVICES},
        "tls_cert": str(tls.cert) if tls else "",
        "tls_key": str(tls.key) if tls else "",
        "log_level": "debug",
        **options,
    }
    lines = ["[server]", *(f"{k} = {v}" for k, v in server.items()), "", "[domains]", DOMAIN]
    for name, password in users.items():
        lines += ["", f"[mailbox {name}]", f"password = {_hash(password)}"]
    lines += ["", "[aliases]", f"crew@{DOMAIN} = alice, bob", ""]
    return "\n".join(lines)


def _read_maildir(maildir: Path) -> list[bytes]:
    out = []
    for sub in ("new", "cur"):
        directory = maildir / sub
        if directory.is_dir():
            out += [p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()]
    return out


@dataclass
class NosendServer:
    """A running ``nosend serve`` subprocess and where its mail lands."""

    root: Path
    config_path: Path
    data_dir: Path
    ports: dict[str, int]
    tls: TLSFiles | None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    host = "127.0.0.1"
    domain = DOMAIN
    users = USERS

    # -- life cycle ----------------------------------------------------------------------

    def start(self, session: str = "mail", backend: str = "asyncio") -> None:
        """Start the server and wait for its ``listening`` line (bounded)."""
        self.log_path = self.root / "nosend.log"
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nosend", "serve", "--config", str(self.config_path),
                 "--session", session, "--backend", backend],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.root,
                env={**os.environ, "HOME": str(self.root)},
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if re.search(r"\blistening\b", self.log()):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"nosend serve did not become ready:\n{self.log()}")

    def stop(self) -> int | None:
        """Stop our own process by pid: SIGTERM, then SIGKILL after a bound."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_STOP_TIMEOUT)
        return proc.returncode

    def log(self) -> str:
        """Everything the server logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_until_sessions_end(self, timeout: float = 30.0) -> None:
        """Return once every session the server logged has ended (a disconnect line for
        each connect line; the log is at debug level), or fail at ``timeout``.

        A session ends after its clean-up (a cut message's tmp/ file removed, a POP3
        maildrop unlocked), which can be well after the client has gone. Call it after
        the server has answered the test at least once: a connection the server has not
        accepted yet is not in the log."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            connects = log.count(" event=connect\n")
            if connects and connects == log.count(" event=disconnect "):
                return
            assert time.monotonic() < deadline, f"sessions still open:\n{log[-3000:]}"
            time.sleep(0.05)

    # -- where things are ----------------------------------------------------------------

    def port(self, service: str) -> int:
        return self.ports[service]

    def address(self, service: str) -> tuple[str, int]:
        return (self.host, self.ports[service])

    def maildir(self, mailbox: str) -> Path:
        return self.data_dir / "mail" / mailbox

    def messages(self, mailbox: str) -> list[bytes]:
        """Every message delivered to ``mailbox`` (new/ and cur/), oldest name first."""
        return _read_maildir(self.maildir(mailbox))

    def tmp_files(self, mailbox: str) -> list[Path]:
        """Files left in the Maildir's tmp/ (a finished delivery leaves none)."""
        tmp = self.maildir(mailbox) / "tmp"
        return sorted(tmp.iterdir()) if tmp.is_dir() else []

    def wait_for_messages(self, mailbox: str, count: int, timeout: float = 5.0) -> list[bytes]:
        """The messages once at least ``count`` are there (or whatever is, at the bound)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(mailbox)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def deliver_directly(self, mailbox: str, message: bytes) -> str:
        """Put a message into a mailbox through the store (to test POP3 alone)."""
        from nosend_store.maildir import MaildirMailbox  # noqa: PLC0415

        return MaildirMailbox(str(self.maildir(mailbox))).deliver([message])

    def queue_files(self) -> list[Path]:
        """Every file under the outbound queue directory."""
        queue = self.data_dir / "queue"
        return sorted(p for p in queue.rglob("*") if p.is_file()) if queue.is_dir() else []


ServerFactory = Callable[..., NosendServer]


def build_server(
    root: Path,
    tls: TLSFiles | None,
    services: tuple[str, ...] = ("smtp", "submission", "smtps", "pop3", "pop3s"),
    **options: str,
) -> NosendServer:
    """Write ``mail.cfg`` under ``root`` for a server on free ports (not started yet)."""
    ports = {s: free_port() for s in services}
    data_dir = root / "data"
    config = root / "mail.cfg"
    config.write_text(mail_cfg_text(data_dir, ports, tls, options))
    config.chmod(0o600)
    return NosendServer(root, config, data_dir, ports, tls)


@pytest.fixture
def nosend_factory(tmp_path: Path, tls_files: TLSFiles) -> Iterator[ServerFactory]:
    """``start(session="mail", tls=True, services=..., backend="asyncio", **server_options)``
    -> a started server.

    Each call starts one more ``nosend serve``; all are stopped at the end of the test.
    """
    started: list[NosendServer] = []

    def start(
        session: str = "mail",
        tls: bool = True,
        services: tuple[str, ...] = ("smtp", "submission", "smtps", "pop3", "pop3s"),
        backend: str = "asyncio",
        **options: str,
    ) -> NosendServer:
        root = Path(tempfile.mkdtemp(prefix=f"srv{len(started)}-", dir=tmp_path))
        if not tls:
            services = tuple(s for s in services if s not in ("smtps", "pop3s"))
        server = build_server(root, tls_files if tls else None, services, **options)
        started.append(server)
        server.start(session, backend)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def nosend(nosend_factory: ServerFactory) -> NosendServer:
    """A server with the default options (127.0.0.0/8 trusted, TLS available)."""
    return nosend_factory()


# ---------------------------------------------------------------------------------------
# A raw peer, for transcripts and for hostile clients


class RawPeer:
    """A blocking line client on a plain socket that can switch to TLS.

    It keeps its own read buffer, so ``start_tls`` refuses to run while unread bytes
    are pending (they would have arrived in cleartext after the server's go-ahead).
    """

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock: socket.socket = socket.create_connection(address, timeout=timeout)
        self.buf = b""

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def line(self) -> bytes:
        """Next CRLF-terminated line without CRLF; ``b""`` plus EOF raises EOFError."""
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed; unread: {self.buf!r}")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self) -> tuple[int, list[bytes]]:
        """One SMTP reply, multi-line or not: (code, text lines)."""
        texts = []
        while True:
            line = self.line()
            texts.append(line[4:])
            if line[3:4] != b"-":
                return int(line[:3]), texts

    def multiline(self) -> list[bytes]:
        """A POP3 multi-line body after its +OK line, dot-unstuffed."""
        lines = []
        while (line := self.line()) != b".":
            lines.append(line[1:] if line.startswith(b".") else line)
        return lines

    def smtp(self, command: str | bytes) -> tuple[int, list[bytes]]:
        """Send one SMTP command and read its reply."""
        data = command.encode() if isinstance(command, str) else command
        self.send(data + b"\r\n")
        return self.reply()

    def pop3(self, command: str | bytes) -> bytes:
        """Send one POP3 command and read its status line."""
        data = command.encode() if isinstance(command, str) else command
        self.send(data + b"\r\n")
        return self.line()

    def start_tls(self, context: ssl.SSLContext, hostname: str = "localhost") -> None:
        assert self.buf == b"", f"bytes after the TLS go-ahead: {self.buf!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname=hostname)

    def closed_within(self, seconds: float) -> tuple[bool, bytes]:
        """Whether the server closes within ``seconds``; also what it sent meanwhile."""
        deadline = time.monotonic() + seconds
        got = b""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except (ConnectionResetError, ssl.SSLError):
                return True, self.buf + got
            if not data:
                return True, self.buf + got
            got += data
        return False, self.buf + got


# ---------------------------------------------------------------------------------------
# nosend inetd under socat


@dataclass
class SocatInetd:
    """``socat TCP-LISTEN:port,fork EXEC:'nosend inetd SERVICE'`` on a free port."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(_STOP_TIMEOUT)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], timeout: float = _READY_TIMEOUT
) -> None:
    """Wait until something listens on 127.0.0.1:``port`` without connecting to it."""
    deadline = time.monotonic() + timeout
    needle = f":{port:04X} "
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"listener exited with {proc.returncode}")
        with open("/proc/net/tcp") as table:
            for row in table.readlines()[1:]:
                cols = row.split()
                # state 0A is LISTEN
                if cols[1].endswith(needle.strip()) and cols[3] == "0A":
                    return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@pytest.fixture
def socat_inetd_factory(tmp_path: Path) -> Iterator[Callable[[NosendServer, str], SocatInetd]]:
    """``start(server, service)``: serve ``service`` from ``server``'s mail.cfg through
    ``nosend inetd`` under socat (one process per connection, fork)."""
    socat = require_tool("socat")
    running: list[SocatInetd] = []

    def start(server: NosendServer, service: str) -> SocatInetd:
        port = free_port()
        log_path = tmp_path / f"inetd-{service}-{port}.log"
        nosend_cmd = (
            f"{sys.executable} -m nosend inetd {service} --config {server.config_path} "
            f"--log-file {log_path}"
        )
        with (tmp_path / f"socat-{port}.log").open("ab") as socat_log:
            proc = subprocess.Popen(
                [socat, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                 f"EXEC:{nosend_cmd}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=socat_log,
            )  # fmt: skip
        inetd = SocatInetd(port, proc, log_path)
        running.append(inetd)
        wait_for_port(port, proc)
        return inetd

    try:
        yield start
    finally:
        for inetd in running:
            inetd.stop()


# -- mutt, driven through script(1) with pushed keys --------------------------------------

MUTTRC = """\
set folder={folder}
set mbox_type=mbox
set confirmcreate=no
set confirmappend=no
set move=no
set quit=yes
set wait_key=no
set mark_old=no
set auto_tag=yes
{extra}
push "{keys}"
"""


def run_mutt(maildir: Path, keys: str, work: Path, extra: str = "") -> None:
    """Run mutt on ``maildir`` under script(1), typing ``keys``; ``extra`` adds muttrc
    lines. mutt has no batch mode for reading a folder, so its keys are pushed."""
    mutt = require_tool("mutt")
    script = require_tool("script")
    rc = work / "muttrc"
    rc.write_text(MUTTRC.format(keys=keys, folder=work, extra=extra))
    subprocess.run(
        [script, "-qec", f"{mutt} -n -F {rc} -f {maildir}", str(work / "typescript")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        timeout=20,
        check=True,
        env={**os.environ, "TERM": "vt100", "HOME": str(work), "LANG": "C.UTF-8"},
    )


# -- super-servers (openbsd-inetd, xinetd) ------------------------------------------------


@contextmanager
def superserver(
    argv: list[str], ports: dict[str, int], stderr: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Run a super-server in the foreground until every port listens; stop it by its own
    pid (SIGTERM, then SIGKILL after a bound) when the block ends."""
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
        )
    try:
        for port in ports.values():
            wait_for_port(port, proc)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(_STOP_TIMEOUT)
