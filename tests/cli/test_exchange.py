"""``nosend exchange``: exit status, summary, progress lines, and a kill -9 mid-relay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend.exchange import ProgressPrinter
from nosend_link.transfer_events import BytesMoved, MessageDone, TransferFinished, TransferStarted
from nosend_store.queue import Envelope
from tests.cli.test_admin import run
from tests.interop.conftest import (
    NosendServer,
    TLSFiles,
    build_server,
    free_port,
    make_tls_files,
)
from tests.link.relay_support import ScriptedSMTP, boat_config, enqueue, entries, message, queue_of


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("exchange-tls"))


@pytest.fixture
def smarthost(tmp_path: Path, certificate: TLSFiles) -> Iterator[NosendServer]:
    root = tmp_path / "smarthost"
    root.mkdir()
    server = build_server(root, certificate, ("submission",), trusted_networks="")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_exchange_relays_the_queue_and_prints_a_summary(
    tmp_path: Path, smarthost: NosendServer, certificate: TLSFiles,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    boat = tmp_path / "boat"
    boat.mkdir()
    config = boat_config(boat, smarthost.port("submission"), ca_file=certificate.cert)
    for n in range(3):
        enqueue(config, message(n))
    status, out, err = run(capsys, monkeypatch, "exchange", "--config", str(config.path))
    assert status == 0, (out, err)
    lines = out.splitlines()
    assert lines[0].startswith("sent 3 messages (") and "received 0 messages" in lines[0]
    assert lines[1].startswith("link: ") and "round trips" in lines[1]
    assert lines[2] == "upstream: ok: 3 sent, 0 deferred, 0 failed, 0 skipped"
    # Not a terminal: plain progress lines on stderr, one per message.
    assert "upstream: sending 3 messages" in err
    assert err.count(" sent (") == 3 and "upstream: done" in err
    assert entries(config) == [] and len(smarthost.messages("alice")) == 3
    status, out, _ = run(capsys, monkeypatch, "queue", "list", "--config", str(config.path))
    assert out == "the queue is empty\n"


def test_exchange_fails_when_the_smarthost_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = boat_config(tmp_path, free_port(), tls="none", user=None)  # nobody listens
    qid = enqueue(config, message(1))
    status, out, err = run(capsys, monkeypatch, "exchange", "--config", str(config.path))
    assert status == 1
    assert "upstream: FAILED: 0 sent, 1 deferred" in out and "cannot connect" in out
    [left] = entries(config)
    assert left.id == qid and left.attempts == 0


def test_exchange_names_an_unknown_account(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = boat_config(tmp_path, 25, tls="none", user=None)
    status, out, err = run(capsys, monkeypatch, "exchange", "--config", str(config.path),
                           "--account", "nope")
    assert (status, out) == (1, "") and err == "nosend: no account 'nope'\n"


def test_queue_list_says_what_the_queue_waits_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = boat_config(tmp_path, 25, tls="none", user=None)
    enqueue(config, message(1))
    status, out, _ = run(capsys, monkeypatch, "queue", "list", "--config", str(config.path))
    assert status == 0 and "waits for `nosend exchange` or a link" in out


def test_the_live_line_is_redrawn_in_place_on_a_terminal() -> None:
    import io

    screen = io.StringIO()
    printer = ProgressPrinter(screen, live=True)
    printer(TransferStarted("up", "out", 2, 3000))
    printer(BytesMoved("up", "out", 1, 500, 1000))
    printer(MessageDone("up", "out", 1, 2, 1000, "sent"))
    printer(MessageDone("up", "out", 2, 2, 2000, "deferred"))
    printer(TransferFinished("up", "out", True))
    text = screen.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.split("\r")[-1].rstrip() == "up: done"  # blanks cover the longer line
    assert "message 1/2 50% of 1000 B" in text and text.count("\r") == 5
    assert (printer.out.messages, printer.out.bytes) == (1, 1000)


def test_kill_9_mid_relay_loses_nothing(tmp_path: Path) -> None:
    """The smarthost holds the body without answering; the exchange is killed while it
    waits. The message stays queued, unrecorded and claimable, and goes next time."""
    boat = tmp_path / "boat"
    boat.mkdir()
    with ScriptedSMTP(stall_subject=b"Subject: note 1") as stalling:
        config = boat_config(boat, stalling.port, tls="none", user=None)
        qid = enqueue(config, message(1, size=30_000))
        proc = subprocess.Popen(
            [sys.executable, "-m", "nosend", "exchange", "--config", str(config.path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert stalling.stalled.wait(30), proc.communicate(timeout=5)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)  # reaps it and closes our ends of its pipes
    assert proc.returncode == -signal.SIGKILL
    [left] = entries(config)
    assert left.id == qid and left.attempts == 0 and all(not r.done for r in left.recipients)
    claim = queue_of(config).claim(qid)  # the dead process's lock went with it
    assert claim is not None
    claim.release()
    with ScriptedSMTP() as good:
        config = boat_config(boat, good.port, tls="none", user=None)
        done = subprocess.run(
            [sys.executable, "-m", "nosend", "exchange", "--config", str(config.path)],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert done.returncode == 0, done
    assert len(good.received) == 1 and good.received[0][1].endswith(
        message(1, size=30_000).replace(b"\n", b"\r\n"))
    assert entries(config) == []


def test_a_queue_larger_than_the_descriptor_limit_goes_in_one_cycle(tmp_path: Path) -> None:
    """Claims are taken as messages go: 300 queued messages under a limit of 128 open
    files (a long outage on a small box) all leave in one exchange."""
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    with ScriptedSMTP() as server:
        config = boat_config(tmp_path, server.port, tls="none", user=None)
        queue = queue_of(config)
        for n in range(300):
            queue.enqueue(Envelope.simple("skipper@boat.example", ["a@far.test"]),
                          [message(n)])
        done = subprocess.run(
            [sys.executable, "-m", "nosend", "exchange", "--config", str(config.path)],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=120, preexec_fn=low_limit)
    assert done.returncode == 0, done.stderr[-2000:]
    assert b"upstream: ok: 300 sent" in done.stdout
    assert len(server.received) == 300 and entries(config) == []


class _FakeFetchReport:
    def __init__(self, ok: bool) -> None:
        self.ok, self.fetched, self.held, self.deleted = ok, 2 if ok else 0, 0, 2 if ok else 0
        self.errors = () if ok else ("pop.example.net:995: login refused",)


def test_exchange_fetches_pop3_accounts_after_the_queue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fetch is the fetch module's (tested there); here only its wiring: called for
    each pop3 account after the relay, its events counted, its report in the summary."""
    import types

    from nosend_store.config_edit import edit_config

    calls: list[str] = []

    async def fetch_account(config: object, account: object, **kwargs: object) -> object:
        name = account.name  # type: ignore[attr-defined]
        calls.append(name)
        progress = kwargs["progress"]
        assert callable(progress) and kwargs["meter"] is not None
        ok = name == "isp"
        if ok:
            progress(TransferStarted(name, "in", 2, 3000))
            progress(MessageDone(name, "in", 1, 2, 1000, "fetched"))
            progress(MessageDone(name, "in", 2, 2, 2000, "fetched"))
        progress(TransferFinished(name, "in", ok))
        return _FakeFetchReport(ok)

    fake = types.ModuleType("nosend_link.fetch")
    fake.fetch_account = fetch_account  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nosend_link.fetch", fake)
    with ScriptedSMTP() as server:
        config = boat_config(tmp_path, server.port, tls="none", user=None)
        for name in ("isp", "other"):
            edit_config(config.path, lambda doc, n=name: doc.add_account(n, [
                ("type", "pop3"), ("host", "pop.example.net"), ("tls", "implicit"),
                ("user", "boat"), ("secret_command", "true"), ("deliver_to", "skipper")]))
        enqueue(config, message(1))
        status, out, err = run(capsys, monkeypatch, "exchange", "--config", str(config.path))
    assert calls == ["isp", "other"]
    assert status == 1  # "other" failed
    lines = out.splitlines()
    assert lines[0] == "sent 1 message (81 B), received 2 messages (2.9 KB)"
    assert lines[2].startswith("upstream: ok: 1 sent")
    assert lines[3] == "isp: ok: 2 fetched, 0 held, 2 deleted"
    assert lines[4] == "other: FAILED: 0 fetched, 0 held, 0 deleted; " \
        "pop.example.net:995: login refused"
    status, out, _ = run(capsys, monkeypatch, "exchange", "--config", str(config.path),
                         "--account", "isp")
    assert status == 0 and calls[-1] == "isp"
