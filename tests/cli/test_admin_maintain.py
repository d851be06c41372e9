"""``nosend queue maintain``: one housekeeping pass from the command line (cron under
inetd, where no server process runs the loop)."""

from __future__ import annotations

import email
import email.message
import email.policy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nosend_store.config import load_config
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import Envelope, OutboundQueue
from tests.cli.test_admin import ORIGINAL, run

DAY = 86400.0
MESSAGE = b"From: captain@yacht.example\r\nSubject: Position\r\n\r\nAt sea.\r\n"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mail.cfg"
    path.write_text(ORIGINAL)
    os.chmod(path, 0o600)
    monkeypatch.setenv("NOSEND_CONFIG", str(tmp_path / "not-this-one.cfg"))
    return path


def queue_old_message(cfg: Path, sender: str, age: float = 6 * DAY) -> str:
    config = load_config(cfg)
    queue = OutboundQueue(config.server.queue_dir, clock=lambda: time.time() - age)
    return queue.enqueue(Envelope.simple(sender, ["friend@example.net"]), [MESSAGE])


def test_maintain_expires_reports_and_cleans_tmp(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(cfg)
    queue_old_message(cfg, "captain@yacht.example")
    young = queue_old_message(cfg, "captain@yacht.example", age=3600)
    box = MaildirMailbox(config.maildir_path("captain"))
    stale = Path(box.path, "tmp", "crashed.1")
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 2 * DAY, time.time() - 2 * DAY))

    status, out, err = run(capsys, monkeypatch, "queue", "maintain", "--config", str(cfg))
    assert (status, err) == (0, "")
    assert out == "expired 1, reports sent 1, reports failed 0, tmp files removed 1\n"
    assert [e.id for e in OutboundQueue(config.server.queue_dir).entries()] == [young]
    assert list(Path(box.path, "tmp").iterdir()) == []

    [entry] = box.list_messages()
    with box.open_message(entry.key) as f:
        report = email.message_from_binary_file(f, policy=email.policy.default)
    assert isinstance(report, email.message.EmailMessage)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status_part = list(report.iter_parts())[1]
    assert status_part.get_content_type() == "message/delivery-status"
    groups = status_part.get_payload()
    assert isinstance(groups, list)
    recipient = groups[1]
    assert recipient["Action"] == "failed" and recipient["Status"] == "4.4.7"

    # Run again: nothing left to do.
    status, out, _ = run(capsys, monkeypatch, "queue", "maintain", "--config", str(cfg))
    assert (status, out) == (
        0,
        "expired 0, reports sent 0, reports failed 0, tmp files removed 0\n",
    )
    assert len(box.list_messages()) == 1


def test_maintain_on_a_fresh_install_creates_nothing(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run(capsys, monkeypatch, "queue", "maintain", "--config", str(cfg))
    assert (status, err) == (0, "")
    assert out.startswith("expired 0, reports sent 0")
    assert not (cfg.parent / "data").exists()


def test_maintain_with_a_bad_config_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("[server]\nhostname = x\n")
    status, out, err = run(capsys, monkeypatch, "queue", "maintain", "--config", str(bad))
    assert status == 1 and out == ""
    assert err.startswith(f"nosend: {bad}:1:") and "data_dir" in err
    assert run(capsys, monkeypatch, "queue", "maintain", "--bogus")[0] == 2


def test_maintain_warns_when_a_report_cannot_be_delivered_yet(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(cfg)
    qid = queue_old_message(cfg, "captain@yacht.example")
    blocker = config.maildir_path("captain")
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a Maildir")
    status, out, err = run(capsys, monkeypatch, "queue", "maintain", "--config", str(cfg))
    assert status == 0
    assert out == "expired 1, reports sent 0, reports failed 1, tmp files removed 0\n"
    assert err.startswith("warning: report: ") and "retried at the next pass" in err
    assert [e.id for e in OutboundQueue(config.server.queue_dir).entries()] == [qid]
    # As cron sees it: the warning once, not again as a raw log line.
    done = nosend("queue", "maintain", "--config", str(cfg))
    assert done.returncode == 0 and "reports failed 1" in done.stdout
    [line] = done.stderr.splitlines()
    assert line.startswith("warning: report: ")


def nosend(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nosend", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "NOSEND_CONFIG": "/nonexistent"},
    )


def test_maintain_as_cron_runs_it(cfg: Path) -> None:
    queue_old_message(cfg, "", age=6 * DAY)  # null sender: expires, reported to no one
    done = nosend("queue", "maintain", "--config", str(cfg))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "expired 1, reports sent 0, reports failed 0, tmp files removed 0\n"
    assert OutboundQueue(load_config(cfg).server.queue_dir).entries() == []
