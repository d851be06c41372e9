"""Byte-stuffing, line-end conversion, TOP truncation and wire size (RFC 1939 sections 3, 11).

Examples for every rule and every place a chunk boundary can fall; the hypothesis
properties in tests/fuzz/test_pop3_fuzz.py cover arbitrary content and chunkings.
"""

from __future__ import annotations

import pytest

from nosend_proto._pop3_stuffing import MessageEncoder
from nosend_proto.pop3_state import WireSizeCounter, wire_size
from tests.proto.test_pop3_support import reference_decode, reference_encode


def encode(chunks: list[bytes], top: int | None = None) -> bytes:
    encoder = MessageEncoder(top)
    return b"".join(encoder.feed(c) for c in chunks) + encoder.finish()


@pytest.mark.parametrize(
    ("content", "wire"),
    [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\n", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a\r", b"a\r\n.\r\n"),  # a final CR is a CRLF cut short
        (b"\n", b"\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\n", b"..\r\n.\r\n"),
        (b"..\n", b"...\r\n.\r\n"),
        (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n.\r\n", b"a\r\n..\r\n.\r\n"),
        (b"a\rb\n", b"a\rb\r\n.\r\n"),  # a bare CR inside a line is data
        (b"a\r\r\n", b"a\r\n.\r\n"),  # CRs right before LF belong to the line end
        (b"a\r\r", b"a\r\n.\r\n"),
        (b"\r", b"\r\n.\r\n"),
        (b"a\r\rb\r\n", b"a\r\rb\r\n.\r\n"),
        (b"\r.x\n", b"\r.x\r\n.\r\n"),  # the line starts with CR, not a dot
        (b"x.\n.y", b"x.\r\n..y\r\n.\r\n"),
        (b"\n\n.\n\n", b"\r\n\r\n..\r\n\r\n.\r\n"),
    ],
)
def test_encoding_examples(content: bytes, wire: bytes) -> None:
    assert encode([content]) == wire
    assert reference_encode(content) == wire
    assert wire_size(content) == len(reference_decode(wire))


@pytest.mark.parametrize(
    "chunks",
    [
        [b"a\r", b"\nb"],  # CRLF split
        [b"a\r", b"\r", b"\n"],  # a CR run before LF, split
        [b"a\r", b"\rb\n"],  # bare CRs split from their line
        [b"a\n\r", b"\r"],
        [b"a\n", b".b"],  # dot at the start of a chunk on a new line
        [b"a", b"\n", b".", b"b"],
        [b".", b".", b"\n"],  # a dot line needs stuffing only once
        [b"", b".x", b""],
        [b"a\r", b""],
        [b"a\r", b"", b"\n"],
        [b"\r", b"\n.", b"\r", b"\n"],
    ],
)
def test_chunk_boundaries(chunks: list[bytes]) -> None:
    content = b"".join(chunks)
    assert encode(chunks) == reference_encode(content)
    counter = WireSizeCounter()
    for chunk in chunks:
        counter.feed(chunk)
    assert counter.size == wire_size(content) == wire_size(chunks)


@pytest.mark.parametrize(
    ("content", "lines", "expected"),
    [
        (b"H: 1\n\nb1\nb2\n", 0, b"H: 1\r\n\r\n.\r\n"),
        (b"H: 1\n\nb1\nb2\n", 1, b"H: 1\r\n\r\nb1\r\n.\r\n"),
        (b"H: 1\n\nb1\nb2\n", 5, b"H: 1\r\n\r\nb1\r\nb2\r\n.\r\n"),
        (b"H: 1\nH: 2\n", 0, b"H: 1\r\nH: 2\r\n.\r\n"),  # no body at all
        (b"H: 1", 3, b"H: 1\r\n.\r\n"),
        (b"\nbody\n", 0, b"\r\n.\r\n"),  # empty header
        (b"\nbody\n", 1, b"\r\nbody\r\n.\r\n"),
        (b"H: 1\r\n\r\n.b1\r\n.b2\r\n", 1, b"H: 1\r\n\r\n..b1\r\n.\r\n"),
        (b"H: 1\n\nb1\nb2", 2, b"H: 1\r\n\r\nb1\r\nb2\r\n.\r\n"),
        (b"", 0, b".\r\n"),
    ],
)
@pytest.mark.parametrize("size", [1, 2, 3, 100])
def test_top_examples(content: bytes, lines: int, expected: bytes, size: int) -> None:
    chunks = [content[i : i + size] for i in range(0, len(content), size)]
    assert encode(chunks, lines) == expected
    assert reference_encode(content, lines) == expected


@pytest.mark.parametrize("size", [1, 5, 64, 10_000])
def test_many_dot_lines_in_one_chunk(size: int) -> None:
    # Past the per-chunk loop limit the encoder stuffs the rest in bulk: same result.
    content = b"".join(b"." * (i % 3) + b"%d\n" % i for i in range(300)) + b".end"
    chunks = [content[i : i + size] for i in range(0, len(content), size)]
    assert encode(chunks) == reference_encode(content)
    assert encode(chunks).count(b"\r\n..") >= 200


def test_top_stops_reading_once_done() -> None:
    encoder = MessageEncoder(1)
    assert encoder.feed(b"H: 1\n\nb1\nb2\n") == b"H: 1\r\n\r\nb1\r\n"
    assert encoder.done
    assert encoder.feed(b"more\n") == b""
    assert encoder.finish() == b".\r\n"


def test_wire_size_accepts_bytes_and_iterables() -> None:
    assert wire_size(b"a\nb") == 6
    assert wire_size([b"a\n", b"b"]) == 6
    assert wire_size(iter([b"a\r", b"\nb\n"])) == 6
    assert wire_size(bytearray(b"a\n")) == 3
    assert wire_size([]) == 0


def test_counter_size_can_be_read_midway() -> None:
    counter = WireSizeCounter()
    counter.feed(b"a")
    assert counter.size == 3
    copy = counter.copy()
    counter.feed(b"\n.b\n")
    assert counter.size == 7
    assert copy.size == 3
