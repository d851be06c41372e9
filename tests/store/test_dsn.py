"""RFC 3464 report generation on its own."""

from __future__ import annotations

import email
import email.policy
import io

from nosend_store.dsn import DsnRecipient, build_dsn, status_from_reply


def parse(chunks: object) -> email.message.EmailMessage:
    data = b"".join(chunks)  # type: ignore[call-overload]
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def test_status_from_reply() -> None:
    assert status_from_reply("550 5.1.1 user unknown") == "5.1.1"
    assert status_from_reply("550-5.7.1 denied") == "5.7.1"
    assert status_from_reply("452 mailbox full") == "4.0.0"
    assert status_from_reply("550 5.1.1") == "5.1.1"
    assert status_from_reply("550 5.1.1x") == "5.0.0"
    assert status_from_reply("connection refused", default_class="4") == "4.0.0"


def test_hostile_reply_cannot_add_fields() -> None:
    rcpt = DsnRecipient(
        "b@x", "failed", "5.0.0", diagnostic="550 no\r\nAction: delivered\nStatus: 2.0.0"
    )
    report = parse(build_dsn(sender="a@y", recipients=[rcpt], reporting_mta="h", now=0.0))
    _, status = report.iter_parts()
    blocks = [dict(b.items()) for b in status.get_payload()]
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 no Action: delivered Status: 2.0.0"


def test_original_without_final_newline_and_boundary_stays_closed() -> None:
    original = io.BytesIO(b"Subject: t\n\nlast line without newline")
    chunks = list(
        build_dsn(
            sender="a@y",
            recipients=[DsnRecipient("b@x", "failed", "5.0.0")],
            reporting_mta="h",
            now=86400.0,
            arrival=0.0,
            original=original,
        )
    )
    data = b"".join(chunks)
    report = parse([data])
    assert report.defects == []
    assert len(list(report.iter_parts())) == 3
    assert data.rstrip().endswith(b"--")
    assert b"Arrival-Date: Thu, 01 Jan 1970 00:00:00 +0000" in data
    assert b"Date: Fri, 02 Jan 1970 00:00:00 +0000" in data


def test_headers_only_stops_at_blank_line() -> None:
    original = io.BytesIO(b"Subject: t\nX-A: 1\n\nsecret body\n")
    report = parse(
        build_dsn(
            sender="a@y",
            recipients=[DsnRecipient("b@x", "failed", "5.0.0")],
            reporting_mta="h",
            now=0.0,
            original=original,
            headers_only=True,
        )
    )
    *_, part = report.iter_parts()
    assert part.get_content_type() == "text/rfc822-headers"
    assert "X-A: 1" in part.get_content() and "secret" not in part.get_content()
