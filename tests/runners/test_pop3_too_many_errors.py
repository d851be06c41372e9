"""POP3: after too many bad commands the session says so before closing (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.testing.harness import Harness
from tests.runners.session_support import LOOPBACK, make_config

pytestmark = pytest.mark.anyio


async def test_too_many_bad_commands_end_with_a_final_err(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        assert (await h.read_line()).startswith(b"+OK")
        await h.send(b"BOGUS\r\n" * 10)
        lines = (await h.wait_closed()).splitlines()
    # Each bad command got its own -ERR; one more line says why the connection ends.
    assert len(lines) == 11 and all(line.startswith(b"-ERR ") for line in lines)
    assert lines[-1] == b"-ERR too many errors, closing"
