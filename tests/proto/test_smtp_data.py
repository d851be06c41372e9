"""SMTP server engine: DATA and BDAT bodies, dot-stuffing, bare CR/LF, size, line length."""

from __future__ import annotations

import pytest

from nosend_proto._smtp_data import DotDecoder
from nosend_proto.smtp_events import (
    NEED_DATA,
    Bdat,
    BdatChunkEnd,
    DataChunk,
    DataRejected,
    EndOfData,
    Reply,
    SMTPEvent,
)
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState
from tests.proto.smtp_driver import HOST, Harness, run_transcript

OPEN = b"EHLO client.example.net\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n"


def in_data(config: SMTPServerConfig | None = None) -> Harness:
    h = Harness(config or SMTPServerConfig(hostname=HOST))
    h.greet()
    h.feed(OPEN)
    assert h.feed(b"DATA\r\n") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    assert h.conn.state is SMTPState.DATA
    return h


@pytest.mark.parametrize(
    ("wire", "body"),
    [
        (b".\r\n", b""),
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"...\r\n.\r\n", b"..\r\n"),
        (b"..leading dot\r\nmid.dle\r\n.\r\n", b".leading dot\r\nmid.dle\r\n"),
        (b"x\r\n..\r\n\r\n.\r\n", b"x\r\n.\r\n\r\n"),
        (b"\r\n\r\n.\r\n", b"\r\n\r\n"),
    ],
)
def test_dot_unstuffing(wire: bytes, body: bytes) -> None:
    h = in_data()
    assert h.feed(wire) == b"250 2.0.0 OK\r\n"
    assert h.messages == [body]
    assert h.conn.state is SMTPState.READY


def test_body_arrives_as_chunks_and_any_split_gives_the_same_body() -> None:
    wire = b"Subject: t\r\n\r\n" + b"..dot\r\nline\r\n" * 50 + b".\r\n"
    for size in (1, 2, 3, 5, 7, 64):
        h = in_data()
        out = b""
        for i in range(0, len(wire), size):
            out += h.feed(wire[i : i + size])
        assert out == b"250 2.0.0 OK\r\n"
        assert h.messages == [b"Subject: t\r\n\r\n" + b".dot\r\nline\r\n" * 50]
        chunks = [e for e in h.events if isinstance(e, DataChunk)]
        assert all(c.data for c in chunks)
        if size == 1:
            assert len(chunks) > 100  # streamed, never collected whole


def test_pipelined_commands_after_the_end_of_data() -> None:
    h = in_data()
    out = h.feed(b"body\r\n.\r\nMAIL FROM:<c@example.net>\r\nQUIT\r\n")
    assert out == (
        b"250 2.0.0 OK\r\n250 2.1.0 OK\r\n"
        b"221 2.0.0 mx.example.org Service closing transmission channel\r\n"
    )
    assert h.messages == [b"body\r\n"]


@pytest.mark.parametrize(
    "smuggled",
    [
        b"a\n.\nMAIL FROM:<evil@example.net>\r\n",  # <LF>.<LF>
        b"a\r\n.\nMAIL FROM:<evil@example.net>\r\n",  # <CR><LF>.<LF>
        b"a\n.\r\nMAIL FROM:<evil@example.net>\r\n",  # <LF>.<CR><LF>
        b"a\r.\rMAIL FROM:<evil@example.net>\r\n",  # <CR>.<CR>
        b"a\r\n.\rMAIL FROM:<evil@example.net>\r\n",  # <CR><LF>.<CR>
        b"a\r.\r\nMAIL FROM:<evil@example.net>\r\n",  # <CR>.<CR><LF>
    ],
)
def test_smtp_smuggling_never_ends_the_message(smuggled: bytes) -> None:
    # Only CRLF.CRLF ends DATA (RFC 5321 section 4.1.1.4): the fake end and the
    # "command" after it are content, and under the default policy the message is refused.
    h = in_data()
    assert h.feed(smuggled) == b""
    assert h.conn.state is SMTPState.DATA
    out = h.feed(b"tail\r\n.\r\n")
    assert out == b"550 5.6.0 Message contains bare CR or LF; lines must end with CRLF\r\n"
    assert h.messages == [] and h.rejected[0].reason == "bare-newline"
    assert not any("evil" in str(e) for e in h.events if type(e).__name__ == "MailFrom")


def test_bare_newlines_normalised_when_configured() -> None:
    h = in_data(SMTPServerConfig(hostname=HOST, bare_newlines="normalise"))
    out = h.feed(b"a\n.\nb\rc\r\r\nd\r\n.\r\n")
    assert out == b"250 2.0.0 OK\r\n"
    assert h.messages == [b"a\r\n.\r\nb\r\nc\r\n\r\nd\r\n"]


def test_normalising_is_independent_of_chunking() -> None:
    wire = b"x\ry\r\n\nz\r" + b"\r\nq\n" * 3 + b"\r\n.\r\n"
    bodies = set()
    for size in range(1, 8):
        h = in_data(SMTPServerConfig(hostname=HOST, bare_newlines="normalise"))
        for i in range(0, len(wire), size):
            h.feed(wire[i : i + size])
        bodies.add(h.messages[0])
    assert bodies == {b"x\r\ny\r\n\r\nz\r\n\r\nq\r\n\r\nq\r\n\r\nq\r\n\r\n"}


def test_oversize_message_is_read_to_the_end_then_refused() -> None:
    h = in_data(SMTPServerConfig(hostname=HOST, max_message_size=1000))
    for _ in range(50):
        assert h.feed(b"x" * 98 + b"\r\n") == b""
    received = sum(len(e.data) for e in h.events if isinstance(e, DataChunk))
    assert received <= 1000  # nothing past the limit is handed on
    assert h.feed(b".\r\nNOOP\r\n") == (
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"
    )
    assert h.rejected[0].reason == "size" and h.messages == []


def test_exact_size_is_accepted() -> None:
    h = in_data(SMTPServerConfig(hostname=HOST, max_message_size=10))
    assert h.feed(b"12345678\r\n.\r\n") == b"250 2.0.0 OK\r\n"


def test_overlong_text_line_is_refused_after_the_end() -> None:
    h = in_data()
    assert h.feed(b"ok\r\n" + b"y" * 998 + b"\r\n") == b""  # 1000 with CRLF: allowed
    assert h.feed(b"z" * 5000) == b""
    assert h.feed(b"z" * 5000 + b"\r\n.\r\n") == (
        b"550 5.6.0 Message contains a line longer than 1000 octets\r\n"
    )
    assert h.rejected[0].reason == "line-length"


def test_line_length_limit_can_be_lifted() -> None:
    h = in_data(SMTPServerConfig(hostname=HOST, max_text_line=0))
    assert h.feed(b"z" * 50000 + b"\r\n.\r\n") == b"250 2.0.0 OK\r\n"


def test_exactly_1000_octet_lines_pass_in_any_chunking() -> None:
    line = b"y" * 998 + b"\r\n"
    wire = (line * 5) + b".\r\n"
    for size in (1, 999, 1000, 1001, 4096):
        h = in_data()
        out = b""
        for i in range(0, len(wire), size):
            out += h.feed(wire[i : i + size])
        assert out == b"250 2.0.0 OK\r\n", size


def test_data_refused_by_application_stays_in_command_mode() -> None:
    def app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        if type(event).__name__ == "DataStart":
            return Reply(451, "Try later", "4.3.0")
        return None if isinstance(event, DataChunk) else conn.default_reply(event)

    run_transcript(
        Harness(app=app),
        """
        S: 220 mx.example.org ESMTP
        C: HELO a.example
        C: MAIL FROM:<a@example.net>
        C: RCPT TO:<b@example.org>
        C: DATA
        S: 250 mx.example.org
        S: 250 2.1.0 OK
        S: 250 2.1.5 OK
        S: 451 4.3.0 Try later
        C: NOOP
        S: 250 2.0.0 OK
        """,
    )


def test_final_reply_is_the_applications_verdict() -> None:
    def app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        if isinstance(event, EndOfData):
            return Reply(554, "Message refused: virus found", "5.7.1")
        return None if isinstance(event, DataChunk) else conn.default_reply(event)

    h = Harness(app=app)
    h.greet()
    h.feed(OPEN + b"DATA\r\n")
    assert h.feed(b"x\r\n.\r\n") == b"554 5.7.1 Message refused: virus found\r\n"
    assert h.conn.state is SMTPState.READY


def test_peer_closing_inside_data_yields_connection_closed() -> None:
    h = in_data()
    h.feed(b"partial body\r\n")
    h.conn.receive_data(b"")
    h.pump()
    assert type(h.events[-1]).__name__ == "ConnectionClosed"
    assert h.messages == []


# ---- BDAT (RFC 3030) --------------------------------------------------------------------


def test_bdat_transaction_transcript() -> None:
    h = Harness()
    run_transcript(
        h,
        """
        S: 220 mx.example.org ESMTP
        C: EHLO client.example.net
        C: MAIL FROM:<a@example.net> BODY=8BITMIME
        C: RCPT TO:<b@example.org>
        C: BDAT 7\\r\\nhello\\r\\nBDAT 10 LAST\\r\\n.world\\r\\n
        S: 250-mx.example.org
        S: 250-PIPELINING
        S: 250-SIZE 36700160
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250 DSN
        S: 250 2.1.0 OK
        S: 250 2.1.5 OK
        S: 250 2.0.0 7 octets received
        S: 250 2.0.0 OK
        """,
    )
    # BDAT content is never unstuffed; the CRLF after the last chunk is just a line end.
    assert h.messages == [b"hello\r\n.world\r\n\r\n"]
    assert Bdat(7, False) in h.events and Bdat(10, True) in h.events
    assert BdatChunkEnd(7) in h.events


def test_bdat_split_at_every_byte() -> None:
    wire = OPEN + b"BDAT 11\r\nline one\r\nlBDAT 0\r\nBDAT 9 LAST\r\nine two\r\nQUIT\r\n"
    h = Harness()
    h.greet()
    out = b""
    for i in range(len(wire)):
        out += h.feed(wire[i : i + 1])
    assert h.messages == [b"line one\r\nline two\r\n"]
    assert out.endswith(
        b"250 2.0.0 11 octets received\r\n250 2.0.0 0 octets received\r\n250 2.0.0 OK\r\n"
        b"221 2.0.0 mx.example.org Service closing transmission channel\r\n"
    )


def test_bdat_zero_last_ends_an_empty_message() -> None:
    h = Harness()
    h.greet()
    h.feed(OPEN)
    assert h.feed(b"BDAT 0 LAST\r\n") == b"250 2.0.0 OK\r\n"
    assert h.messages == [b""]


def test_bdat_out_of_sequence_skips_its_octets() -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO client.example.net\r\n")
    # The 9 octets look like a command but are chunk data and must not be obeyed.
    assert h.feed(b"BDAT 11\r\nQUIT\r\nxxx\r\nNOOP\r\n") == (
        b"503 5.5.1 Need MAIL before BDAT\r\n250 2.0.0 OK\r\n"
    )
    assert h.conn.state is SMTPState.READY
    assert Bdat(11, False, accepted=False) in h.events


def test_bdat_without_ehlo_is_not_offered_and_skipped() -> None:
    h = Harness()
    h.greet()
    h.feed(b"HELO client.example.net\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n")
    assert h.feed(b"BDAT 4 LAST\r\nQUIT") == b"502 5.5.1 BDAT not offered\r\n"
    assert h.conn.state is SMTPState.RCPT


def test_bdat_bad_syntax_closes_because_the_octets_cannot_be_skipped() -> None:
    h = Harness()
    h.greet()
    h.feed(OPEN)
    assert h.feed(b"BDAT many\r\n") == b"421 4.5.0 Bad BDAT syntax, cannot continue\r\n"
    assert h.conn.state is SMTPState.CLOSED


def test_bdat_size_with_many_leading_zeros_still_counts_its_octets() -> None:
    # Regression: the size was cut to 30 characters before parsing, so 35 zeros and a 6
    # read as 0 and the chunk's 6 octets ("RSET\r\n") were obeyed as a command
    # (RFC 3030 section 2: chunk-size = 1*DIGIT).
    h = Harness()
    h.greet()
    h.feed(OPEN)
    size = b"0" * 35 + b"6"
    assert h.feed(b"BDAT " + size + b" LAST\r\nRSET\r\n") == b"250 2.0.0 OK\r\n"
    assert h.messages == [b"RSET\r\n"]
    assert Bdat(6, True) in h.events


def test_data_after_bdat_and_rcpt_after_bdat_are_refused() -> None:
    h = Harness()
    h.greet()
    h.feed(OPEN)
    assert h.feed(b"BDAT 3\r\nabc") == b"250 2.0.0 3 octets received\r\n"
    assert h.feed(b"DATA\r\n") == b"503 5.5.1 DATA after BDAT\r\n"
    assert h.feed(b"RCPT TO:<c@example.org>\r\n") == b"503 5.5.1 RCPT after BDAT\r\n"
    assert h.feed(b"BDAT 3 LAST\r\ndef") == b"250 2.0.0 OK\r\n"
    assert h.messages == [b"abcdef"]


def test_bdat_oversize_fails_the_transaction_at_the_chunk() -> None:
    h = Harness(SMTPServerConfig(hostname=HOST, max_message_size=10))
    h.greet()
    h.feed(OPEN)
    assert h.feed(b"BDAT 8\r\n12345678") == b"250 2.0.0 8 octets received\r\n"
    assert h.feed(b"BDAT 8\r\n12345678") == (
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    )
    assert h.feed(b"BDAT 2 LAST\r\nxx") == b"503 5.5.1 Need MAIL before BDAT\r\n"
    assert h.messages == []


def test_bdat_bare_newline_checks_span_chunks() -> None:
    h = Harness()
    h.greet()
    h.feed(OPEN)
    h.feed(b"BDAT 3\r\nab\r")  # CR at the end of a chunk, LF in the next: fine
    assert h.feed(b"BDAT 3 LAST\r\n\ncd") == b"250 2.0.0 OK\r\n"
    assert h.rejected == [] and h.messages == [b"ab\r\ncd"]
    h.feed(OPEN[len(b"EHLO client.example.net\r\n") :])
    h.feed(b"BDAT 3\r\nab\r")
    out = h.feed(b"BDAT 1 LAST\r\nc")
    assert out == b"550 5.6.0 Message contains bare CR or LF; lines must end with CRLF\r\n"
    assert isinstance(h.events[-1], DataRejected)


def test_bdat_trailing_bare_cr_normalised() -> None:
    h = Harness(SMTPServerConfig(hostname=HOST, bare_newlines="normalise"))
    h.greet()
    h.feed(OPEN)
    assert h.feed(b"BDAT 3 LAST\r\nab\r") == b"250 2.0.0 OK\r\n"
    assert h.messages == [b"ab\r\n"]


def test_bdat_after_all_recipients_refused_gets_554_and_is_skipped() -> None:
    def app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        if type(event).__name__ == "RcptTo":
            return Reply(550, "No such user", "5.1.1")
        return None if isinstance(event, DataChunk | Bdat) else conn.default_reply(event)

    h = Harness(app=app)
    h.greet()
    h.feed(OPEN)
    assert h.feed(b"BDAT 6 LAST\r\nNOOP\r\nRSET\r\n") == (
        b"554 5.5.1 No valid recipients\r\n250 2.0.0 OK\r\n"
    )


def test_a_flood_of_dot_lines_is_unstuffed_in_bulk() -> None:
    # More stuffed dots per chunk than the per-line budget: the bulk path must agree.
    body = b"".join(b".%d\r\n" % i for i in range(40000)) + b"..\r\n"
    wire = (b"\r\n" + body).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\nNOOP\r\n"
    h = in_data(SMTPServerConfig(hostname=HOST, max_message_size=0))
    out = b""
    for i in range(0, len(wire), 65536):
        out += h.feed(wire[i : i + 65536])
    assert out == b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n"
    assert h.messages == [body]


def test_data_takes_no_argument() -> None:
    h = Harness()
    h.greet()
    h.feed(OPEN)
    assert h.feed(b"DATA now\r\n") == b"501 5.5.4 Syntax: DATA\r\n"
    assert h.conn.state is SMTPState.RCPT


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
