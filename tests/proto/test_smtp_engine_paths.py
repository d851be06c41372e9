"""SMTP server engine: the shortcuts taken for speed give the same answers as the long way.

The engine shares constant replies between events, keeps per-owed-reply records for the
enhanced status codes, returns a one-line read without buffering it, drops the DATA
command's CRLF up front and renders replies with joins. These tests pin the behaviour those
shortcuts must keep.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from nosend_proto import LocalProtocolError
from nosend_proto._receivebuffer import OVERLONG, ReceiveBuffer
from nosend_proto._smtp_data import DotDecoder
from nosend_proto._smtp_grammar import split_path_and_params, xtext_decode, xtext_encode
from nosend_proto._smtp_writers import render_reply
from nosend_proto.received import received_header
from nosend_proto.smtp_events import (
    NEED_DATA,
    DataChunk,
    Hello,
    MailFrom,
    MailParams,
    Quit,
    RcptParams,
    RcptTo,
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


def test_absent_parameters_equal_freshly_built_ones() -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n")
    mail = next(e for e in h.events if isinstance(e, MailFrom))
    rcpt = next(e for e in h.events if isinstance(e, RcptTo))
    assert mail.params == MailParams() and rcpt.params == RcptParams()
    assert h.conn.mail_params == MailParams()


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


# -- the receive buffer's one-line shortcut and uncopied chunks ----------------------


def test_a_lone_line_is_returned_without_copying_it() -> None:
    buf = ReceiveBuffer(20)
    line = b"NOOP\r\n"
    buf.feed(line)
    buf.feed(b"DATA\r\nbody")
    assert buf.next_line() is line
    assert buf.next_line() == b"DATA\r\n"
    assert buf.next_line() is None and len(buf) == 4
    buf.feed(b" more\n")
    assert buf.next_line() == b"body more\n"


def test_chunks_a_line_does_not_need_stay_unsearched() -> None:
    buf = ReceiveBuffer(20)
    body = b"raw body\r\n.\r\n"
    for chunk in (b"DA", b"TA\r\n", body):
        buf.feed(chunk)
    assert buf.next_line() == b"DATA\r\n"
    assert buf.take(1 << 62) is body  # the very chunk received, never copied


def test_overlong_lines_and_the_lone_line_shortcut() -> None:
    buf = ReceiveBuffer(10)
    # A whole line over the limit in one chunk is not taken by the shortcut.
    buf.feed(b"x" * 20 + b"\n")
    assert buf.next_line() is OVERLONG
    # A line cut over chunks: its start is dropped as it comes, then its end is OVERLONG,
    # even when the end arrives as what looks like a lone short line.
    buf.feed(b"y" * 15)
    assert buf.next_line() is None and len(buf) == 0
    buf.feed(b"tail\r\n")
    assert buf.next_line() is OVERLONG
    buf.feed(b"QUIT\r\n")
    assert buf.next_line() == b"QUIT\r\n"
    buf.feed(b"x" * 9 + b"\n")
    assert buf.next_line() == b"x" * 9 + b"\n"


def test_pipelined_commands_after_a_lone_line() -> None:
    h = Harness()
    h.greet()
    out = h.feed(b"EHLO c\r\n")
    assert out.endswith(b"250 DSN\r\n")
    out = h.feed(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    assert out == b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"


# -- DATA: the command's CRLF dropped up front -------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "content", "rest"),
    [
        ([b"hi\r\n.\r\nNOOP\r\n"], b"hi\r\n", b"NOOP\r\n"),
        ([b".\r\n"], b"", b""),  # empty body: the command's CRLF ends it
        ([b"..x\r\n.\r\n"], b".x\r\n", b""),
        ([b"\r\n.\r\n"], b"\r\n", b""),
        ([b"", b".\r\n"], b"", b""),  # an empty chunk does not lose the CRLF
        ([b"", b"..x\r\n.\r\n"], b".x\r\n", b""),
        ([b"a", b"\r\n", b".", b"\r\n"], b"a\r\n", b""),
        ([b".", b".\r\n.\r\n"], b".\r\n", b""),
    ],
)
def test_dot_decoder_first_chunks(chunks: list[bytes], content: bytes, rest: bytes) -> None:
    decoder = DotDecoder()
    out = b""
    for chunk in chunks:
        piece, end = decoder.feed(chunk)
        out += piece
        if end >= 0:
            assert chunk[end:] == rest
            break
    else:
        raise AssertionError("no end of data")
    assert out == content


def test_small_session_events_and_body() -> None:
    body = b"Subject: x\r\n\r\n" + b"line\r\n" * 26
    h = Harness()
    h.greet()
    for data in (b"EHLO c\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@d.example>\r\n"):
        h.feed(data)
    assert h.feed(b"DATA\r\n") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    assert h.feed(body + b".\r\n") == b"250 2.0.0 OK\r\n"
    assert h.messages == [body]
    assert h.conn.state is SMTPState.READY
    assert h.feed(b"QUIT\r\n").startswith(b"221 2.0.0 ")
    assert h.conn.state is SMTPState.CLOSED
    kinds = [type(e).__name__ for e in h.events]
    assert kinds == ["Hello", "MailFrom", "RcptTo", "DataStart", "DataChunk", "EndOfData", "Quit"]
    assert h.conn.next_event() is not NEED_DATA  # ConnectionClosed, never a wait


# -- grammar shortcuts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("<a@b> SIZE=1", ("<a@b>", "SIZE=1")),
        ("  <a@b>   BODY=8BITMIME", ("<a@b>", "BODY=8BITMIME")),
        ("<a@b>", ("<a@b>", "")),
        ("<a@b", ("<a@b", "")),
        ('<"a>b"@c> X', ('<"a>b"@c>', "X")),
        ('<"a\\">"@c> X', ('<"a\\">"@c>', "X")),
        ("a@b SIZE=1", ("a@b", "SIZE=1")),
    ],
)
def test_split_path_and_params(arg: str, expected: tuple[str, str]) -> None:
    assert split_path_and_params(arg) == expected


@pytest.mark.parametrize(
    "text", ["", "alice", "a+b=c", "ünï", "x\ty", "+2B", "a b@c", "\x00", "~!\"#$%&'()*,-./"]
)
def test_xtext_encode_round_trips_through_the_decoder(text: str) -> None:
    encoded = xtext_encode(text)
    assert encoded.isascii() and "=" not in encoded and " " not in encoded
    if any(ord(c) < 0x20 and c != "\t" or 0x7F <= ord(c) <= 0x9F for c in text):
        assert xtext_decode(encoded) is None  # controls are refused when decoding
    else:
        assert xtext_decode(encoded) == text


# -- states -----------------------------------------------------------------------------


def test_states_work_as_keys_and_survive_pickling() -> None:
    table = {state: state.value for state in SMTPState}
    assert all(table[state] == state.value for state in SMTPState)
    assert SMTPState.READY in frozenset({SMTPState.READY})
    assert SMTPState("ready") is SMTPState.READY
    assert pickle.loads(pickle.dumps(SMTPState.DATA)) is SMTPState.DATA


# -- the Received: date -----------------------------------------------------------------


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
