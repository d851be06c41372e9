"""A running ``nosend serve`` picks up a mailbox added with ``nosend user add`` on SIGHUP,
and the mailbox's opt-in shared secret makes CRAM-MD5 (swaks) and APOP / CRAM-MD5 (mpop)
work against it.

Before the reload the new address is refused at RCPT (550 5.1.1); after it, mail for it
is delivered and its owner can submit and fetch with challenge-response logins.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import DOMAIN, NosendServer, ServerFactory
from tests.interop.test_swaks import swaks

pytestmark = pytest.mark.interop

CAROL = f"carol@{DOMAIN}"
PASSWORD = "carol-Secret-3"


def add_user_and_reload(server: NosendServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nosend", "user", "add", "carol", "--password-stdin",
         "--shared-secret", "--config", str(server.config_path)],
        input=f"{PASSWORD}\n".encode(), capture_output=True, timeout=30,
        env={**os.environ, "HOME": str(server.root)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert PASSWORD.encode() not in result.stdout + result.stderr
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def run_mpop(server: NosendServer, auth: str) -> tuple[int, str]:
    mpop = require_tool("mpop")
    work = server.root / f"mpop-{auth}"
    local = work / "Local"
    for sub in ("tmp", "new", "cur"):
        (local / sub).mkdir(parents=True, exist_ok=True)
    conf = work / "mpoprc"
    conf.write_text(
        "account carol\n"
        "host 127.0.0.1\n"
        f"port {server.port('pop3')}\n"
        "tls off\n"  # challenge-response: no password crosses the wire
        f"auth {auth}\n"
        "user carol\n"
        f"password {PASSWORD}\n"
        f"uidls_file {work / 'uidls'}\n"
        f"delivery maildir {local}\n"
        "keep on\n"
    )
    conf.chmod(0o600)
    result = subprocess.run(
        [mpop, "-C", str(conf), "carol"], capture_output=True, timeout=30,
        env={"PATH": os.environ["PATH"], "HOME": str(work)},
    )  # fmt: skip
    fetched = [p.read_bytes() for p in (local / "new").iterdir()]
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, output + server.log()[-2000:]
    return len(fetched), b"".join(fetched).decode(errors="replace")


def test_user_added_while_running_gets_mail_after_sighup(nosend_factory: ServerFactory) -> None:
    server = nosend_factory(services=("smtp", "submission", "pop3"))
    code, out = swaks(server, "--to", CAROL, "--from", "a@remote.example")
    assert code == 24 and "550 5.1.1" in out, out  # no such user yet

    add_user_and_reload(server)
    code, out = swaks(
        server, "--to", CAROL, "--from", "a@remote.example", "--header", "Subject: welcome"
    )
    assert code == 0, out
    assert b"Subject: welcome" in server.wait_for_messages("carol", 1)[0]

    # CRAM-MD5 on submission, over plain loopback: only a digest crosses the wire.
    code, out = swaks(
        server,
        "--auth", "CRAM-MD5", "--auth-user", "carol", "--auth-password", PASSWORD,
        "--to", CAROL, "--from", CAROL, "--header", "Subject: note to self",
        service="submission",
    )  # fmt: skip
    assert code == 0, out
    assert "235 " in out
    assert len(server.wait_for_messages("carol", 2)) == 2

    for auth in ("apop", "cram-md5"):
        count, text = run_mpop(server, auth)
        assert count == 2, text
        assert "Subject: welcome" in text and "Subject: note to self" in text
    assert PASSWORD not in server.log()
