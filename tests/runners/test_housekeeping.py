"""Queue and mailbox housekeeping: expiry after 5 days (RFC 5321 section 4.5.4.1) with an
RFC 3464 report to the sender, NOTIFY=DELAY warnings, no report for the null sender,
``tmp/`` leftovers; the loop on its own and inside a running ``MailServer``.

Clocks are injected: nothing here waits for days.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from nosend_runners.mail import housekeeping
from nosend_runners.mail.housekeeping import (
    HousekeepingSummary,
    housekeep,
    report_mailbox,
    retry_policy,
    run_housekeeping,
)
from nosend_runners.serve.settings import Listen, ServerSettings
from nosend_runners.session.boundary import ServerState
from nosend_runners.session.services import session_factory
from nosend_store.config import Config
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import Envelope, OutboundQueue, Recipient
from tests.runners.conftest import (
    fast_timeouts,
    free_port,
    running_server,
    stop_process,
    wait_for_port,
)
from tests.runners.session_support import (
    DOMAIN,
    captured_log,
    make_config,
    messages,
)

DAY = 86400.0
T0 = 1_700_000_000.0
ORIGINAL = (
    b"From: alice@example.test\r\nTo: friend@remote.test\r\nSubject: Position report\r\n"
    b"Message-ID: <pos-1@example.test>\r\n\r\nAt sea, all well.\r\n"
)
ALICE = f"alice@{DOMAIN}"


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def enqueue(config: Config, envelope: Envelope, at: float = T0) -> str:
    queue = OutboundQueue(config.server.queue_dir, clock=lambda: at)
    return queue.enqueue(envelope, [ORIGINAL])


def entries(config: Config) -> list[str]:
    return [e.id for e in OutboundQueue(config.server.queue_dir).entries()]


def parse(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def status_fields(report: email.message.EmailMessage) -> list[dict[str, str]]:
    """The per-message and per-recipient field groups of an RFC 3464 report."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    assert [p.get_content_type() for p in parts[:2]] == ["text/plain", "message/delivery-status"]
    groups = parts[1].get_payload()
    assert isinstance(groups, list)
    return [{k: str(v) for k, v in g.items()} for g in groups]


# -- one pass ---------------------------------------------------------------------------


def test_expired_entry_reports_to_the_local_senders_maildir(config: Config) -> None:
    qid = enqueue(config, Envelope.simple(ALICE, ["friend@remote.test"]))
    # One second before the default 5 days: nothing happens yet.
    early = housekeep(config, clock=Clock(T0 + 5 * DAY - 1))
    assert early == HousekeepingSummary() and early.idle
    assert entries(config) == [qid] and messages(config, "alice") == []

    summary = housekeep(config, clock=Clock(T0 + 5 * DAY))
    assert (summary.expired, summary.notified, summary.notify_failed) == (1, 1, 0)
    assert entries(config) == []
    [raw] = messages(config, "alice")
    report = parse(raw)
    assert report["To"].addresses[0].addr_spec == ALICE
    assert report["From"].addresses[0].username == "MAILER-DAEMON"
    assert report["Auto-Submitted"] == "auto-replied"
    per_message, per_recipient = status_fields(report)
    assert per_message["Reporting-MTA"] == "dns; mx.example.test"  # mail.cfg's hostname
    assert per_recipient["Final-Recipient"] == "rfc822; friend@remote.test"
    assert (per_recipient["Action"], per_recipient["Status"]) == ("failed", "4.4.7")
    # The original travels with the report (RET defaults to FULL).
    returned = list(report.iter_parts())[2]
    assert b"At sea, all well." in returned.as_bytes()

    # Nothing left to do: a second pass is idle and sends nothing again.
    assert housekeep(config, clock=Clock(T0 + 6 * DAY)).idle
    assert len(messages(config, "alice")) == 1


def test_bounce_after_from_mail_cfg_sets_the_expiry(tmp_path: Path) -> None:
    config = make_config(tmp_path, "bounce_after = 2h", "warn_after = 1h")
    assert retry_policy(config).expire_after == 7200.0
    assert retry_policy(config).delay_warning_after == 3600.0
    enqueue(config, Envelope.simple(ALICE, ["friend@remote.test"]))
    assert housekeep(config, clock=Clock(T0 + 7199)).expired == 0
    assert housekeep(config, clock=Clock(T0 + 7200)).expired == 1
    assert len(messages(config, "alice")) == 1


def test_null_sender_entry_expires_without_any_report(config: Config) -> None:
    # RFC 5321 section 4.5.5 / RFC 3461 section 6.1: never report on a report.
    enqueue(config, Envelope.simple("", ["friend@remote.test"]))
    summary = housekeep(config, clock=Clock(T0 + 5 * DAY))
    assert (summary.expired, summary.notified) == (1, 0)
    assert entries(config) == []
    for name in config.mailboxes:
        assert not config.maildir_path(name).exists() or messages(config, name) == []


def test_remote_sender_gets_the_report_queued_with_the_null_sender(config: Config) -> None:
    enqueue(config, Envelope.simple("zed@elsewhere.test", ["friend@remote.test"]))
    summary = housekeep(config, clock=Clock(T0 + 5 * DAY))
    assert (summary.expired, summary.notified) == (1, 1)
    [entry] = OutboundQueue(config.server.queue_dir).entries()
    assert entry.sender == ""
    assert [(r.address, r.notify) for r in entry.recipients] == [("zed@elsewhere.test", ("NEVER",))]
    assert messages(config, "alice") == []


def test_unknown_local_sender_is_reported_to_the_domains_postmaster(config: Config) -> None:
    # postmaster@example.test = carol in the test mail.cfg; relaying a report to our
    # own domain would only come back.
    assert report_mailbox(config, f"ghost@{DOMAIN}") == config.maildir_path("carol")
    assert report_mailbox(config, f"Alice@{DOMAIN}") == config.maildir_path("alice")
    assert report_mailbox(config, f"team@{DOMAIN}") == config.maildir_path("alice")
    assert report_mailbox(config, "zed@elsewhere.test") is None
    enqueue(config, Envelope.simple(f"ghost@{DOMAIN}", ["friend@remote.test"]))
    assert housekeep(config, clock=Clock(T0 + 5 * DAY)).notified == 1
    [raw] = messages(config, "carol")
    assert parse(raw)["To"].addresses[0].addr_spec == f"ghost@{DOMAIN}"
    assert entries(config) == []


def test_delay_warning_once_for_notify_delay(config: Config) -> None:
    envelope = Envelope(ALICE, (Recipient("friend@remote.test", notify=("DELAY", "FAILURE")),))
    qid = enqueue(config, envelope)
    assert housekeep(config, clock=Clock(T0 + 4 * 3600 - 1)).idle
    summary = housekeep(config, clock=Clock(T0 + 4 * 3600))  # warn_after default 4h
    assert (summary.expired, summary.notified) == (0, 1)
    assert entries(config) == [qid]  # still queued, still retried
    [raw] = messages(config, "alice")
    _, per_recipient = status_fields(parse(raw))
    assert per_recipient["Action"] == "delayed"
    assert per_recipient["Status"].startswith("4.")
    assert housekeep(config, clock=Clock(T0 + 5 * 3600)).idle  # only once


def test_entry_held_by_a_transport_is_left_alone(config: Config) -> None:
    qid = enqueue(config, Envelope.simple(ALICE, ["friend@remote.test"]))
    claim = OutboundQueue(config.server.queue_dir).claim(qid)
    assert claim is not None
    with claim:
        assert housekeep(config, clock=Clock(T0 + 5 * DAY)).expired == 0
    assert entries(config) == [qid]
    assert housekeep(config, clock=Clock(T0 + 5 * DAY)).expired == 1


def test_a_report_that_cannot_be_delivered_keeps_the_message_for_the_next_pass(
    config: Config,
) -> None:
    enqueue(config, Envelope.simple(ALICE, ["friend@remote.test"]))
    blocker = config.maildir_path("alice")
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a Maildir")
    with captured_log("nosend.housekeeping") as lines:
        summary = housekeep(config, clock=Clock(T0 + 5 * DAY))
    assert (summary.expired, summary.notified, summary.notify_failed) == (1, 0, 1)
    assert summary.error is not None and summary.error.startswith("report: ")
    [entry] = OutboundQueue(config.server.queue_dir).entries()
    assert entry.notify_pending and entry.pending == ()
    assert len(lines) == 1 and "notify_failed=1" in lines[0]

    blocker.unlink()
    again = housekeep(config, clock=Clock(T0 + 5 * DAY + 300))
    assert (again.expired, again.notified, again.notify_failed) == (0, 1, 0)
    assert entries(config) == [] and len(messages(config, "alice")) == 1


def test_stale_tmp_files_go_and_fresh_ones_stay(config: Config) -> None:
    now = time.time()
    box = MaildirMailbox(config.maildir_path("alice"))
    stale, fresh = Path(box.path, "tmp", "stale.1"), Path(box.path, "tmp", "fresh.1")
    stale.write_bytes(b"half a message")
    fresh.write_bytes(b"a delivery in progress")
    os.utime(stale, (now - 37 * 3600, now - 37 * 3600))  # the Maildir rule: 36 hours
    queue = OutboundQueue(config.server.queue_dir)
    q_stale, q_fresh = Path(queue.path, "tmp", "1.M1P1.x"), Path(queue.path, "tmp", "2.M2P2.x")
    for d in (q_stale, q_fresh):
        d.mkdir()
        (d / "message").write_bytes(b"x")
    os.utime(q_stale, (now - 37 * 3600, now - 37 * 3600))

    summary = housekeep(config)
    assert summary.tmp_removed == 2 and summary.expired == summary.notified == 0
    assert sorted(p.name for p in Path(box.path, "tmp").iterdir()) == ["fresh.1"]
    assert sorted(p.name for p in Path(queue.path, "tmp").iterdir()) == [q_fresh.name]
    # Mailboxes that never received mail are not created by housekeeping.
    assert not config.maildir_path("bob").exists()


def test_nothing_is_created_for_a_server_that_never_queued(config: Config) -> None:
    assert housekeep(config).idle
    assert not config.server.queue_dir.exists()
    assert not config.server.maildir_root.exists()


def test_one_log_line_per_pass_without_secrets(config: Config) -> None:
    enqueue(config, Envelope.simple(ALICE, ["friend@remote.test"]))
    with captured_log("nosend") as lines:
        housekeep(config, clock=Clock(T0 + 5 * DAY))
    assert len(lines) == 1
    line = lines[0]
    assert "event=housekeeping" in line
    assert "expired=1" in line and "notified=1" in line and "tmp_removed=0" in line
    assert "PBKDF2" not in line and "At sea" not in line


# -- the loop ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_loop_survives_a_failing_pass_and_stops_on_shutdown(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []

    def flaky(cfg: Config, **kwargs: object) -> HousekeepingSummary:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return HousekeepingSummary()

    monkeypatch.setattr(housekeeping, "housekeep", flaky)
    state = ServerState(config=config)
    with captured_log("nosend.housekeeping") as lines:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await tg.start(run_housekeeping, state, 0.01)
                while len(calls) < 3:
                    await anyio.sleep(0.01)
                state.shutdown.request()
            # The task group ended: the loop returned by itself after the shutdown.
    assert any("event=housekeeping_failed" in ln and "disk on fire" in ln for ln in lines)
    count = len(calls)
    await anyio.sleep(0.05)
    assert len(calls) == count


@pytest.mark.anyio
async def test_loop_skips_passes_without_a_configuration() -> None:
    state = ServerState(config=None)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(run_housekeeping, state, 0.01)
            await anyio.sleep(0.05)
            state.shutdown.request()


@pytest.mark.anyio
async def test_the_running_server_expires_and_reports(config: Config) -> None:
    listen = (Listen("smtp", "127.0.0.1", 0),)
    settings = ServerSettings(hostname="mx.example.test", listen=listen, timeouts=fast_timeouts())
    async with running_server(settings, session_factory, config=config, housekeeping_interval=0.05):
        # Queued while the server runs, six days ago by the queue's clock: a later
        # pass, not the one at start, must find it.
        await anyio.sleep(0.1)
        enqueue(config, Envelope.simple(ALICE, ["friend@remote.test"]), at=time.time() - 6 * DAY)
        with anyio.fail_after(10):
            while not messages(config, "alice"):
                await anyio.sleep(0.02)
    [raw] = messages(config, "alice")
    _, per_recipient = status_fields(parse(raw))
    assert (per_recipient["Action"], per_recipient["Status"]) == ("failed", "4.4.7")
    assert entries(config) == []


@pytest.mark.anyio
async def test_the_server_without_housekeeping_leaves_the_queue_alone(config: Config) -> None:
    qid = enqueue(config, Envelope.simple(ALICE, ["friend@remote.test"]), at=time.time() - 6 * DAY)
    listen = (Listen("smtp", "127.0.0.1", 0),)
    settings = ServerSettings(hostname="mx.example.test", listen=listen, timeouts=fast_timeouts())
    async with running_server(settings, session_factory, config=config, housekeeping_interval=None):
        await anyio.sleep(0.2)
    assert entries(config) == [qid]


@pytest.mark.anyio
async def test_the_loop_follows_a_reloaded_configuration(tmp_path: Path) -> None:
    five_days = make_config(tmp_path)
    qid = enqueue(five_days, Envelope.simple(ALICE, ["friend@remote.test"]), time.time() - 7200)
    state = ServerState(config=five_days)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(run_housekeeping, state, 0.02)
            await anyio.sleep(0.1)
            assert entries(five_days) == [qid]  # two hours old: not yet
            # What a SIGHUP does: the same data_dir, bounce_after now one hour.
            state.config = make_config(tmp_path, "bounce_after = 1h")
            while not messages(five_days, "alice"):
                await anyio.sleep(0.02)
            state.shutdown.request()
    assert entries(five_days) == []


# -- the commands -------------------------------------------------------------------------


def test_nosend_serve_runs_housekeeping_at_start(tmp_path: Path) -> None:
    port = free_port()
    config = make_config(tmp_path, ports={"smtp": port})
    path = config.path
    enqueue(config, Envelope.simple(ALICE, ["friend@remote.test"]), at=time.time() - 6 * DAY)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nosend", "serve", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port)
            deadline = time.monotonic() + 10
            while not messages(config, "alice") and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop_process(proc)
    assert proc.returncode == 0, log_path.read_text()
    [raw] = messages(config, "alice")
    _, per_recipient = status_fields(parse(raw))
    assert per_recipient["Status"] == "4.4.7"
    text = log_path.read_text()
    assert "event=housekeeping expired=1 notified=1" in text
    assert "PBKDF2" not in text


def test_nosend_inetd_runs_no_housekeeping(tmp_path: Path) -> None:
    """One connection per process: an inetd session must not expire the queue (cron
    runs ``nosend queue maintain`` there)."""
    config = make_config(tmp_path)
    qid = enqueue(config, Envelope.simple(ALICE, ["friend@remote.test"]), at=time.time() - 6 * DAY)
    done = subprocess.run(
        [sys.executable, "-m", "nosend", "inetd", "smtp", "--config", str(config.path)],
        input=b"QUIT\r\n",
        capture_output=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.startswith(b"220 ") and b"\r\n221 " in done.stdout
    assert entries(config) == [qid]
    assert messages(config, "alice") == []
