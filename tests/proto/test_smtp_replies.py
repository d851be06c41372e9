"""SMTP server engine: replies, their enhanced status codes, validation and rendering.

The engine shares constant replies between events and keeps per-owed-reply records for
the enhanced status codes (RFC 2034, RFC 3463); these tests pin that a shared reply still
gets the code of what it answers, that ``Reply`` refuses malformed values, and how
replies are rendered (RFC 5321 section 4.2 and 4.5.3.1.5).
"""

from __future__ import annotations

import pytest

from nosend_proto import LocalProtocolError
from nosend_proto._smtp_writers import render_reply
from nosend_proto.smtp_events import (
    DataChunk,
    Hello,
    MailFrom,
    MailParams,
    Quit,
    Reply,
)
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState
from tests.proto.smtp_driver import HOST, Harness, run_transcript

# -- replies shared between events keep the enhanced code of what they answer ----------


def test_one_shared_ok_gets_each_commands_enhanced_code_after_ehlo() -> None:
    conn = ServerConnection(SMTPServerConfig(hostname=HOST), nonce="n")
    conn.send(Reply(220, "hi"))
    conn.receive_data(b"EHLO c.example\r\n")
    ehlo = conn.send(conn.default_reply(conn.next_event()))  # type: ignore[arg-type]
    assert ehlo.startswith(b"250-mx.example.org\r\n") and b" 2." not in ehlo
    wire = [
        (b"MAIL FROM:<a@example.net>\r\n", b"250 2.1.0 OK\r\n"),
        (b"RCPT TO:<b@example.org>\r\n", b"250 2.1.5 OK\r\n"),
        (b"DATA\r\n", b"354 End data with <CR><LF>.<CR><LF>\r\n"),
        (b"x\r\n.\r\n", b"250 2.0.0 OK\r\n"),
        (b"RSET\r\n", b"250 2.0.0 OK\r\n"),
        (b"NOOP\r\n", b"250 2.0.0 OK\r\n"),
    ]
    replies = []
    for data, expected in wire:
        conn.receive_data(data)
        event = conn.next_event()
        if isinstance(event, DataChunk):
            event = conn.next_event()
        reply = conn.default_reply(event)  # type: ignore[arg-type]
        replies.append(reply)
        assert conn.send(reply) == expected
    # MAIL, RCPT, end of data, RSET and NOOP were all answered with one Reply object.
    assert len({id(r) for i, r in enumerate(replies) if i != 2}) == 1


def test_shared_replies_after_helo_and_with_enhanced_codes_off() -> None:
    run_transcript(
        Harness(),
        """
        S: 220 mx.example.org ESMTP
        C: HELO c.example
        S: 250 mx.example.org
        C: MAIL FROM:<a@example.net>
        S: 250 2.1.0 OK
        C: RCPT TO:<b@example.org>
        S: 250 2.1.5 OK
        C: QUIT
        S: 221 2.0.0 mx.example.org Service closing transmission channel
        """,
    )
    run_transcript(
        Harness(SMTPServerConfig(hostname=HOST, enhanced_status_codes=False)),
        """
        S: 220 mx.example.org ESMTP
        C: EHLO c.example
        S: 250-mx.example.org
        S: 250-PIPELINING
        S: 250-SIZE 36700160
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-CHUNKING
        S: 250 DSN
        C: MAIL FROM:<a@example.net>
        S: 250 OK
        C: RCPT TO:<b@example.org>
        S: 250 OK
        C: VRFY bob
        S: 252 Cannot VRFY user, but will accept message and attempt delivery
        """,
    )


@pytest.mark.parametrize(
    ("config", "reply", "expected"),
    [
        # RFC 3207 section 4 and RFC 4954 section 6: X.7.0 for TLS and AUTH failures.
        ({"tls_available": True}, Reply(454, "TLS not available"), b"454 4.7.0 TLS not available"),
        ({"tls_available": True}, Reply(554, "no"), b"554 5.7.0 no"),
        ({"tls_available": True}, Reply(454, "busy", "4.3.0"), b"454 4.3.0 busy"),
    ],
)
def test_starttls_failures_get_subject_7(
    config: dict[str, bool], reply: Reply, expected: bytes
) -> None:
    h = Harness(SMTPServerConfig(hostname=HOST, **config))
    h.greet()
    h.conn.receive_data(b"EHLO c\r\n")
    h.conn.send(h.conn.default_reply(h.conn.next_event()))  # type: ignore[arg-type]
    h.conn.receive_data(b"STARTTLS\r\n")
    h.conn.next_event()
    assert h.conn.send(reply) == expected + b"\r\n"
    assert h.conn.state is SMTPState.READY


def test_unsolicited_421_gets_class_code_and_closes() -> None:
    conn = ServerConnection(SMTPServerConfig(hostname=HOST), nonce="n")
    conn.send(Reply(220, "hi"))
    assert conn.send(Reply(421, "bye")) == b"421 4.0.0 bye\r\n"
    assert conn.state is SMTPState.CLOSED


def test_greeting_never_carries_an_enhanced_code() -> None:
    # RFC 2034 section 3: not even one the application gave.
    conn = ServerConnection(SMTPServerConfig(hostname=HOST), nonce="n")
    assert conn.send(Reply(554, "go away", "5.7.1")) == b"554 go away\r\n"
    assert conn.state is SMTPState.REFUSED


def test_default_reply_serves_subclasses_of_the_events() -> None:
    class MyHello(Hello):
        pass

    class MyMail(MailFrom):
        pass

    class MyQuit(Quit):
        pass

    conn = ServerConnection(SMTPServerConfig(hostname=HOST), nonce="n")
    assert conn.default_reply(MyHello("c", True)) == Reply(250, HOST)
    assert conn.default_reply(MyMail("a@b", MailParams())) == Reply(250, "OK")
    assert conn.default_reply(MyQuit()).code == 221
    assert conn.default_reply(Hello("c", False)) == Reply(250, HOST)
    with pytest.raises(LocalProtocolError):
        conn.default_reply(DataChunk(b"x"))


# -- Reply validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "enhanced"),
    [(250, "OK", None), (250, "", "2.1.0"), (354, "go", "3.0.0"), (559, "x", "5.999.999")],
)
def test_reply_accepts(code: int, text: str, enhanced: str | None) -> None:
    assert Reply(code, text, enhanced).code == code


@pytest.mark.parametrize(
    ("code", "text", "enhanced"),
    [
        (199, "", None),
        (560, "", None),
        (260, "", None),  # second digit above 5
        (250.0, "", None),
        ("250", "", None),
        (250, "a\rb", None),
        (250, "a\0b", None),
        (250, "x", "5.0.0"),  # class differs from the code's
        (250, "x", "2.0"),
        (250, "x", "2.1000.0"),
        (250, "x", "2..0"),
        (250, "x", "02.0.0"),
        (250, "x", "2.0.0\n"),
        (250, "x", "2.\u0661.0"),  # a non-ASCII digit
        (250, "x", 2),
    ],
)
def test_reply_refuses(code: object, text: str, enhanced: object) -> None:
    with pytest.raises(LocalProtocolError):
        Reply(code, text, enhanced)  # type: ignore[arg-type]


# -- rendering -------------------------------------------------------------------------


def test_render_reply_lines_and_limits() -> None:
    assert render_reply(Reply(250, ""), None) == b"250 \r\n"
    assert render_reply(Reply(250, ""), "2.0.0") == b"250 2.0.0 \r\n"
    assert render_reply(Reply(250, "a\nb"), "2.0.0") == b"250-2.0.0 a\r\n250 2.0.0 b\r\n"
    assert render_reply(Reply(250, "h"), None, ("X", "Y 1")) == b"250-h\r\n250-X\r\n250 Y 1\r\n"
    # RFC 5321 section 4.5.3.1.5: 512 octets with code and CRLF, counted in octets.
    assert len(render_reply(Reply(250, "a\n" + "\u00e9" * 253), None)) == len(b"250-a\r\n") + 512
    for text in ("a\n" + "\u00e9" * 254, "\u00e9" * 254, "x" * 507):
        with pytest.raises(LocalProtocolError):
            render_reply(Reply(250, text), None)
    with pytest.raises(LocalProtocolError):
        render_reply(Reply(250, "h"), None, ("x" * 507,))
