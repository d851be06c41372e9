"""Invariant 3 on the seed system's relay path: a copy that fetchmail (multidrop, reading
the queue drop over our own POP3 server) could not hand on stays queued for that recipient.
The happy path is in test_fetchmail_multidrop.py.

``[server] queue_drop_mailbox = bob`` makes bob's POP3 login open the outbound queue: one
copy per recipient with ``Return-Path:`` and ``X-Envelope-To:``. fetchmail hands each copy
to an MDA by the envelope recipient it found (``%T``); a copy it deletes leaves the queue
for that recipient only.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
from pathlib import Path

import pytest

from nosend_store.queue import OutboundQueue, QueueEntry
from tests.conftest import require_tool
from tests.interop.conftest import NosendServer, ServerFactory

pytestmark = pytest.mark.interop

BODY = b"Subject: out\r\n\r\nhello world\r\n.leading dot\r\n"


def fetchmail_relay(server: NosendServer, tmp_path: Path, mda: str) -> str:
    fetchmail = require_tool("fetchmail")
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 with proto POP3 port {server.port('pop3')}\n"
        "  no dns\n"
        '  envelope "X-Envelope-To"\n'
        "  localdomains outside.example elsewhere.example\n"
        f'  user "bob" there with password "{server.users["bob"]}" is * here\n'
        "  options no keep fetchall sslproto ''\n"
        f'  mda "{mda}"\n'
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [fetchmail, "-N", "-v", "-f", str(rc), "--pidfile", str(tmp_path / "fm.pid")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    return result.stdout + result.stderr


def queued_entries(server: NosendServer) -> list[QueueEntry]:
    return OutboundQueue(server.data_dir / "queue").entries()


def test_copy_fetchmail_could_not_hand_on_stays_queued(
    nosend_factory: ServerFactory, tmp_path: Path
) -> None:
    server = nosend_factory(tls=False, queue_drop_mailbox="bob")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        smtp.sendmail(f"alice@{server.domain}", ["x@outside.example", "y@elsewhere.example"], BODY)
    out = tmp_path / "out"
    out.mkdir()
    # EX_TEMPFAIL for y: fetchmail must not delete that copy, so it must stay queued.
    mda = f"/bin/sh -c 'test %T = y@elsewhere.example && exit 75; cat > {out}/%T'"
    log = fetchmail_relay(server, tmp_path, mda)
    assert os.listdir(out) == ["x@outside.example"], log
    [entry] = queued_entries(server)
    assert [(r.address, r.state) for r in entry.recipients] == [
        ("x@outside.example", "delivered"),
        ("y@elsewhere.example", "pending"),
    ]
