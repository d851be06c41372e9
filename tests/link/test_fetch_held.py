"""Size caps, held messages and their notices, the requests about them, and multi-drop
routing, against a second ``nosend serve`` as the provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from nosend_link.notice import held_id
from nosend_store.fetch_state import FetchState, FetchStatus
from nosend_store.maildir import uidl_for_key
from tests.interop.conftest import (  # noqa: F401 -- fixtures
    NosendServer,
    ServerFactory,
    nosend_factory,
    tls_files,
)
from tests.link.fetch_helpers import bodies_without_trace
from tests.link.test_fetch_serve import fill, message, site_for

pytestmark = pytest.mark.interop


@pytest.fixture
def provider(nosend_factory: ServerFactory) -> NosendServer:  # noqa: F811
    return nosend_factory(services=("pop3",))


def held_uidls(site_data: Path) -> dict[str, FetchStatus]:
    with FetchState.open(site_data, "isp") as state:
        return {u: r.status for u, r in state.records().items()}


def test_a_message_over_the_cap_is_held_with_one_notice_even_over_two_cycles(
    tmp_path: Path, provider: NosendServer
) -> None:
    small = message(1)
    big = (b"From: =?utf-8?q?J=C3=B6rg?= <joerg@isp.test>\nTo: skipper@yacht.test\n"
           b"Subject: photos of the harbour\nDate: Mon, 7 Dec 2026 03:00:00 +0000\n\n"
           b"Here are the photos.\nSecond line.\n" + b"x" * 70 + b"\n") * 1 + b"y\n" * 30_000
    provider.deliver_directly("alice", small)
    provider.deliver_directly("alice", big)
    site = site_for(tmp_path, provider, max_size="50K")
    first = site.fetch()
    assert first.ok and (first.fetched, first.held, first.deleted) == (1, 1, 1), first
    got = site.messages("skipper")
    assert len(got) == 2
    (notice,) = [m for m in got if b"Held on the server" in m]
    (uidl,) = [u for u, s in held_uidls(site.data_dir).items() if s is FetchStatus.HELD]
    text = notice.decode()
    assert f"nosend held fetch {held_id('isp', uidl)}" in text
    assert "Jörg <joerg@isp.test>" in text and "photos of the harbour" in text
    assert "> Here are the photos." in text and "> Second line." in text
    assert "Mon, 7 Dec 2026 03:00:00 +0000" in text
    # the big one stays on the server; the next cycle sends no second notice
    second = site.fetch()
    assert second.ok and (second.fetched, second.held, second.deleted) == (0, 0, 0)
    assert len(site.messages("skipper")) == 2 and len(provider.messages("alice")) == 1
    # a per-link cap smaller than the account's holds a message the account would take
    provider.deliver_directly("alice", message(2, size=8000))
    third = site.fetch(link_max_size=4000)
    assert third.ok and third.held == 1 and third.fetched == 0
    # on a link without a cap of its own it fits the account's: fetched, no request needed
    fourth = site.fetch()
    assert fourth.ok and (fourth.fetched, fourth.held, fourth.deleted) == (1, 0, 1)
    assert len(provider.messages("alice")) == 1  # the big one, still held


def test_held_fetch_and_delete_requests_are_honoured_next_cycle(
    tmp_path: Path, provider: NosendServer
) -> None:
    bigs = [message(i, size=30_000) for i in range(3)]
    # nosend's UIDL is the Maildir key; map by key, not by sorting (string order of keys
    # is not delivery order: their microseconds are not zero-padded)
    uidls = [uidl_for_key(provider.deliver_directly("alice", m)) for m in bigs]
    site = site_for(tmp_path, provider, max_size="10K")
    assert site.fetch().held == 3
    assert sorted(held_uidls(site.data_dir)) == sorted(uidls)
    with FetchState.open(site.data_dir, "isp") as state:
        state.request_fetch(uidls[0])
        state.request_fetch(uidls[1], link="harbour-wifi")
        state.request_delete(uidls[2])
    over_sat = site.fetch(link="iridium")
    assert over_sat.ok and (over_sat.fetched, over_sat.deleted) == (1, 2), over_sat
    assert len(provider.messages("alice")) == 1  # the one waiting for the harbour
    over_wifi = site.fetch(link="harbour-wifi")
    assert over_wifi.ok and (over_wifi.fetched, over_wifi.deleted) == (1, 1)
    fetched = [m for m in bodies_without_trace(site.messages("skipper"))
               if b"Held on the server" not in m]
    assert sorted(fetched) == sorted(bigs[:2])
    assert provider.messages("alice") == []


def test_multidrop_routes_by_envelope_header_and_falls_back(
    tmp_path: Path, provider: NosendServer
) -> None:
    to_crew1 = b"Delivered-To: crew1@yacht.test\nTo: list@else.test\nSubject: a\n\nfor crew1\n"
    to_all = b"To: all@yacht.test, someone@else.test\nSubject: b\n\nfor everyone\n"
    nobody = b"To: list@else.test\nSubject: c\n\nfor nobody here\n"
    looping = (b"X-Nosend-Loop: mx.yacht.test\n" * 3
               + b"Delivered-To: crew2@yacht.test\nSubject: d\n\nround and round\n")
    for m in (to_crew1, to_all, nobody, looping):
        provider.deliver_directly("alice", m)
    site = site_for(tmp_path, provider, multidrop="skipper")
    report = site.fetch()
    assert report.ok and report.fetched == 4, report
    crew1 = site.messages("crew1")
    crew2 = site.messages("crew2")
    skipper = site.messages("skipper")
    assert sorted(bodies_without_trace(crew1)) == sorted([to_crew1, to_all])
    assert bodies_without_trace(crew2) == [to_all]
    # (the helper strips every loop marker, ours and the three it came with)
    assert sorted(bodies_without_trace(skipper)) == sorted([nobody, looping[3 * 29 :]])
    (looped,) = [m for m in skipper if b"round and round" in m]
    assert looped.count(b"X-Nosend-Loop: mx.yacht.test\n") == 4
    for m in crew1 + crew2 + skipper:
        assert b"\nX-Nosend-Loop: mx.yacht.test\n" in m.split(b"\n\n")[0] + b"\n"


def test_keep_with_a_cap_holds_once_and_fetches_the_rest_once(
    tmp_path: Path, provider: NosendServer
) -> None:
    fill(provider, 2)
    provider.deliver_directly("alice", message(9, size=40_000))
    site = site_for(tmp_path, provider, keep="yes", max_size="20K")
    for _ in range(2):
        site.fetch()
    assert len(site.messages("skipper")) == 3  # two messages and one notice
    assert len(provider.messages("alice")) == 3
