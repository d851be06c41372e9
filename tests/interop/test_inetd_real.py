"""``nosend inetd`` serving real mail sessions under real super-servers.

socat (``TCP-LISTEN,fork`` + ``EXEC:``: a socketpair on stdin/stdout) and openbsd-inetd
(a private ``inetd.conf`` on free ports, debug mode in the foreground; the socket on
fds 0, 1 and 2) start one ``nosend inetd SERVICE`` per connection. Real clients deliver
and retrieve through them, STARTTLS/STLS included, and a dropped connection under inetd
keeps the same guarantees as under ``nosend serve``.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import (
    DOMAIN,
    SAMPLE_MESSAGES,
    NosendServer,
    RawPeer,
    SocatInetd,
    TLSFiles,
    build_server,
    free_port,
    superserver,
)
from tests.interop.test_fetchmail import run_fetchmail
from tests.interop.test_swaks import swaks

pytestmark = pytest.mark.interop

ALICE = f"alice@{DOMAIN}"


@pytest.fixture
def configured(tmp_path: Path, tls_files: TLSFiles) -> NosendServer:
    """A mail.cfg and data directory; no ``nosend serve`` runs."""
    root = tmp_path / "cfg"
    root.mkdir()
    return build_server(root, tls_files, ("smtp", "pop3"))


def through(server: NosendServer, **ports: int) -> NosendServer:
    """The same configuration, reached on the super-server's ports."""
    return dataclasses.replace(server, ports={**server.ports, **ports})


def test_socat_smtp_starttls_pipelining_delivers(
    configured: NosendServer,
    socat_inetd_factory: Callable[[NosendServer, str], SocatInetd],
) -> None:
    inetd = socat_inetd_factory(configured, "smtp")
    for n in range(2):  # fork: one process per connection
        code, out = swaks(
            through(configured, smtp=inetd.port),
            "--tls", "--tls-verify", "--pipeline",
            "--to", ALICE, "--from", "friend@remote.example",
            "--header", f"Subject: via socat {n}",
        )  # fmt: skip
        assert code == 0, out + inetd.log()
    messages = configured.wait_for_messages("alice", 2)
    subjects = sorted(m.split(b"\nSubject: ")[1].split(b"\n")[0] for m in messages)
    assert subjects == [b"via socat 0", b"via socat 1"]
    assert all(b"with ESMTPS" in m for m in messages)  # STARTTLS over the socketpair


def test_socat_pop3_stls_fetch_and_delete(
    configured: NosendServer,
    socat_inetd_factory: Callable[[NosendServer, str], SocatInetd],
    tmp_path: Path,
) -> None:
    for message in SAMPLE_MESSAGES:
        configured.deliver_directly("alice", message)
    inetd = socat_inetd_factory(configured, "pop3")
    work = tmp_path / "fetch"
    work.mkdir()
    code, fetched, output = run_fetchmail(through(configured, pop3=inetd.port), work, keep=False)
    assert code == 0, output + inetd.log()
    assert len(fetched) == len(SAMPLE_MESSAGES)
    assert sorted(m[m.index(b"Subject:") :] for m in fetched) == sorted(
        m[m.index(b"Subject:") :] for m in SAMPLE_MESSAGES
    )
    assert configured.messages("alice") == []


def test_socat_disconnects_keep_the_guarantees(
    configured: NosendServer,
    socat_inetd_factory: Callable[[NosendServer, str], SocatInetd],
) -> None:
    configured.deliver_directly("bob", SAMPLE_MESSAGES[0])
    smtp = socat_inetd_factory(configured, "smtp")
    pop3 = socat_inetd_factory(configured, "pop3")
    # A body cut off in the middle: nothing delivered, nothing left in tmp/.
    with RawPeer(("127.0.0.1", smtp.port)) as peer:
        assert peer.reply()[0] == 220
        assert peer.smtp("EHLO client.test")[0] == 250
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        peer.send(b"Subject: cut\r\n\r\n" + b"half a message\r\n" * 5000)
    # DELE without QUIT: nothing deleted.
    with RawPeer(("127.0.0.1", pop3.port)) as peer:
        assert peer.line().startswith(b"+OK")
        assert peer.pop3("USER bob").startswith(b"+OK")
        assert peer.pop3(f"PASS {configured.users['bob']}").startswith(b"+OK")
        assert peer.pop3("DELE 1").startswith(b"+OK")
    # Each inetd child logs its session's end after the clean-up (the cut message's
    # tmp/ file removed): wait for both instead of guessing how long that takes.
    deadline = time.monotonic() + 30
    while not all(" event=disconnect " in inetd.log() for inetd in (smtp, pop3)):
        assert time.monotonic() < deadline, smtp.log() + pop3.log()
        time.sleep(0.05)
    assert configured.messages("alice") == []
    assert configured.tmp_files("alice") == []
    assert len(configured.messages("bob")) == 1


# -- openbsd-inetd ----------------------------------------------------------------------


@pytest.fixture
def openbsd_inetd(configured: NosendServer, tmp_path: Path) -> Iterator[dict[str, int]]:
    """openbsd-inetd in debug mode with smtp and pop3 lines for ``nosend inetd``."""
    inetd = require_tool("inetd")
    user = pwd.getpwuid(os.getuid()).pw_name
    ports = {"smtp": free_port(), "pop3": free_port()}
    lines = []
    for service, port in ports.items():
        log = tmp_path / f"inetd-{service}.log"
        args = f"python3 -m nosend inetd {service} --config {configured.config_path}"
        lines.append(
            f"127.0.0.1:{port} stream tcp nowait {user} {sys.executable} {args} --log-file {log}"
        )
    conf = tmp_path / "inetd.conf"
    conf.write_text("\n".join(lines) + "\n")
    # -d: debug mode, stays in the foreground and logs to the stderr file.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with superserver([inetd, "-d", str(conf)], ports, tmp_path / "inetd.err", env):
        yield ports


def test_openbsd_inetd_smtp_then_pop3_round_trip(
    configured: NosendServer, openbsd_inetd: dict[str, int], tmp_path: Path
) -> None:
    server = through(configured, **openbsd_inetd)
    code, out = swaks(
        server,
        "--tls", "--tls-verify",
        "--to", ALICE, "--from", "friend@remote.example",
        "--header", "Subject: through inetd",
        "--body", "Round trip.\n.dot line\n",
    )  # fmt: skip
    assert code == 0, out
    assert len(configured.wait_for_messages("alice", 1)) == 1

    work = tmp_path / "fetch"
    work.mkdir()
    code, fetched, output = run_fetchmail(server, work, keep=False)
    assert code == 0, output
    assert len(fetched) == 1
    assert b"Subject: through inetd" in fetched[0]
    assert b"\n\nRound trip.\n.dot line\n" in fetched[0]
    assert configured.messages("alice") == []
    # The log went to --log-file, never to fd 2 (which is the socket under inetd): the
    # exact replies above prove the client saw no stray log line.
    log = (tmp_path / "inetd-smtp.log").read_text()
    assert "event=accepted" in log


def test_openbsd_inetd_refuses_cleanly_when_mail_cfg_is_broken(
    configured: NosendServer, openbsd_inetd: dict[str, int]
) -> None:
    configured.config_path.write_text("[server]\nthis is not valid\n")
    with socket.create_connection(("127.0.0.1", openbsd_inetd["smtp"]), timeout=10) as s:
        greeting = s.recv(512)
    assert greeting.startswith(b"421 "), greeting
    with socket.create_connection(("127.0.0.1", openbsd_inetd["pop3"]), timeout=10) as s:
        greeting = s.recv(512)
    assert greeting.startswith(b"-ERR "), greeting
