"""fetchmail in multidrop mode collects nosend's outbound queue over POP3.

With ``queue_drop_mailbox`` set, logging in as that mailbox shows the outbound queue as a
mail drop, one message per pending recipient with ``Return-Path:`` and
``X-Envelope-To:`` (see ``nosend_store.queue_drop``). A stock fetchmail with
``envelope "X-Envelope-To"`` then hands each copy to the right local user, and deleting
it at QUIT marks that recipient delivered: the queue empties.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import DOMAIN, ServerFactory

pytestmark = pytest.mark.interop


def test_fetchmail_multidrop_empties_the_outbound_queue(
    nosend_factory: ServerFactory, tmp_path: Path
) -> None:
    fetchmail = require_tool("fetchmail")
    server = nosend_factory(services=("smtp", "pop3"), queue_drop_mailbox="bob")
    assert server.tls is not None
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        refused = smtp.sendmail(
            f"skipper@{DOMAIN}",
            ["friend@remote.example", "other@elsewhere.example", f"alice@{DOMAIN}"],
            b"Subject: from the yacht\r\n\r\nAll well on board.\r\n.dot line\r\n",
        )
    assert refused == {}
    assert server.queue_files() != []
    assert len(server.wait_for_messages("alice", 1)) == 1  # the local copy is delivered

    out = tmp_path / "out"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll localhost protocol pop3 port {server.port('pop3')}\n"
        '  envelope "X-Envelope-To" localdomains remote.example elsewhere.example\n'
        f'  user "bob" there with password "{server.users["bob"]}" to * here\n'
        f'  sslproto tls1.2+ sslcertck sslcertfile "{server.tls.cert}" nokeep\n'
        # %T: the local name fetchmail chose from the envelope header.
        f"  mda \"/bin/sh -c 'cat > {out}/%T.$$'\"\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [fetchmail, "-f", str(rc), "-i", str(tmp_path / "ids"),
         "--pidfile", str(tmp_path / "pid"), "--nosyslog", "-v"],
        capture_output=True, timeout=30,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)},
    )  # fmt: skip
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, output

    # One MDA run per recipient, each named after its envelope recipient.
    delivered = {p.name.rsplit(".", 1)[0]: p.read_bytes() for p in out.iterdir()}
    assert set(delivered) == {"friend@remote.example", "other@elsewhere.example"}, output
    for message in delivered.values():
        assert b"Subject: from the yacht" in message
        assert message.endswith(b"\n\nAll well on board.\n.dot line\n")
    # Every recipient delivered: no queue entry is left, only the drop's lock file.
    assert [p.name for p in server.queue_files()] in ([], ["drop.lock"]), server.queue_files()
