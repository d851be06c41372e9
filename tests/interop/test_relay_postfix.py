"""The relay against Postfix as the smarthost: STARTTLS required, AUTH through Dovecot.

Postfix is what many providers run on their submission port; it offers PIPELINING,
CHUNKING, SIZE and DSN, and refuses anything before TLS. The instance is private
(``tests/interop/postfix_fixture.py``); LinkProxy sits in between where a test counts
connections and round trips or cuts the call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend_store.config import Config
from nosend_store.maildir import MaildirMailbox
from tests.interop.postfix_fixture import PostfixSmarthost, postfix_smarthost
from tests.link.link_proxy import LinkProxy
from tests.link.relay_support import FAST, boat_config, enqueue, entries, message, relay

ALICE = "alice@smarthost.test"


@pytest.fixture(scope="module")
def postfix() -> Iterator[PostfixSmarthost]:
    with postfix_smarthost(message_size_limit=100_000) as server:
        yield server


def _boat(root: Path, port: int, postfix: PostfixSmarthost) -> Config:
    root.mkdir()
    return boat_config(root, port, user=postfix.user, password=postfix.password,
                       ca_file=postfix.tls.cert)


def _with_subject(postfix: PostfixSmarthost, subject: bytes) -> list[bytes]:
    return [m for m in postfix.messages() if b"\nSubject: " + subject + b"\n" in m]


def test_relay_through_postfix_with_starttls_and_auth_on_one_connection(
    tmp_path: Path, postfix: PostfixSmarthost
) -> None:
    before = len(postfix.messages())
    with LinkProxy("127.0.0.1", postfix.port) as proxy:
        config = _boat(tmp_path / "boat", proxy.port, postfix)
        for n in range(6):
            enqueue(config, message(100 + n), [ALICE])
        report = relay(config, message_timeout=FAST)
        counts = proxy.counters.snapshot()
    assert report.ok and report.sent == 6, (report, postfix.log()[-3000:])
    assert counts["connections"] == 1 and report.connections == 1
    assert entries(config) == []
    arrived = postfix.wait_for_messages(before + 6)
    assert len(arrived) == before + 6
    # Postfix's Received: line says TLS was used and the client authenticated.
    mine = _with_subject(postfix, b"note 100")
    assert len(mine) == 1 and b"with ESMTPSA" in mine[0]


def _round_trips(tmp_path: Path, postfix: PostfixSmarthost, count: int) -> int:
    with LinkProxy("127.0.0.1", postfix.port, delay=0.05) as proxy:
        config = _boat(tmp_path / f"boat{count}", proxy.port, postfix)
        for n in range(count):
            enqueue(config, message(200 + n, size=1_500), [ALICE])
        report = relay(config, message_timeout=FAST)
    assert report.ok and report.sent == count, report
    return report.round_trips


def test_postfix_round_trips_do_not_grow_with_the_number_of_messages(
    tmp_path: Path, postfix: PostfixSmarthost
) -> None:
    assert _round_trips(tmp_path, postfix, 5) == _round_trips(tmp_path, postfix, 25)


def test_an_unknown_recipient_fails_with_a_report_and_the_others_go(
    tmp_path: Path, postfix: PostfixSmarthost
) -> None:
    config = _boat(tmp_path / "boat", postfix.port, postfix)
    enqueue(config, message(300), [ALICE, "nobody@smarthost.test"])
    report = relay(config, message_timeout=FAST)
    assert report.ok and (report.sent, report.failed) == (1, 1)
    assert entries(config) == []
    assert len(postfix.wait_for_messages(1)) >= 1
    assert len(_with_subject(postfix, b"note 300")) == 1
    box = MaildirMailbox(config.maildir_path("skipper"))
    [dsn] = box.list_messages()
    with box.open_message(dsn.key) as handle:
        text = handle.read()
    assert b"Final-Recipient: rfc822; nobody@smarthost.test" in text
    assert b"Status: 5.1.1" in text


def test_over_postfixs_size_is_refused_before_the_body(
    tmp_path: Path, postfix: PostfixSmarthost
) -> None:
    with LinkProxy("127.0.0.1", postfix.port) as proxy:
        config = _boat(tmp_path / "boat", proxy.port, postfix)
        enqueue(config, message(400, size=150_000), [ALICE])
        report = relay(config, message_timeout=FAST)
        up = proxy.counters.snapshot()["bytes_up"]
    assert report.ok and report.failed == 1 and report.sent == 0
    assert up < 20_000  # TLS and AUTH, not the 150 KB body
    assert entries(config) == []
    assert _with_subject(postfix, b"note 400") == []


def test_a_cut_mid_message_then_one_whole_copy_at_postfix(
    tmp_path: Path, postfix: PostfixSmarthost
) -> None:
    with LinkProxy("127.0.0.1", postfix.port, cut_up=40_000) as proxy:
        config = _boat(tmp_path / "boat", proxy.port, postfix)
        enqueue(config, message(500), [ALICE])
        big = enqueue(config, message(501, size=80_000), [ALICE])
        first = relay(config, message_timeout=FAST)
        assert proxy.counters.snapshot()["cuts"] == 1
        [left] = entries(config)
        assert left.id == big and left.attempts == 0
        assert not first.ok and first.sent == 1
        proxy.cut_up = None
        second = relay(config, message_timeout=FAST)
    assert second.ok and second.sent == 1, second
    assert entries(config) == []
    assert _wait_copies(postfix, b"note 501") == 1
    assert len(_with_subject(postfix, b"note 500")) == 1


def _wait_copies(postfix: PostfixSmarthost, subject: bytes) -> int:
    """Copies with ``subject`` once one arrived (Postfix delivers after its 250)."""
    for _ in range(100):
        found = _with_subject(postfix, subject)
        if found:
            time.sleep(0.5)  # a second copy, if one were coming, lands within this
            return len(_with_subject(postfix, subject))
        time.sleep(0.1)
    return 0
