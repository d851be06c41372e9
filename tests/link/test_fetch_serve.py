"""Fetching from a second ``nosend serve`` as the remote provider, directly and through
a LinkProxy that cuts the link: nothing lost, nothing twice, round trips that do not
grow with the number of messages."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from nosend_link.transfer_events import MessageDone, TransferFinished, TransferStarted
from tests.interop.conftest import (  # noqa: F401 -- fixtures
    NosendServer,
    ServerFactory,
    nosend_factory,
    tls_files,
)
from tests.link.fetch_helpers import LocalSite, bodies_without_trace, local_site
from tests.link.link_proxy import LinkProxy

pytestmark = pytest.mark.interop


def message(i: int, size: int = 0) -> bytes:
    body = b"".join(b"padding line %06d of message %d\n" % (j, i) for j in range(size // 40))
    return (b"From: shore@isp.test\nTo: skipper@yacht.test\nSubject: message %d\n"
            b"Message-ID: <m%d@isp.test>\n\nbody of %d\n.dot line\n" % (i, i, i)) + body


@pytest.fixture
def provider(nosend_factory: ServerFactory) -> NosendServer:  # noqa: F811
    return nosend_factory(services=("smtp", "pop3", "pop3s"))


def site_for(tmp_path: Path, server: NosendServer, port: int | None = None,
             **account: str) -> LocalSite:
    assert server.tls is not None
    settings = {"tls": "starttls", "ca_file": str(server.tls.cert)}
    settings.update(account)
    return local_site(tmp_path / "site", "127.0.0.1", port or server.port("pop3"), "alice",
                      server.users["alice"], **settings)


def fill(server: NosendServer, count: int, size: int = 0) -> list[bytes]:
    sent = [message(i, size) for i in range(count)]
    for m in sent:
        server.deliver_directly("alice", m)
    return sent


def test_fetch_over_stls_delivers_everything_once_and_deletes_it(
    tmp_path: Path, provider: NosendServer
) -> None:
    # Delivered to the provider the ordinary way, over SMTP.
    with smtplib.SMTP(*provider.address("smtp"), timeout=20) as smtp:
        for i in range(3):
            smtp.sendmail("shore@isp.test", ["alice@nosend.test"],
                          message(i).replace(b"\n", b"\r\n"))
    assert len(provider.wait_for_messages("alice", 3)) == 3
    site = site_for(tmp_path, provider)
    report = site.fetch()
    assert report.ok, report.errors
    assert (report.fetched, report.deleted, report.held) == (3, 3, 0)
    got = site.messages("skipper")
    assert len(got) == 3
    for m in got:
        assert m.startswith(b"Received: from 127.0.0.1\n\tby mx.yacht.test (nosend fetch, "
                            b"account isp) with POP3;\n\t")
    assert provider.messages("alice") == []
    assert site.tmp_files("skipper") == []
    # progress: started, three done, finished
    assert isinstance(site.events[0], TransferStarted) and site.events[0].messages == 3
    done = [e for e in site.events if isinstance(e, MessageDone)]
    assert [(e.message, e.of, e.outcome, e.user) for e in done] == [
        (i, 3, "fetched", "skipper") for i in (1, 2, 3)]
    assert sum(e.size for e in done) == site.events[0].total_bytes
    assert isinstance(site.events[-1], TransferFinished) and site.events[-1].ok
    # a second session finds nothing and fetches nothing
    again = site.fetch()
    assert again.ok and again.fetched == 0 and len(site.messages("skipper")) == 3


def test_implicit_tls_with_ca_file(tmp_path: Path, provider: NosendServer) -> None:
    sent = fill(provider, 2)
    site = site_for(tmp_path, provider, provider.port("pop3s"), tls="implicit")
    report = site.fetch()
    assert report.ok and report.fetched == 2, report.errors
    assert sorted(bodies_without_trace(site.messages("skipper"))) == sorted(sent)


def test_an_untrusted_certificate_fetches_nothing(tmp_path: Path, provider: NosendServer) -> None:
    fill(provider, 1)
    site = site_for(tmp_path, provider)
    del site.account["ca_file"]  # the system store does not know the test certificate
    report = site.fetch()
    assert not report.ok and "certificate" in report.errors[0]
    assert site.messages("skipper") == [] and len(provider.messages("alice")) == 1


def test_tls_verify_no_fetches_from_an_unknown_certificate(
    tmp_path: Path, provider: NosendServer
) -> None:
    # The administrator's explicit choice (config check warns): TLS, but no CA check.
    fill(provider, 1)
    site = site_for(tmp_path, provider)
    del site.account["ca_file"]
    site.account["tls_verify"] = "no"
    report = site.fetch()
    assert report.ok and report.fetched == 1, report.errors


def test_keep_yes_never_deletes_and_never_fetches_again(
    tmp_path: Path, provider: NosendServer
) -> None:
    fill(provider, 3)
    site = site_for(tmp_path, provider, keep="yes")
    first = site.fetch()
    assert first.ok and (first.fetched, first.deleted) == (3, 0)
    fill(provider, 1)
    second = site.fetch()
    assert second.ok and (second.fetched, second.deleted) == (1, 0)
    assert len(site.messages("skipper")) == 4 and len(provider.messages("alice")) == 4


# -- a link that drops ------------------------------------------------------------------


def test_a_cut_mid_retr_loses_nothing_and_the_next_fetch_brings_the_rest_once(
    tmp_path: Path, provider: NosendServer
) -> None:
    sent = fill(provider, 5, size=20_000)
    with LinkProxy("127.0.0.1", provider.port("pop3"), cut_down=50_000) as proxy:
        site = site_for(tmp_path, provider, proxy.port)
        first = site.fetch()
        assert not first.ok and first.deleted == 0
        assert 0 < first.fetched < 5
        assert site.tmp_files("skipper") == []  # the half message left nothing behind
        assert len(provider.messages("alice")) == 5
        proxy.cut_down = None
        second = site.fetch()
    assert second.ok, second.errors
    assert second.fetched == 5 - first.fetched and second.deleted == 5
    assert sorted(bodies_without_trace(site.messages("skipper"))) == sorted(sent)
    assert provider.messages("alice") == []


def test_a_cut_before_quit_is_answered_brings_deletions_not_downloads(
    tmp_path: Path, provider: NosendServer
) -> None:
    sent = fill(provider, 4, size=20_000)
    with LinkProxy("127.0.0.1", provider.port("pop3")) as proxy:
        site = site_for(tmp_path, provider, proxy.port)

        def cut_before_dele(step: str) -> None:
            if step == "before_dele":
                # the DELEs and QUIT never arrive whole: the server deletes nothing
                proxy.cut_up = proxy.counters.snapshot()["bytes_up"] + 3

        first = site.fetch(crash_hook=cut_before_dele)
        assert not first.ok and first.fetched == 4 and first.deleted == 0
        assert len(provider.messages("alice")) == 4
        proxy.cut_up = None
        site.events.clear()
        second = site.fetch()
    assert second.ok and second.fetched == 0 and second.deleted == 4, second
    done = [e for e in site.events if isinstance(e, MessageDone)]
    assert [(e.message, e.of, e.outcome) for e in done] == [
        (i, 4, "deleted") for i in (1, 2, 3, 4)]
    # no message crossed the link again: a few hundred bytes of commands and answers
    assert second.bytes_received < 10_000 < 60_000 < first.bytes_received
    assert sorted(bodies_without_trace(site.messages("skipper"))) == sorted(sent)
    assert provider.messages("alice") == []


def test_round_trips_do_not_grow_with_the_number_of_messages(
    tmp_path: Path, nosend_factory: ServerFactory  # noqa: F811
) -> None:
    trips = {}
    for count in (5, 25, 70):
        server = nosend_factory(services=("pop3",))
        fill(server, count)
        with LinkProxy("127.0.0.1", server.port("pop3")) as proxy:
            site = site_for(tmp_path / str(count), server, proxy.port)
            report = site.fetch()
            assert report.ok and report.fetched == report.deleted == count, report
            trips[count] = (report.round_trips, proxy.counters.snapshot()["turnarounds"])
    print("round trips (meter, proxy turnarounds) by message count:", trips)
    # The meter counts our own turnarounds, exactly; the proxy's threads see the same
    # ones but may split one when a TLS record arrives in two reads, so they are shown.
    meter = {count: trip[0] for count, trip in trips.items()}
    assert meter[5] == meter[25]
    # past the window of 64 commands: one more write of RETRs, one more of DELEs
    assert meter[70] == meter[25] + 2
    # greeting, CAPA, STLS, TLS handshake, CAPA, login, UIDL+LIST, RETRs, DELEs+QUIT
    assert meter[5] <= 9
