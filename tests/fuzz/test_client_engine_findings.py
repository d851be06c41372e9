"""Findings of the deep fuzz run in the client engines, kept as regression examples.

Found with ``NOSEND_HYPOTHESIS_PROFILE=deep`` by
``tests/fuzz/test_smtp_client_fuzz.py::test_arbitrary_server_bytes_only_raise_remote_errors``
(1,093 examples in; the default 150 do not reach it), and fixed in
``ClientConnection._wind_up``: a 421 to EHLO or STARTTLS no longer runs through that
command's own handling, which used to hand out a Ready on a closed connection.
"""

from __future__ import annotations

from nosend_proto import smtp_client


def test_no_ready_is_handed_out_once_an_unsolicited_421_closed_the_session() -> None:
    from nosend_proto.smtp_client_events import (  # noqa: PLC0415
        Greeting,
        Ready,
        Recipient,
        SMTPClientConfig,
        Transaction,
    )

    conn = smtp_client.ClientConnection(SMTPClientConfig(local_hostname="boat.example.net"))
    # The greeting, an EHLO reply offering AUTH, and a 421 (RFC 5321 section 3.8: any
    # time) in one read. Without the AUTH line the Ready comes in state READY, as it should.
    conn.receive_data(
        b"220 mx ESMTP\r\n250-AUTH PLAIN XOAUTH2\r\n250-STARTTLS\r\n250 8BITMIME\r\n421 bye\r\n"
    )
    assert isinstance(conn.next_event(), Greeting)
    event = conn.next_event()
    if isinstance(event, Ready):
        # What Ready invites must then work.
        conn.send(Transaction("a@b.example", (Recipient("c@d.example"),), size=0))
