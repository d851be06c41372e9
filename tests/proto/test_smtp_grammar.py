"""The SMTP grammar helpers (RFC 5321 section 4.1.2, RFC 3461 section 4 xtext)."""

from __future__ import annotations

import pytest

from nosend_proto._smtp_grammar import split_path_and_params, xtext_decode, xtext_encode


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
