"""mutt reads the Maildir that ``nosend serve`` delivered into over SMTP.

Mail goes in through the real server (smtplib, with dots to stuff, 8-bit text, a
multi-line header and a big body); mutt (under ``script`` for a terminal) opens the
Maildir, copies every message to an mbox, and marks them read. The mbox must hold exactly
what was sent, and a POP3 session afterwards must still list the same UIDLs: flags set by
a mail reader never change a message's identity.
"""

from __future__ import annotations

import mailbox
import os
import poplib
import smtplib
from pathlib import Path

import pytest

from tests.interop.conftest import DOMAIN, NosendServer, ServerFactory, run_mutt

pytestmark = pytest.mark.interop


# 8-bit bodies copied as they are; deletions, if any, without asking.
MUTT_EXTRA = "set charset=utf-8\nset delete=yes"

SENT = {
    "plain": b"Subject: plain\r\n\r\nHello from the mast.\r\n",
    "dots": b"Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nend\r\n",
    "folded": b"Subject: folded\r\nX-Long: first part\r\n\tsecond part\r\n\r\nbody\r\n",
    "eightbit": b"Subject: eightbit\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nK\xc3\xb8benhavn, \xc3\xa9t\xc3\xa9\r\n",
    "big": b"Subject: big\r\n\r\n" + b"".join(b"row %05d of the log\r\n" % i for i in range(20000)),
}


def uidls(server: NosendServer) -> dict[str, int]:
    pop = poplib.POP3(*server.address("pop3"), timeout=10)
    try:
        pop.user("alice")
        pop.pass_(server.users["alice"])
        listing = pop.uidl()[1]
        sizes = dict(line.decode().split() for line in pop.list()[1])
    finally:
        pop.quit()
    out = {}
    for line in listing:
        number, uidl = line.decode().split()
        out[uidl] = int(sizes[number])
    return out


def test_mutt_reads_what_smtp_delivered(nosend_factory: ServerFactory, tmp_path: Path) -> None:
    server = nosend_factory(services=("smtp", "pop3"))
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        for message in SENT.values():
            smtp.sendmail("skipper@remote.example", [f"alice@{DOMAIN}"], message)
    assert len(server.wait_for_messages("alice", len(SENT))) == len(SENT)
    before = uidls(server)

    out = tmp_path / "saved.mbox"
    run_mutt(
        server.maildir("alice"),
        f"<tag-pattern>~A<enter><copy-message>{out}<enter><clear-flag>N<sync-mailbox><quit>",
        tmp_path,
        extra=MUTT_EXTRA,
    )
    saved = {m["Subject"]: m for m in mailbox.mbox(str(out))}
    assert set(saved) == set(SENT)
    for subject, sent in SENT.items():
        got = saved[subject]
        assert got["Received"] is not None and "mx.nosend.test" in got["Received"]
        body = sent.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
        assert got.get_payload(decode=True) == body, subject
    assert saved["folded"]["X-Long"].split() == ["first", "part", "second", "part"]

    # Marked read and synced: mutt moved them to cur/ with the S flag...
    cur = sorted(os.listdir(server.maildir("alice") / "cur"))
    assert len(cur) == len(SENT) and all(":2," in n and "S" in n.split(":2,")[1] for n in cur)
    # ...and POP3 still offers them under the same UIDLs and sizes.
    assert uidls(server) == before
