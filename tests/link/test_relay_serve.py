"""The relay against our own ``nosend serve`` as the smarthost, through a costly link.

The smarthost listens for submission with STARTTLS and AUTH (a test certificate the
boat trusts through ``ca_file``); :class:`~tests.link.link_proxy.LinkProxy` sits between
them and counts connections, bytes and turnarounds, and cuts the call mid-message.
What arrives is read back from the smarthost's Maildir for alice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend_store.config import Config
from tests.interop.conftest import NosendServer, TLSFiles, build_server, make_tls_files
from tests.link.link_proxy import LinkProxy
from tests.link.relay_support import FAST, boat_config, enqueue, entries, message, relay


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("relay-tls"))


@pytest.fixture
def smarthost(tmp_path: Path, certificate: TLSFiles) -> Iterator[NosendServer]:
    root = tmp_path / "smarthost"
    root.mkdir()
    # Loopback is trusted by default; the boat logs in anyway, as it would on the net.
    server = build_server(root, certificate, ("submission", "smtps"), trusted_networks="")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _boat(tmp_path: Path, port: int, certificate: TLSFiles) -> Config:
    root = tmp_path / "boat"
    root.mkdir()
    return boat_config(root, port, ca_file=certificate.cert)


def _subjects(server: NosendServer) -> list[str]:
    out = []
    for raw in server.messages("alice"):
        for line in raw.split(b"\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
                break
    return sorted(out)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_starttls_auth_and_one_connection_for_the_whole_queue(
    tmp_path: Path, smarthost: NosendServer, certificate: TLSFiles, backend: str
) -> None:
    with LinkProxy("127.0.0.1", smarthost.port("submission")) as proxy:
        config = _boat(tmp_path, proxy.port, certificate)
        for n in range(8):
            enqueue(config, message(n, size=5_000 * n))
        report = relay(config, message_timeout=FAST, backend=backend)
        counts = proxy.counters.snapshot()
    assert report.ok, report
    assert report.sent == 8 and report.connections == 1
    assert counts["connections"] == 1
    assert entries(config) == []
    assert _subjects(smarthost) == sorted(f"note {n}" for n in range(8))
    # Every message went through TLS and AUTH, as the smarthost saw it.
    assert all(b"with ESMTPSA" in raw for raw in smarthost.messages("alice"))
    assert report.bytes_sent == counts["bytes_up"]
    assert report.bytes_received == counts["bytes_down"]


def _round_trips(tmp_path: Path, smarthost: NosendServer, certificate: TLSFiles,
                 count: int) -> tuple[int, int]:
    root = tmp_path / f"boat{count}"
    root.mkdir()
    with LinkProxy("127.0.0.1", smarthost.port("submission"), delay=0.05) as proxy:
        config = boat_config(root, proxy.port, ca_file=certificate.cert)
        for n in range(count):
            enqueue(config, message(n, size=2_000))
        report = relay(config, message_timeout=FAST)
        counts = proxy.counters.snapshot()
    assert report.ok and report.sent == count, report
    return report.round_trips, counts["turnarounds"]


def test_round_trips_do_not_grow_with_the_number_of_messages(
    tmp_path: Path, smarthost: NosendServer, certificate: TLSFiles
) -> None:
    five = _round_trips(tmp_path, smarthost, certificate, 5)
    twenty_five = _round_trips(tmp_path, smarthost, certificate, 25)
    # PIPELINING and CHUNKING: the batch and QUIT cost the same waits however long it is.
    assert five[0] == twenty_five[0], (five, twenty_five)
    # The link's own count agrees within the turnarounds TLS adds (session tickets).
    assert abs(five[1] - twenty_five[1]) <= 1, (five, twenty_five)
    assert len(smarthost.messages("alice")) == 30


def test_a_call_cut_mid_message_loses_nothing_and_sends_it_whole_once(
    tmp_path: Path, smarthost: NosendServer, certificate: TLSFiles
) -> None:
    with LinkProxy("127.0.0.1", smarthost.port("submission"), cut_up=60_000) as proxy:
        config = _boat(tmp_path, proxy.port, certificate)
        for n in range(3):
            enqueue(config, message(n))
        big = enqueue(config, message(9, size=200_000))
        first = relay(config, message_timeout=FAST)
        assert proxy.counters.snapshot()["cuts"] == 1, first
        # Nothing recorded for the cut message: no attempt, no backoff, still due.
        [left] = entries(config)
        assert left.id == big and left.attempts == 0 and left.pending
        assert not first.ok and first.sent == 3 and first.deferred == 1
        assert _subjects(smarthost) == ["note 0", "note 1", "note 2"]
        proxy.cut_up = None
        second = relay(config, message_timeout=FAST)
    assert second.ok and second.sent == 1, second
    assert entries(config) == []
    # Exactly one copy of every message, the big one whole.
    assert _subjects(smarthost) == ["note 0", "note 1", "note 2", "note 9"]
    [whole] = [m for m in smarthost.messages("alice") if b"Subject: note 9" in m]
    assert whole.endswith(message(9, size=200_000))


def test_a_wrong_password_sends_nothing_and_keeps_the_queue(
    tmp_path: Path, smarthost: NosendServer, certificate: TLSFiles
) -> None:
    root = tmp_path / "boat"
    root.mkdir()
    config = boat_config(root, smarthost.port("submission"), ca_file=certificate.cert,
                         password="not-the-password")
    qid = enqueue(config, message(1))
    report = relay(config, message_timeout=FAST)
    assert not report.ok and "login failed" in (report.error or "")
    assert "not-the-password" not in (report.error or "")
    [left] = entries(config)
    assert left.id == qid and left.attempts == 0
    assert smarthost.messages("alice") == []


def test_an_untrusted_certificate_sends_nothing(
    tmp_path: Path, smarthost: NosendServer
) -> None:
    root = tmp_path / "boat"
    root.mkdir()
    config = boat_config(root, smarthost.port("submission"))  # system CAs only
    enqueue(config, message(1))
    report = relay(config, message_timeout=FAST)
    assert not report.ok and "certificate" in (report.error or "")
    assert len(entries(config)) == 1 and smarthost.messages("alice") == []


def test_implicit_tls_on_the_smtps_port(
    tmp_path: Path, smarthost: NosendServer, certificate: TLSFiles
) -> None:
    root = tmp_path / "boat"
    root.mkdir()
    config = boat_config(root, smarthost.port("smtps"), tls="implicit",
                         ca_file=certificate.cert)
    enqueue(config, message(1))
    report = relay(config, message_timeout=FAST)
    assert report.ok and report.sent == 1, report
    [raw] = smarthost.messages("alice")
    assert b"with ESMTPSA" in raw


@pytest.mark.parametrize("pin", ["right", "wrong", "no-verify"])
def test_a_pinned_fingerprint_or_tls_verify_no_instead_of_a_ca(
    tmp_path: Path, smarthost: NosendServer, certificate: TLSFiles, pin: str
) -> None:
    root = tmp_path / "boat"
    root.mkdir()
    if pin == "no-verify":
        line = "tls_verify = no"
    else:
        value = certificate.fingerprint() if pin == "right" else "AB:" * 31 + "AB"
        line = f"fingerprint = {value}"
    config = boat_config(root, smarthost.port("submission"), line)
    enqueue(config, message(1))
    report = relay(config, message_timeout=FAST)
    if pin == "wrong":
        assert not report.ok and "fingerprint" in (report.error or "")
        assert len(entries(config)) == 1 and smarthost.messages("alice") == []
    else:
        assert report.ok and report.sent == 1, report
