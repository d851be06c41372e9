"""Random conversations against the real sessions in the harness: whatever a client
sends, the session answers, ends, never crashes, and leaves no half-written file."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import anyio
from hypothesis import event, example, given
from hypothesis import strategies as st

from nosend_runners.mail.backend import run_smtp as smtp_session
from nosend_runners.session.boundary import PeerInfo
from nosend_runners.testing.harness import run_script
from tests.fuzz.profiles import fuzz_settings
from tests.runners.session_support import captured_log, make_config

SMTP_PIECES = [
    b"EHLO client.example\r\n",
    b"HELO client.example\r\n",
    b"MAIL FROM:<s@remote.example>\r\n",
    b"MAIL FROM:<> SIZE=10\r\n",
    b"RCPT TO:<alice@example.test>\r\n",
    b"RCPT TO:<team@example.test>\r\n",
    b"RCPT TO:<sales@example.test>\r\n",
    b"RCPT TO:<x@remote.example>\r\n",
    b"RCPT TO:<nobody@example.test>\r\n",
    b"DATA\r\n",
    b"Subject: s\r\n\r\nbody\r\n.\r\n",
    b"line without end",
    b"\r\n.\r\n",
    b"BDAT 4\r\nabcd",
    b"BDAT 3 LAST\r\nxyz",
    b"BDAT x\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"AUTH PLAIN AGFsaWNlAGFsaWNlLVNlY3JldC0x\r\n",
    b"AUTH LOGIN\r\n",
    b"*\r\n",
    b"STARTTLS\r\n",
    b"VRFY alice\r\n",
    b"\x00\xff garbage\r\n",
    b"QUIT\r\n",
]


def _crashes(lines: list[str]) -> list[str]:
    return [line for line in lines if "session_crashed" in line or "unhandled" in line]


def _tmp_files(root: Path) -> list[str]:
    found = []
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) == "tmp":
            found += files
    return found


@fuzz_settings(40, deadline=None)
@example(
    script=[SMTP_PIECES[i] for i in (0, 2, 6, 9, 10, 2, 4, 13, 14, 24)],
    service="smtp",
    loopback=False,
)
@example(
    script=[SMTP_PIECES[i] for i in (0, 18, 3, 7, 9, 10, 24)], service="submission", loopback=True
)
@given(
    script=st.lists(st.sampled_from(SMTP_PIECES), max_size=14),
    service=st.sampled_from(["smtp", "submission"]),
    loopback=st.booleans(),
)
def test_smtp_session_survives_any_conversation(
    script: list[bytes], service: str, loopback: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        peer = PeerInfo("127.0.0.1" if loopback else "192.0.2.7", 2000)
        with captured_log() as lines:
            out = anyio.run(
                lambda: run_script(
                    smtp_session, service, [b"".join(script)], config=config, peer=peer
                )
            )
        assert out.startswith(b"220 ")
        assert all(line[:3].isdigit() for line in out.split(b"\r\n") if line)
        assert _crashes(lines) == []
        assert _tmp_files(Path(tmp) / "data") == []
        # Exactly the messages acknowledged with 250 are stored (DESIGN invariant 1).
        acknowledged = set(re.findall(rb"queued as (\S+)\r\n", out))
        stored = {
            m.group(1)
            for path in (Path(tmp) / "data").rglob("*")
            if path.is_file() and (path.parent.name == "new" or path.name == "message")
            for m in [re.search(rb"\bid ([^\s;]+)", path.read_bytes()[:400])]
            if m is not None
        }
        assert stored == acknowledged
        event(f"acknowledged {min(len(acknowledged), 2)}")
