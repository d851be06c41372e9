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
    assert buf.take_all() == b"ef"
    buf.feed(b"injected\r\n")
    assert buf.clear() == 10
    assert buf.next_line() is None


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
