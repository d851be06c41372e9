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
