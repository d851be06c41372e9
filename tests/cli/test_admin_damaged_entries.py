"""Audit: the queue commands with an entry whose envelope.json is spoilt."""

from __future__ import annotations

from pathlib import Path

import pytest

from nosend_store.config import load_config
from nosend_store.queue import Envelope, OutboundQueue
from tests.cli.test_admin import cfg, run  # noqa: F401  (fixture)


def test_queue_list_and_show_name_an_unreadable_entry(
    cfg: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = ("--config", str(cfg))
    queue = OutboundQueue(load_config(cfg).server.queue_dir)
    bad = queue.enqueue(Envelope.simple("a@yacht.example", ["b@x.org"]), [b"S: 1\r\n\r\nx\r\n"])
    good = queue.enqueue(Envelope.simple("a@yacht.example", ["c@x.org"]), [b"S: 2\r\n\r\ny\r\n"])
    (Path(queue.path) / "active" / bad / "envelope.json").write_bytes(b"{not json")
    status, out, err = run(capsys, monkeypatch, "queue", "list", *c)
    assert status == 0 and good in out and bad not in out
    assert "unreadable" in err and bad in err
    status, out, err = run(capsys, monkeypatch, "queue", "show", bad, *c)
    assert status != 0 and "unreadable" in err and "Traceback" not in err


def test_config_check_warns_about_a_secret_file_others_can_read(
    cfg: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = cfg.parent / "smarthost.secret"
    secret.write_text("s3cret-Upstream\n")
    secret.chmod(0o644)
    cfg.write_text(
        cfg.read_text()
        + "\n[account up]\ntype = smtp\nhost = smtp.example.net\nuser = u\n"
        + f"secret_file = {secret}\n"
    )
    status, out, err = run(capsys, monkeypatch, "config", "check", "--config", str(cfg))
    assert status == 0 and "OK" in out
    assert "secret_file of [account up]" in err and "chmod 600" in err
    assert "s3cret-Upstream" not in out + err
    secret.chmod(0o600)
    status, out, err = run(capsys, monkeypatch, "config", "check", "--config", str(cfg))
    assert status == 0 and err == ""
