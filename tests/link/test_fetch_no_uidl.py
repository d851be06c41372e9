"""A server without UIDL, CAPA or PIPELINING (a fake one): fetched with ``keep = no``
only, each message delivered durably then deleted in the same session, one command at a
time; a drop before QUIT brings those messages again (documented in fetch_state)."""

from __future__ import annotations

from pathlib import Path

from tests.interop.conftest import TLSFiles, tls_files  # noqa: F401 -- fixture
from tests.link.fake_pop3 import FakePOP3
from tests.link.fetch_helpers import bodies_without_trace, local_site
from tests.link.link_proxy import LinkProxy

MESSAGES = [b"Subject: m%d\r\n\r\nbody %d\r\n.dot\r\n" % (i, i) for i in range(3)]


def as_stored(m: bytes) -> bytes:
    return m.replace(b"\r\n", b"\n")


def test_no_uidl_fetches_and_deletes_in_lock_step(tmp_path: Path) -> None:
    server = FakePOP3(MESSAGES)
    try:
        site = local_site(tmp_path, "127.0.0.1", server.port, "u", "p", tls="none")
        report = site.fetch()
        assert report.ok and (report.fetched, report.deleted) == (3, 3), report
        assert sorted(bodies_without_trace(site.messages("skipper"))) == sorted(
            as_stored(m) for m in MESSAGES)
        assert server.messages == []
        # one command per round trip: UIDL (refused), LIST, 3 RETR, 3 DELE, QUIT, and
        # the set-up; no batching without PIPELINING
        assert server.commands == ["CAPA", "USER", "PASS", "UIDL", "LIST", "RETR", "RETR",
                                   "RETR", "DELE", "DELE", "DELE", "QUIT"]
        assert report.round_trips >= 12
    finally:
        server.close()


def test_no_uidl_with_keep_fetches_nothing_and_says_why(tmp_path: Path) -> None:
    server = FakePOP3(MESSAGES)
    try:
        site = local_site(tmp_path, "127.0.0.1", server.port, "u", "p", tls="none", keep="yes")
        report = site.fetch()
        assert not report.ok and "UIDL" in report.errors[0] and report.fetched == 0
        assert site.messages("skipper") == [] and len(server.messages) == 3
    finally:
        server.close()


def test_no_uidl_drop_before_quit_brings_the_messages_again_never_loses(
    tmp_path: Path,
) -> None:
    server = FakePOP3(MESSAGES)
    try:
        with LinkProxy("127.0.0.1", server.port) as proxy:
            site = local_site(tmp_path, "127.0.0.1", proxy.port, "u", "p", tls="none")

            def cut(step: str) -> None:
                if step == "before_dele":
                    proxy.cut_up = proxy.counters.snapshot()["bytes_up"] + 2

            first = site.fetch(crash_hook=cut)
            assert not first.ok and first.fetched == 3 and len(server.messages) == 3
            proxy.cut_up = None
            second = site.fetch()
        assert second.ok and second.fetched == 3 and server.messages == []
        # every message is here, twice: the documented cost of a server without UIDL
        got = sorted(bodies_without_trace(site.messages("skipper")))
        assert got == sorted(as_stored(m) for m in MESSAGES * 2)
    finally:
        server.close()


def test_a_clear_login_is_refused_when_the_account_requires_tls(tmp_path: Path) -> None:
    server = FakePOP3(MESSAGES, capa=True)
    try:
        site = local_site(tmp_path, "127.0.0.1", server.port, "u", "p", tls="starttls")
        report = site.fetch()
        assert not report.ok and "offers no STLS" in report.errors[0]
        assert "USER" not in server.commands and "PASS" not in server.commands
    finally:
        server.close()


def test_a_message_far_larger_than_listed_is_refused_and_left_on_the_server(
    tmp_path: Path,
) -> None:
    huge = b"Subject: lies\r\n\r\n" + b"z" * 100 + b"\r\n" * 600_000
    server = FakePOP3([huge], lie=True)
    try:
        site = local_site(tmp_path, "127.0.0.1", server.port, "u", "p", tls="none")
        report = site.fetch()
        assert not report.ok and "larger than the server listed" in report.errors[0]
        assert site.messages("skipper") == [] and site.tmp_files("skipper") == []
        assert len(server.messages) == 1 and "DELE" not in server.commands
    finally:
        server.close()


def test_an_account_is_not_fetched_over_a_link_it_does_not_list(tmp_path: Path) -> None:
    server = FakePOP3(MESSAGES)
    try:
        site = local_site(tmp_path, "127.0.0.1", server.port, "u", "p", tls="none",
                          links="wifi")
        site.extra = "[link wifi]\n\n[link sat]\n"
        refused = site.fetch(link="sat")
        assert not refused.ok and "not used over link sat" in refused.errors[0]
        assert server.commands == []
        assert site.fetch(link="wifi").fetched == 3
    finally:
        server.close()


def test_bytes_injected_after_the_stls_answer_stop_the_session(
    tmp_path: Path, tls_files: TLSFiles  # noqa: F811
) -> None:
    server = FakePOP3(MESSAGES, capa=True, inject=True)
    try:
        site = local_site(tmp_path, "127.0.0.1", server.port, "u", "p", tls="starttls",
                          ca_file=str(tls_files.cert))
        report = site.fetch()
        assert not report.ok and "STLS" in report.errors[0], report.errors
        assert "USER" not in server.commands and site.messages("skipper") == []
    finally:
        server.close()
