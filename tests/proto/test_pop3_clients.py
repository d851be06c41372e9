"""Real POP3 clients (fetchmail, mpop) fetch and delete through the engine over 127.0.0.1.

fetchmail is the client the seed system was built around and it checks that what RETR
sends matches the sizes LIST announced; mpop is a strict modern client. Each test starts
the one-connection driver of test_pop3_poplib, runs the client with its own files under
tmp_path, and checks what it delivered and what the engine was told to delete.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.proto.test_pop3_poplib import Server
from tests.proto.test_pop3_support import MESSAGES, PASSWORD, USER, config, normalise

pytestmark = pytest.mark.interop


def body_of(content: bytes) -> bytes:
    """The message as a client stores it: the RETR text with LF line ends."""
    return normalise(content).replace(b"\r\n", b"\n")


def test_fetchmail_fetches_and_deletes(tmp_path: Path) -> None:
    fetchmail = require_tool("fetchmail")
    srv = Server(config())
    out = tmp_path / "delivered"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"set no syslog\n"
        f"poll 127.0.0.1 port {srv.port} protocol pop3 auth password timeout 10\n"
        f'  user "{USER}" password "{PASSWORD}" sslproto "" no keep fetchall\n'
        f"  mda \"/bin/sh -c 'cat >> {out}; echo ==== >> {out}'\"\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    result = subprocess.run(
        [fetchmail, "-f", str(rc), "--nodetach", "-v", "--pidfile", str(tmp_path / "pid")],
        env=env, capture_output=True, timeout=20, text=True, check=False,
    )  # fmt: skip
    srv.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 messages" in result.stdout + result.stderr
    delivered = out.read_bytes()
    for content in MESSAGES:
        # fetchmail adds its Received header on top; the rest is the message unchanged.
        assert body_of(content).split(b"\n", 1)[1] in delivered
    assert srv.session.applied is not None
    assert [m.uid for m in srv.session.applied] == ["uid-1", "uid-2", "uid-3"]


def test_mpop_fetches_and_deletes(tmp_path: Path) -> None:
    mpop = require_tool("mpop")
    srv = Server(config())
    mbox = tmp_path / "mbox"
    mbox.touch()
    result = subprocess.run(
        [mpop, "--host=127.0.0.1", f"--port={srv.port}", "--tls=off", "--auth=user",
         f"--user={USER}", f"--passwordeval=echo {PASSWORD}", "--keep=off",
         f"--delivery=mbox,{mbox}", f"--uidls-file={tmp_path / 'uidls'}", "--timeout=10",
         "--only-new=off", "-q"],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True, timeout=20, text=True, check=False,
    )  # fmt: skip
    srv.join()
    assert result.returncode == 0, result.stdout + result.stderr
    delivered = mbox.read_bytes()
    assert delivered.count(b"\nFrom ") + delivered.startswith(b"From ") == 3
    assert b"Subject: three\n\n>.\n" not in delivered  # unstuffed, not mangled
    assert b"\n.dot line\n" in delivered
    assert srv.session.applied is not None
    assert len(srv.session.applied) == 3
