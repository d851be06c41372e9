"""The Received: trace header helper (RFC 5321 section 4.4) and protocol names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes
from email.utils import format_datetime, parsedate_to_datetime

import pytest

from nosend_proto.received import protocol_name, received_header
from tests.proto.smtp_driver import HOST

WHEN = datetime(2026, 11, 26, 10, 37, 47, tzinfo=timezone(timedelta(hours=1)))


def test_full_header_layout() -> None:
    header = received_header(
        from_helo="client.example.net",
        peer_address="192.0.2.7",
        peer_hostname="host7.example.net",
        by_host="mx.example.org",
        protocol="ESMTPSA",
        id="4XyZ12",
        for_recipient="bob@example.org",
        tls_info="TLSv1.3 TLS_AES_256_GCM_SHA384",
        when=WHEN,
    )
    assert header == (
        b"Received: from client.example.net (host7.example.net [192.0.2.7])\r\n"
        b"\tby mx.example.org with ESMTPSA (TLSv1.3 TLS_AES_256_GCM_SHA384) id 4XyZ12\r\n"
        b"\tfor <bob@example.org>; Thu, 26 Nov 2026 10:37:47 +0100\r\n"
    )
    parsed = message_from_bytes(header + b"\r\nbody")
    stamp = parsed["Received"].rsplit(";", 1)[1].strip()
    assert parsedate_to_datetime(stamp) == WHEN


def test_minimal_header_and_ipv6_literal() -> None:
    header = received_header(
        from_helo="[IPv6:2001:db8::1]",
        peer_address="2001:db8::1",
        by_host="mx.example.org",
        protocol="ESMTP",
        when=WHEN,
    )
    assert header == (
        b"Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])\r\n"
        b"\tby mx.example.org with ESMTP; Thu, 26 Nov 2026 10:37:47 +0100\r\n"
    )


def test_hostile_helo_cannot_break_the_header() -> None:
    header = received_header(
        from_helo="evil)\r\nX-Injected: yes (",
        peer_address="192.0.2.7",
        by_host="mx.example.org",
        protocol="SMTP",
        when=WHEN,
    )
    assert b"\r\nX-Injected" not in header
    assert header.count(b"\r\n") == 2
    assert header.startswith(b"Received: from evil___X-Injected:_yes__ ([192.0.2.7])")


def test_naive_datetime_and_bad_id_are_refused() -> None:
    with pytest.raises(ValueError):
        received_header(
            from_helo="a", peer_address="192.0.2.1", by_host="b", protocol="SMTP",
            when=datetime(2026, 1, 1),
        )  # fmt: skip
    with pytest.raises(ValueError):
        received_header(
            from_helo="a", peer_address="192.0.2.1", by_host="b", protocol="SMTP",
            when=WHEN, id="two words",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("extended", "tls", "auth", "utf8", "name"),
    [
        (False, False, False, False, "SMTP"),
        (True, False, False, False, "ESMTP"),
        (True, True, False, False, "ESMTPS"),
        (True, False, True, False, "ESMTPA"),
        (True, True, True, False, "ESMTPSA"),
        (True, False, False, True, "UTF8SMTP"),
        (True, True, True, True, "UTF8SMTPSA"),
    ],
)
def test_protocol_names(extended: bool, tls: bool, auth: bool, utf8: bool, name: str) -> None:
    # RFC 3848 section 2 and RFC 6531 section 3.7.3.
    assert protocol_name(extended=extended, tls=tls, authenticated=auth, smtputf8=utf8) == name


def test_utf8_helo_becomes_an_a_label_outside_smtputf8() -> None:
    # Regression: the engine accepts a U-label EHLO (leniently) and the trace field
    # carried it raw in a message sent without SMTPUTF8, which RFC 6531 section 3.7.3
    # forbids (trace fields must conform to RFC 5321 then).
    def header(protocol: str) -> bytes:
        return received_header(
            from_helo="bücher.example",
            peer_address="192.0.2.7",
            by_host="mx.example.org",
            protocol=protocol,
            when=WHEN,
            for_recipient="bob@example.org",
        )

    plain = header("ESMTP")
    assert plain.isascii()
    assert plain.startswith(b"Received: from xn--bcher-kva.example ([192.0.2.7])\r\n")
    assert header("UTF8SMTP").startswith("Received: from bücher.example (".encode())


@pytest.mark.parametrize(
    "zone",
    [
        UTC,
        timezone(timedelta(hours=-5)),
        timezone(timedelta(hours=5, minutes=30)),
        timezone(timedelta(hours=-9, minutes=-30)),
        timezone(timedelta(minutes=-1)),
        timezone(timedelta(seconds=3725)),  # an offset in seconds
        timezone(timedelta(seconds=-61, microseconds=-5)),
    ],
)
@pytest.mark.parametrize(
    "moment",
    [
        (2026, 11, 26, 13, 5, 9),
        (1, 1, 1, 0, 0, 0),
        (999, 12, 31, 23, 59, 59),
        (2024, 2, 29, 7, 0, 1),
    ],
)
def test_received_date_is_what_email_utils_writes(
    zone: timezone, moment: tuple[int, int, int, int, int, int]
) -> None:
    when = datetime(*moment, tzinfo=zone)
    header = received_header(
        from_helo="c.example", peer_address="192.0.2.1", by_host=HOST, protocol="ESMTP", when=when
    )
    assert header.endswith(f"; {format_datetime(when)}\r\n".encode())
