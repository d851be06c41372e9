"""Regression examples for the dot-line scan of the POP3 encoder and ``is_deleted``.

The encoder finds lines starting with "." with a regular expression on the CRLF text
(``_DOT_LINE``) instead of ``bytes.find``; these examples pin the places where such a
scan can go wrong: a dot at either end of a chunk, dot lines past the bulk-replace
threshold, prose full of the letters that share bloom bits with CR, LF and ".", and CR
runs right before a dotted line.
"""

from __future__ import annotations

import pytest

from nosend_proto._pop3_stuffing import _STUFF_LOOP_MAX, MessageEncoder
from tests.proto.test_pop3_support import logged_in, reference_encode


def encode(chunks: list[bytes]) -> bytes:
    encoder = MessageEncoder()
    return b"".join(encoder.feed(c) for c in chunks) + encoder.finish()


PROSE = b"Many men mean no harm, Jenny.\n"


@pytest.mark.parametrize(
    "content",
    [
        PROSE * 50,
        PROSE * 20 + b".\n" + PROSE * 20,
        b"." + PROSE + b"x\n.",
        (b".\n" + PROSE) * (_STUFF_LOOP_MAX + 3),
        (b"..\n") * (_STUFF_LOOP_MAX * 2 + 1),
        b"a\r\r\n.b\r\n\r\r\n..c\r\n",
        b"a\r.\n\r\n.\rb\n",
        b"\n." * 5,
    ],
)
@pytest.mark.parametrize("chunk", [1, 2, 3, 31, 4096])
def test_dot_lines_at_any_chunking(content: bytes, chunk: int) -> None:
    chunks = [content[i : i + chunk] for i in range(0, len(content), chunk)]
    assert encode(chunks) == reference_encode(content)


def test_is_deleted_follows_dele_and_rset() -> None:
    session = logged_in()
    conn = session.conn
    assert not conn.is_deleted(1)
    assert session.say("DELE 2").startswith("+OK")
    assert conn.is_deleted(2) and not conn.is_deleted(1)
    assert conn.deleted_msgnos() == (2,)
    assert not conn.is_deleted(0) and not conn.is_deleted(10**6)
    assert session.say("RSET").startswith("+OK")
    assert not conn.is_deleted(2)
