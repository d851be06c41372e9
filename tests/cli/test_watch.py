"""The scheduler in a process: ``nosend watch`` and ``nosend serve`` with
``[schedule] scheduler = yes`` start a cycle once queued mail has waited ``queue_age``,
and bring down at start a link a killed cycle left up."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_check import NOTE, Boat, boat, wait_for  # noqa: F401 -- fixture
from tests.link.link_scripts import free_port

pytestmark = pytest.mark.interop

SCHEDULE = "[schedule]\nqueue_age = 1s\nmin_interval = 0\n"


def start(site: Boat, command: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = site.root / f"{command}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nosend", command, "--config", str(site.config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    return proc, log


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def stale_marker(site: Boat) -> Path:
    """A link-up marker as a cycle killed with its link up leaves it."""
    done = site.root / "stale.log"
    down = [sys.executable, str(site.root / "note.py"), str(done), "stale-down"]
    (site.root / "note.py").write_text(NOTE)
    state = site.data / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "link-up.json").write_text(json.dumps(
        {"links": [{"link": "old", "down": down, "since": 1.0e9, "pid": 99999}]}))
    return done


@pytest.mark.parametrize("command", ["watch", "serve"])
def test_the_scheduler_runs_a_cycle_once_mail_has_waited_queue_age(
    boat: Boat, command: str  # noqa: F811 -- the fixture
) -> None:
    boat.schedule = SCHEDULE
    boat.write()
    if command == "serve":
        # serve needs something to listen on; the boat's own SMTP port.
        text = boat.config.read_text().replace(
            "smtp_listen =", f"smtp_listen = 127.0.0.1:{free_port()}", 1)
        boat.config.write_text(text)
    stale = stale_marker(boat)
    proc, log = start(boat, command)
    try:
        # At start: the link a killed cycle left up is brought down and billed.
        wait_for(lambda: stale.exists() and stale.read_text().split() == ["stale-down"])
        wait_for(lambda: [r["result"] for r in boat.ledger()] == ["stale link"])
        assert not (boat.data / "state" / "link-up.json").exists()
        # Nothing waits: no cycle (the link was never dialled).
        assert boat.link_log() == []
        boat.enqueue(1)
        wait_for(lambda: len(boat.ledger()) == 2)
        assert boat.queued() == []
        assert any(b"Subject: note 1" in m for m in boat.shore.mailbox("bob"))
        record = boat.ledger()[1]
        assert record["result"] == "done" and record["link"] == "sat"
        assert record["messages_out"] == 1
        assert boat.link_log() == ["up", "down"]
    finally:
        status = stop(proc)
    assert status == 0, log.read_text()
    text = log.read_text()
    assert "starting a cycle: mail has waited" in text, text
