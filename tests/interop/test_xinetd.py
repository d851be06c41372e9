"""``nosend inetd`` under xinetd, the other super-server administrators run.

Debian's xinetd conflicts with openbsd-inetd (both provide inet-superserver), so
``.ci/run`` unpacks the xinetd binary from its package into ``.ci/xinetd/`` instead of
installing it; that is the binary used here, in the foreground (``-dontfork``) with a
private configuration on free ports, stopped by its own pid.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import (
    DOMAIN,
    NosendServer,
    TLSFiles,
    build_server,
    free_port,
    superserver,
)
from tests.interop.test_fetchmail import run_fetchmail
from tests.interop.test_inetd_real import through
from tests.interop.test_swaks import swaks

pytestmark = pytest.mark.interop

UNPACKED = Path(__file__).resolve().parents[2] / ".ci" / "xinetd" / "usr" / "sbin" / "xinetd"


def xinetd_binary() -> str:
    if UNPACKED.is_file() and os.access(UNPACKED, os.X_OK):
        return str(UNPACKED)
    return require_tool("xinetd")


@pytest.fixture
def configured(tmp_path: Path, tls_files: TLSFiles) -> NosendServer:
    root = tmp_path / "cfg"
    root.mkdir()
    return build_server(root, tls_files, ("smtp", "pop3"))


@pytest.fixture
def xinetd(configured: NosendServer, tmp_path: Path) -> Iterator[dict[str, int]]:
    binary = xinetd_binary()
    ports = {"smtp": free_port(), "pop3": free_port()}
    blocks = []
    for service, port in ports.items():
        log = tmp_path / f"xinetd-{service}.log"
        blocks.append(
            f"service nosend-{service}\n{{\n"
            "    type        = UNLISTED\n"
            f"    port        = {port}\n"
            "    bind        = 127.0.0.1\n"
            "    socket_type = stream\n"
            "    protocol    = tcp\n"
            "    wait        = no\n"
            f"    user        = {os.getuid()}\n"
            f"    server      = {sys.executable}\n"
            f"    server_args = -m nosend inetd {service} --config {configured.config_path}"
            f" --log-file {log}\n"
            f"    env         = PYTHONPATH={os.pathsep.join(sys.path)}\n"
            "    instances   = 5\n"
            "}\n"
        )
    conf = tmp_path / "xinetd.conf"
    conf.write_text("\n".join(blocks))
    argv = [binary, "-dontfork", "-f", str(conf), "-pidfile", str(tmp_path / "xinetd.pid")]
    with superserver(argv, ports, tmp_path / "xinetd.err"):
        yield ports


def test_xinetd_smtp_starttls_then_pop3_round_trip(
    configured: NosendServer, xinetd: dict[str, int], tmp_path: Path
) -> None:
    server = through(configured, **xinetd)
    code, out = swaks(
        server,
        "--tls", "--tls-verify",
        "--to", f"alice@{DOMAIN}", "--from", "friend@remote.example",
        "--header", "Subject: through xinetd",
    )  # fmt: skip
    assert code == 0, out
    [message] = configured.wait_for_messages("alice", 1)
    assert b"Subject: through xinetd" in message
    assert b"with ESMTPS" in message  # STARTTLS on the socket xinetd handed us
    assert b"[127.0.0.1]" in message  # the peer address came from the socket on fd 0

    work = tmp_path / "fetch"
    work.mkdir()
    code, fetched, output = run_fetchmail(server, work, keep=False)
    assert code == 0, output
    assert len(fetched) == 1 and b"Subject: through xinetd" in fetched[0]
    assert configured.messages("alice") == []


def test_xinetd_refuses_cleanly_when_mail_cfg_is_broken(
    configured: NosendServer, xinetd: dict[str, int]
) -> None:
    configured.config_path.write_text("[server]\nthis is not valid\n")
    with socket.create_connection(("127.0.0.1", xinetd["smtp"]), timeout=10) as s:
        greeting = s.recv(512)
    assert greeting.startswith(b"421 "), greeting
