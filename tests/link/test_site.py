"""nosend_link.site: plans, the schedule and what waits, from mail.cfg and the data folder."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest

from nosend_link.choice import choose
from nosend_link.ledger import CycleRecord
from nosend_link.plan import Endpoint, Hours
from nosend_link.schedule import next_cycle
from nosend_link.site import (
    QueueSnapshot,
    accounts_over,
    choice_mode,
    is_urgent,
    last_cycle,
    link_plans,
    plans_in_use,
    read_held,
    read_mailboxes,
    read_queue,
    schedule_state,
    smarthost_for,
    waiting,
)
from nosend_store.config import Config, parse_config
from nosend_store.fetch_state import FetchState
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import Envelope, OutboundQueue

HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"


def make_config(tmp_path: Path, schedule: str = "", extra: str = "") -> Config:
    return parse_config(f"""\
[server]
hostname = mail.yacht.example
data_dir = {tmp_path / "data"}

[domains]
yacht.example

[mailbox captain]
password = {HASH}

[mailbox cook]
password = {HASH}

[schedule]
{schedule}

[link marina]
priority = 10
hours = 08:00-20:00

[link iridium]
up = pon iridium
down = poff iridium
priority = 50
cost_per_minute = 1.35
max_size = 50K
rate = 2400 bit/s
budget = 100
smarthost = sat-smtp

[link gsm]
up = pon gsm
probe = 192.0.2.1:25

[account shore]
type = smtp
host = smtp.example.net
port = 587

[account sat-smtp]
type = smtp
host = relay.sat.example
port = 2525
links = iridium

[account home]
type = pop3
host = pop.example.net
user = yacht
secret = {{PLAIN.B64}}cA==
deliver_to = captain
{extra}
""", tmp_path / "mail.cfg")


def test_plans_resolve_the_probe_and_the_smarthost(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    plans = {p.name: p for p in link_plans(config)}
    assert list(plans) == ["marina", "iridium", "gsm"]
    # marina: the first smtp account usable over any link, and its probe.
    assert plans["marina"].smarthost == "shore"
    assert plans["marina"].probe == Endpoint("smtp.example.net", 587)
    assert plans["marina"].hours == Hours.parse("08:00-20:00") and not plans["marina"].dialled
    # iridium: its own smarthost, which only it may use.
    assert plans["iridium"].smarthost == "sat-smtp"
    assert plans["iridium"].probe == Endpoint("relay.sat.example", 2525)
    assert plans["iridium"].rate == 300.0 and plans["iridium"].max_size == 50 * 1024
    assert plans["iridium"].cost_per_minute == Decimal("1.35")
    assert plans["iridium"].setup_seconds == 20.0
    # gsm: an explicit probe wins; the smarthost is still the default one.
    assert plans["gsm"].probe == Endpoint("192.0.2.1", 25)
    assert plans["gsm"].smarthost == "shore"
    assert smarthost_for(config, None) is config.accounts["shore"]


def test_a_link_without_any_smarthost_has_no_probe(tmp_path: Path) -> None:
    config = parse_config(f"""\
[server]
hostname = h.example
data_dir = {tmp_path}

[link lan]
""")
    (plan,) = link_plans(config)
    assert plan.probe is None and plan.smarthost is None


def test_the_link_in_use_limits_the_plans(tmp_path: Path) -> None:
    auto = make_config(tmp_path)
    assert choice_mode(auto) == "auto" and len(plans_in_use(auto)) == 3
    named = make_config(tmp_path, "link = gsm")
    assert choice_mode(named) == "gsm"
    assert [p.name for p in plans_in_use(named)] == ["gsm"]
    assert choice_mode(make_config(tmp_path, "link = cost")) == "cost"


def queue_message(config: Config, sender: str, body: bytes, *, clock: float = 1000.0) -> str:
    queue = OutboundQueue(config.server.queue_dir, hostname="t", clock=lambda: clock)
    return queue.enqueue(Envelope.simple(sender, ["friend@example.net"]), [body])


URGENT = b"From: c@yacht.example\r\nPriority: urgent\r\nSubject: help\r\n\r\nbody\r\n"
PLAIN = b"From: c@yacht.example\r\nSubject: hello\r\n\r\n" + b"x" * 60_000 + b"\r\n"


def test_the_queue_snapshot_counts_ages_and_sizes(tmp_path: Path) -> None:
    config = make_config(tmp_path, "urgent = captain")
    assert read_queue(config) == QueueSnapshot()  # no queue on disk: nothing, nothing made
    assert not config.server.queue_dir.exists()
    queue_message(config, "captain@yacht.example", URGENT, clock=1000.0)
    queue_message(config, "cook@yacht.example", URGENT, clock=2000.0)
    queue_message(config, "captain@yacht.example", PLAIN, clock=3000.0)
    snap = read_queue(config, now=5000.0)
    assert snap.count == 3 and snap.oldest == 1000.0
    assert snap.urgent == 1  # the cook may not make a call urgent
    assert sorted(snap.due) == sorted([len(URGENT), len(URGENT), len(PLAIN)])
    assert snap.bytes == sum(snap.due)
    # Not yet due: counted, but not in what a cycle would send.
    assert read_queue(config, now=-1.0).due == ()


def test_urgent_needs_the_setting(tmp_path: Path) -> None:
    config = make_config(tmp_path)  # urgent = no (the default)
    queue_message(config, "captain@yacht.example", URGENT)
    assert read_queue(config).urgent == 0
    anyone = make_config(tmp_path, "urgent = all")
    assert read_queue(anyone).urgent == 1


@pytest.mark.parametrize(("head", "urgent"), [
    (b"Priority: Urgent\r\n\r\n", True),
    (b"Importance: high\r\n\r\n", True),
    (b"X-Priority: 1 (Highest)\r\n\r\n", True),
    (b"X-Priority: 2\r\n\r\n", True),
    (b"X-Priority: 3 (Normal)\r\n\r\n", False),
    (b"Priority: non-urgent\r\n\r\n", False),
    (b"Subject: x\r\n\r\nPriority: urgent\r\n", False),  # in the body: not a field
    (b"Priority:\r\n urgent\r\n\r\n", True),  # folded (RFC 5322 section 2.2.3)
])
def test_what_marks_a_message_urgent(head: bytes, urgent: bool) -> None:
    assert is_urgent(head) is urgent


def test_held_messages_per_account(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    data = config.server.data_dir
    assert [h.count for h in read_held(config)] == [0]
    with FetchState.open(data, "home") as state:
        state.hold("uid-1", 2_000_000)
        state.hold("uid-2", 500_000)
        state.request_fetch("uid-2")
        state.record("uid-3", 1000)  # delivered: not held
    (held,) = read_held(config)
    assert (held.account, held.count, held.bytes) == ("home", 2, 2_500_000)
    assert (held.fetch_requested, held.fetch_bytes) == (1, 500_000)
    with FetchState.open(data, "home") as fetching:  # a fetch is running
        assert read_held(config)[0].count == 2  # read without the lock: no wait
        fetching.hold("uid-4", 10)  # and the fetch keeps its lock and goes on
    # A torn last line (a crash mid-append) is not a record.
    record_file = data / "fetch" / "home.uidl"
    record_file.write_bytes(record_file.read_bytes() + b"H uid-5 99")
    assert read_held(config)[0].count == 3


def test_mailboxes_count_messages_and_bytes(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    MaildirMailbox(config.maildir_path("captain")).deliver_bytes(b"Subject: a\n\nhello\n")
    boxes = {b.name: b for b in read_mailboxes(config)}
    wire = len(b"Subject: a\r\n\r\nhello\r\n")  # sizes are POP3's: CRLF line ends
    assert (boxes["captain"].count, boxes["captain"].bytes) == (1, wire)
    assert (boxes["cook"].count, boxes["cook"].bytes) == (0, 0)


def test_waiting_feeds_the_choice(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    queue_message(config, "captain@yacht.example", PLAIN)  # over iridium's max_size
    snap = read_queue(config)
    wait = waiting(config, snap)
    assert wait.sizes_out == (len(PLAIN),) and wait.accounts == ("home",)
    night = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
    choice = choose(link_plans(config), wait, now=night)
    # marina is closed at night; iridium still fetches "home" but holds the big one back.
    assert [e.plan.name for e in choice.order] == ["iridium", "gsm"]
    assert choice.order[0].held == 1


def test_schedule_state_and_the_next_cycle(tmp_path: Path) -> None:
    config = make_config(tmp_path, "link = iridium\nqueue_age = 30m\ntimes = 18:00\n"
                                   "min_interval = 10m")
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    queued_at = now.timestamp() - 600
    snap = QueueSnapshot(count=1, bytes=10, oldest=queued_at, due=(10,))
    state = schedule_state(config, queue=snap, last_cycle_start=None, spent={}, now=now)
    assert state.policy.times == (time(18, 0),) and state.policy.min_interval == 600.0
    assert [p.name for p in state.links] == ["iridium"]
    assert state.oldest_waiting == datetime.fromtimestamp(queued_at, UTC)
    nxt = next_cycle(now, state)
    assert nxt.when == datetime(2026, 12, 7, 12, 20, tzinfo=UTC)  # 30 min after queueing


def test_last_cycle_ignores_stale_link_records() -> None:
    records = [CycleRecord(start=100.0, duration=1, result="done", link="a"),
               CycleRecord(start=300.0, duration=1, result="stale link", link="a"),
               CycleRecord(start=200.0, duration=1, result="partly", link="a")]
    assert last_cycle(records) == 200.0
    assert last_cycle([]) is None


def test_accounts_over_a_link_honour_both_sides(tmp_path: Path) -> None:
    extra = """
[account work]
type = pop3
host = pop.work.example
user = me
secret = {PLAIN.B64}cA==
deliver_to = cook
links = marina
"""
    config = make_config(tmp_path, extra=extra)
    assert accounts_over(config, "marina") == ("home", "work")
    assert accounts_over(config, "gsm") == ("home",)  # work only over marina
