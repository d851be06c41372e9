"""The shared receive buffer: lines, overlong lines dropped, no rescans, raw takes."""

from hypothesis import given
from hypothesis import strategies as st

from nosend_proto._receivebuffer import OVERLONG, ReceiveBuffer


def test_lines_keep_their_terminator() -> None:
    buf = ReceiveBuffer(max_line=100)
    buf.feed(b"EHLO a\r\nNOOP\nQU")
    assert buf.next_line() == b"EHLO a\r\n"
    assert buf.next_line() == b"NOOP\n"
    assert buf.next_line() is None
    buf.feed(b"IT\r\n")
    assert buf.next_line() == b"QUIT\r\n"


def test_overlong_line_is_dropped_as_it_arrives() -> None:
    buf = ReceiveBuffer(max_line=10)
    for _ in range(1000):
        buf.feed(b"x" * 100)
        assert buf.next_line() is None
        assert len(buf) <= 100
    buf.feed(b"tail\r\nNOOP\r\n")
    assert buf.next_line() is OVERLONG
    assert buf.next_line() == b"NOOP\r\n"


def test_line_exactly_at_the_limit_is_kept() -> None:
    buf = ReceiveBuffer(max_line=6)
    buf.feed(b"NOOP\r\nNOOPX\r\n")
    assert buf.next_line() == b"NOOP\r\n"
    assert buf.next_line() is OVERLONG


def test_take_and_clear() -> None:
    buf = ReceiveBuffer(max_line=10)
    buf.feed(b"abcdef")
    assert buf.take(4) == b"abcd"
    assert buf.take(100) == b"ef"
    assert buf.take(100) == b""
    buf.feed(b"injected\r\n")
    assert buf.clear() == 10
    assert buf.next_line() is None


def test_clear_drops_every_place_input_waits() -> None:
    # STARTTLS/STLS: a line found ahead, a half-searched line and unsearched chunks all go.
    buf = ReceiveBuffer(max_line=100)
    buf.feed(b"NOOP\r\n")
    buf.feed(b"MAIL FROM:<a@b>\r\nRC")
    buf.feed(b"PT TO:<c@d>\r\n")
    assert buf.has_line()
    assert buf.next_line() == b"NOOP\r\n"
    assert buf.has_line()  # MAIL, found ahead and kept
    assert len(buf) == 17 + 2 + 13  # MAIL ahead, "RC" searched, the last chunk not yet
    assert buf.clear() == 32
    assert not buf and len(buf) == 0
    assert not buf.has_line() and buf.next_line() is None and buf.take(10) == b""


def test_a_line_found_ahead_is_still_raw_bytes_for_take() -> None:
    buf = ReceiveBuffer(max_line=100)
    buf.feed(b"body\r\n.\r\n")
    assert buf.has_line()
    assert buf.take(100) == b"body\r\n.\r\n"  # in order, the line ahead first
    assert buf.take(100) == b""


def test_unread_goes_in_front_of_everything() -> None:
    buf = ReceiveBuffer(max_line=100)
    buf.feed(b"DATA\r\nhello\r\n.\r\nNO")
    buf.feed(b"OP\r\n")
    assert buf.next_line() == b"DATA\r\n"
    body = buf.take(1 << 62)
    end = body.index(b".\r\n") + 3
    buf.unread(body[end:])
    assert buf.next_line() == b"NOOP\r\n"


@given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=30))
def test_chunking_does_not_change_lines(data: bytes, cuts: list[int]) -> None:
    whole = ReceiveBuffer(max_line=40)
    whole.feed(data)
    expected = []
    while (line := whole.next_line()) is not None:
        expected.append(line)
    pieces = ReceiveBuffer(max_line=40)
    got = []
    pos = 0
    for cut in cuts + [len(data)]:
        pieces.feed(data[pos : pos + cut])
        pos += cut
        while (line := pieces.next_line()) is not None:
            got.append(line)
        assert len(pieces) <= 40 + 50
    assert got == expected


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
