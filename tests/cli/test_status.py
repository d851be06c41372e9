"""``nosend status`` and ``nosend status --json`` on a data folder with mail, held mail
and a ledger."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, tzinfo
from decimal import Decimal
from pathlib import Path

import pytest

import nosend.status
from nosend_link.cycle_lock import LinkUp, UpMarker
from nosend_link.ledger import CycleRecord, Ledger, UserShare
from nosend_store.fetch_state import FetchState
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import Envelope, OutboundQueue
from tests.cli.test_admin import run

HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"


def write_config(tmp_path: Path, schedule: str = "") -> Path:
    path = tmp_path / "mail.cfg"
    path.write_text(f"""\
[server]
hostname = mail.yacht.example
data_dir = data

[domains]
yacht.example

[mailbox captain]
password = {HASH}

[schedule]
urgent = captain
{schedule}

[link iridium]
up = pon iridium
down = poff iridium
cost_per_minute = 1.20
budget = 50
max_size = 2k

[link marina]
priority = 10

[account shore]
type = smtp
host = smtp.example.net

[account home]
type = pop3
host = pop.example.net
user = yacht
secret = {{PLAIN.B64}}cA==
deliver_to = captain
""")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> float:
    """The time ``nosend status`` takes for now: noon on the 15th of this month.

    The site's cycles "this month" started an hour and half an hour before now; with the
    real clock they would fall in last month during the first hour of a month and fail
    the month's totals. Mid-month, they are this month's whenever the test runs."""
    real = datetime.fromtimestamp(time.time()).astimezone()
    pinned = real.replace(day=15, hour=12, minute=0, second=0, microsecond=0).timestamp()

    class PinnedDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> PinnedDatetime:
            return cls.fromtimestamp(pinned, tz)

    monkeypatch.setattr(nosend.status, "datetime", PinnedDatetime)
    return pinned


@pytest.fixture
def site(tmp_path: Path, now: float) -> Path:
    """A data folder: two queued messages (one urgent), a held message, a delivered one,
    and a ledger with two cycles this month and one far back."""
    cfg = write_config(tmp_path, "queue_age = no")  # so urgent mail is what triggers
    data = tmp_path / "data"
    queue = OutboundQueue(data / "queue", hostname="t", clock=lambda: now - 7200)
    queue.enqueue(Envelope.simple("captain@yacht.example", ["a@example.net"]),
                  [b"Subject: one\r\nX-Priority: 1\r\n\r\nhelp\r\n"])
    OutboundQueue(data / "queue", hostname="t", clock=lambda: now - 60).enqueue(
        Envelope.simple("captain@yacht.example", ["b@example.net"]),
        [b"Subject: two\r\n\r\n" + b"x" * 3000 + b"\r\n"])
    with FetchState.open(data, "home") as state:
        state.hold("big-1", 4_000_000)
    MaildirMailbox(data / "mail" / "captain").deliver_bytes(b"Subject: hi\n\nhello\n")
    (data / "state").mkdir()
    ledger = Ledger(data / "state" / "cycles.jsonl")
    ledger.append(CycleRecord(start=now - 400 * 86400, duration=60, result="done",
                              link="iridium", online_seconds=60, cost=Decimal("99")))
    ledger.append(CycleRecord(
        start=now - 3600, duration=130, result="done", link="iridium", online_seconds=120,
        bytes_up=20_000, bytes_down=30_000, messages_out=2, messages_in=3,
        cost=Decimal("2.40"), users=(UserShare("captain", 20_000, 30_000, Decimal("2.40")),)))
    ledger.append(CycleRecord(
        start=now - 1800, duration=10, result="partly", link="marina", online_seconds=10,
        bytes_up=1000, cost=Decimal(0), error="deferred: 451 try later"))
    return cfg


def test_status_for_a_person(
    site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run(capsys, monkeypatch, "status", "--config", str(site))
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("queue: 2 messages, 3.1 kB, oldest ")
    assert lines[0].endswith(", 0 waiting to retry, 1 urgent")
    # The 3 kB message waits for a link whose max_size takes it.
    assert ("  too large for link iridium (max_size 2.0 kB): 1 message, 3.0 kB; they wait "
            "for a link that takes them") in lines
    assert "held on home: 1 message, 4.0 MB (nosend held list)" in lines
    assert "mailboxes: captain 1 (22 B)" in lines
    assert "link in use: auto" in lines
    recent = lines.index("recent cycles (newest first):")
    assert "  marina  partly  1.0 kB  0.00  deferred: 451 try later" in lines[recent + 1]
    assert "  iridium  done  50.0 kB  2.40" in lines[recent + 2]
    assert any(line.endswith(": 2.40 in all") for line in lines)
    assert any(line.startswith("  link iridium: 1 cycle(s), 2 min 00 s online, 50.0 kB, 2.40, "
                               "47.60 of 50 left") for line in lines)
    assert "  user captain: 20.0 kB sent, 30.0 kB received, 2.40" in lines
    # Urgent mail from the captain: the next cycle is due at once (the last cycle
    # started half an hour ago, longer than min_interval).
    assert lines[-1].startswith("next cycle: ") and "(urgent mail waits)" in lines[-1]


def test_status_json(
    site: Path, now: float, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run(capsys, monkeypatch, "status", "--json", "--config", str(site))
    assert (status, err) == (0, "")
    data = json.loads(out)
    assert data["queue"]["count"] == 2 and data["queue"]["urgent"] == 1
    assert data["queue"]["due"] == 2 and data["queue"]["bytes"] > 3000
    [over] = data["queue"]["too_large"]
    assert (over["link"], over["max_size"], over["count"]) == ("iridium", 2048, 1)
    oldest = datetime.fromisoformat(data["queue"]["oldest"])
    assert oldest.timestamp() == now - 7200
    assert data["held"] == [{"account": "home", "count": 1, "bytes": 4_000_000,
                             "fetch_requested": 0}]
    assert data["mailboxes"] == [{"name": "captain", "count": 1, "bytes": 22}]
    assert data["link_in_use"] == "auto" and data["links_up"] == []
    links = {entry["name"]: entry for entry in data["links"]}
    assert links["iridium"]["month"]["cost"] == "2.40"
    assert links["iridium"]["budget"] == {"amount": "50", "unit": "money", "left": "47.60"}
    assert links["marina"]["budget"] is None and links["marina"]["usable"] is True
    # Each link's own latest cycles, newest first, the one of last year included.
    assert [c["result"] for c in links["iridium"]["recent_cycles"]] == ["done", "done"]
    assert links["iridium"]["recent_cycles"][0]["cost"] == "2.40"
    assert [c["error"] for c in links["marina"]["recent_cycles"]] == ["deferred: 451 try later"]
    assert [c["result"] for c in data["recent_cycles"]] == ["partly", "done", "done"]
    assert data["recent_cycles"][1]["bytes_down"] == 30_000
    assert data["month"]["cost"] == "2.40"
    assert data["month"]["users"] == [
        {"user": "captain", "bytes_out": 20_000, "bytes_in": 30_000, "cost": "2.40"}]
    assert data["next_cycle"]["reason"].startswith("urgent mail waits")
    assert data["next_cycle"]["scheduler"] is True


def test_status_shows_a_link_left_up_and_a_disabled_scheduler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, "link = iridium\nscheduler = no")
    state = tmp_path / "data" / "state"
    state.mkdir(parents=True)
    UpMarker(state).add(LinkUp("iridium", ("poff", "iridium"), time.time() - 60, 4242))
    status, out, _ = run(capsys, monkeypatch, "status", "--config", str(cfg))
    assert status == 0
    assert "queue: empty" in out and "recent cycles: none" in out
    assert "link in use: iridium" in out
    assert "link up now: iridium since " in out and "(pid 4242)" in out
    assert "scheduler = no" in out
    data = json.loads(run(capsys, monkeypatch, "status", "--json", "--config", str(cfg))[1])
    assert data["links_up"][0]["pid"] == 4242 and data["next_cycle"]["scheduler"] is False
    # Nothing was created by looking.
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["state"]


def test_with_nothing_queued_and_no_schedule_status_says_what_fetches_the_accounts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path)
    status, out, _ = run(capsys, monkeypatch, "status", "--config", str(cfg))
    assert status == 0
    lines = out.splitlines()
    at = lines.index("next cycle: none (no outbound mail waits and no schedule)")
    assert lines[at + 1] == ("  (account home: fetched by nosend check, or by a [schedule] "
                             "times or every)")
    # with a schedule there is a next cycle, and no such line
    cfg = write_config(tmp_path, "every = 6h")
    out = run(capsys, monkeypatch, "status", "--config", str(cfg))[1]
    assert "next cycle: none" not in out and "fetched by nosend check" not in out


def test_status_of_a_broken_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "mail.cfg"
    cfg.write_text("[server]\nhostname = h.example\ndata_dir = d\n[schedule]\nlink = ghost\n")
    status, out, err = run(capsys, monkeypatch, "status", "--config", str(cfg))
    assert status == 1 and out == ""
    assert err == f"nosend: {cfg}:5: link: no [link ghost] (auto, cost or a link's name)\n"
