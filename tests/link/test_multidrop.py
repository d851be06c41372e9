"""Multi-drop recipients and loop markers, read from message headers."""

from __future__ import annotations

from nosend_link.multidrop import (
    MAX_LOOPS,
    loop_count,
    loop_header,
    recipients_from_header,
)


def is_local(address: str) -> bool:
    return address.lower().endswith("@yacht.example")


def test_envelope_headers_win_in_order() -> None:
    header = (b"Delivered-To: yacht@isp.example\r\n"
              b"X-Original-To: Captain <captain@yacht.example>, cook@yacht.example\r\n"
              b"Envelope-To: crew@yacht.example\r\n"
              b"To: someone@yacht.example\r\n\r\n")
    # Delivered-To names only the provider's mailbox, so X-Original-To decides.
    assert recipients_from_header(header, is_local) == ["captain@yacht.example",
                                                        "cook@yacht.example"]


def test_to_and_cc_when_no_envelope_header_names_a_local_address() -> None:
    header = (b"To: friend@elsewhere.example, Owner <owner@yacht.example>\r\n"
              b"Cc: crew@yacht.example,\r\n owner@yacht.example\r\n\r\n")
    assert recipients_from_header(header, is_local) == ["owner@yacht.example",
                                                        "crew@yacht.example"]


def test_nothing_local_gives_nothing() -> None:
    header = b"To: friend@elsewhere.example\r\nSubject: hi\r\n\r\n"
    assert recipients_from_header(header, is_local) == []


def test_loop_markers_are_ours_only() -> None:
    ours = loop_header("nos.yacht.example")
    assert ours == b"X-Nosend-Loop: nos.yacht.example\r\n"
    header = ours * MAX_LOOPS + b"X-Nosend-Loop: other.host\r\nSubject: x\r\n\r\n"
    assert loop_count(header, "NOS.yacht.example") == MAX_LOOPS
    assert loop_count(b"Subject: x\r\n\r\n", "nos.yacht.example") == 0
