"""Random POP3 conversations against the real session in the harness: whatever a
client sends, the session answers and ends without crashing, and nothing is deleted
without DELE and QUIT."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
from hypothesis import given
from hypothesis import strategies as st

from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.session.boundary import PeerInfo
from nosend_runners.testing.harness import run_script
from nosend_store.maildir import MaildirMailbox
from tests.fuzz.profiles import fuzz_settings
from tests.runners.session_support import PASSWORDS, captured_log, make_config
from tests.runners.test_smtp_session_fuzz import _crashes

POP3_PIECES = [
    b"USER alice\r\n",
    f"PASS {PASSWORDS['alice']}\r\n".encode(),
    b"PASS wrong\r\n",
    b"STAT\r\n",
    b"LIST\r\n",
    b"UIDL 1\r\n",
    b"RETR 1\r\n",
    b"TOP 1 0\r\n",
    b"DELE 1\r\n",
    b"RSET\r\n",
    b"CAPA\r\n",
    b"STLS\r\n",
    b"AUTH PLAIN\r\n",
    b"=\r\n",
    b"NOOP\r\n",
    b"\xff\r\n",
    b"QUIT\r\n",
]


@fuzz_settings(40, deadline=None)
@given(script=st.lists(st.sampled_from(POP3_PIECES), max_size=14))
def test_pop3_session_survives_any_conversation(script: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        box = config.maildir_path("alice")
        MaildirMailbox(box).deliver([b"Subject: one\n\n.dot\n"])
        with captured_log() as lines:
            out = anyio.run(
                lambda: run_script(
                    pop3_session,
                    "pop3",
                    [b"".join(script)],
                    config=config,
                    peer=PeerInfo("127.0.0.1", 2000),
                )
            )
        assert out.startswith(b"+OK ")
        assert _crashes(lines) == []
        # Deleted only through a QUIT that followed a DELE after a good login.
        left = len(MaildirMailbox(box).list_messages())
        assert left in (0, 1)
        if b"DELE 1\r\n" not in script:
            assert left == 1
