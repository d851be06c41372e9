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
    assert [(e.n, e.of, e.outcome) for e in done] == [(i, 3, "fetched") for i in (1, 2, 3)]
    assert done[-1].bytes_so_far == done[-1].total_bytes == site.events[0].bytes
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
