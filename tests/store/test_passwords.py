"""Password hashes: published test vectors, Dovecot interop, rehash rules, secrets."""

from __future__ import annotations

import base64
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nosend_store import passwords
from nosend_store.passwords import (
    decode_shared_secret,
    encode_shared_secret,
    hash_password,
    hash_syntax_error,
    needs_rehash,
    verify_password,
)
from tests.conftest import require_tool


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


# RFC 7914 section 12, third vector: scrypt("pleaseletmein", "SodiumChloride", N=16384,
# r=8, p=1, dkLen=64).
RFC7914 = bytes.fromhex(
    "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
    "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887"
)
# RFC 6070, vector 2: PBKDF2-HMAC-SHA1("password", "salt", 2 rounds, 20 bytes).
RFC6070 = "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"
# Made by `doveadm pw -s PBKDF2 -p secret` (Dovecot 2.3).
DOVEADM_PBKDF2 = "{PBKDF2}$1$eFzuH/QboyM556Bl$5000$1fafca0e3cf50056af80d6caf8146bce22b7255e"


def test_scrypt_rfc7914_vector() -> None:
    stored = f"{{SCRYPT}}$scrypt$ln=14,r=8,p=1${_b64(b'SodiumChloride')}${_b64(RFC7914)}"
    assert hash_syntax_error(stored) is None
    assert verify_password("pleaseletmein", stored)
    assert not verify_password("pleaseletmein!", stored)


def test_pbkdf2_rfc6070_vector() -> None:
    stored = f"{{PBKDF2}}$1$salt$2${RFC6070}"
    assert verify_password("password", stored)
    assert not verify_password("Password", stored)


def test_verifies_a_hash_made_by_doveadm() -> None:
    assert verify_password("secret", DOVEADM_PBKDF2)
    assert not verify_password("secreT", DOVEADM_PBKDF2)


@pytest.mark.parametrize("scheme", passwords.SCHEMES)
def test_hash_then_verify(scheme: str) -> None:
    stored = hash_password("correct horse", scheme)
    assert stored.startswith("{" + scheme + "}")
    assert hash_syntax_error(stored) is None
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horse ", stored)
    assert not needs_rehash(stored, scheme)


def test_salts_differ() -> None:
    assert hash_password("same") != hash_password("same")


def test_non_ascii_password() -> None:
    stored = hash_password("Zöë ☃")
    assert verify_password("Zöë ☃", stored)
    assert not verify_password("Zoe ☃", stored)


@pytest.mark.interop
def test_doveadm_accepts_our_pbkdf2() -> None:
    doveadm = require_tool("doveadm")
    stored = hash_password("s3cret pw", "PBKDF2")
    # doveadm exits non-zero when the password does not match the given hash.
    ok = subprocess.run(
        [doveadm, "pw", "-t", stored, "-p", "s3cret pw"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert ok.returncode == 0, ok.stderr
    assert "verified" in ok.stdout + ok.stderr
    bad = subprocess.run(
        [doveadm, "pw", "-t", stored, "-p", "wrong"], capture_output=True, text=True, timeout=20
    )
    assert bad.returncode != 0


@pytest.mark.interop
def test_we_accept_doveadm_pbkdf2() -> None:
    doveadm = require_tool("doveadm")
    out = subprocess.run(
        [doveadm, "pw", "-s", "PBKDF2", "-p", "from dovecot"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout.strip()
    assert hash_syntax_error(out) is None
    assert verify_password("from dovecot", out)


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        ("plain", "must start with {SCHEME}"),
        ("{MD5}abc", "unsupported password scheme {MD5}"),
        ("{SCRYPT}garbage", "malformed {SCRYPT}"),
        ("{SCRYPT}$scrypt$ln=40,r=8,p=1$c2FsdHNhbHQ$" + "A" * 43, "out of range"),
        ("{SCRYPT}$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$" + "A" * 10, "malformed {SCRYPT}"),
        ("{SCRYPT}$scrypt$ln=14,r=8,p=1$c$" + "A" * 43, "malformed {SCRYPT}"),
        ("{PBKDF2}$1$salt$2$abc", "malformed {PBKDF2}"),
        ("{PBKDF2}$1$salt$0$" + "0" * 40, "rounds out of range"),
        ("{PBKDF2}$2$salt$5$" + "0" * 40, "malformed {PBKDF2}"),
    ],
)
def test_malformed_hashes_are_named_and_never_match(stored: str, problem: str) -> None:
    error = hash_syntax_error(stored)
    assert error is not None and problem in error
    assert verify_password("anything", stored) is False


def test_needs_rehash() -> None:
    weak_scrypt = f"{{SCRYPT}}$scrypt$ln=10,r=8,p=1${_b64(b'0123456789abcdef')}${_b64(b'x' * 32)}"
    weak_pbkdf2 = f"{{PBKDF2}}$1$abcdefghijklmnop$5000${'0' * 40}"
    assert needs_rehash(weak_scrypt)
    assert needs_rehash(DOVEADM_PBKDF2, "PBKDF2")  # Dovecot's 5000 rounds are below ours
    assert needs_rehash(weak_pbkdf2)  # other scheme than the default
    assert needs_rehash("{MD5}x")
    assert not needs_rehash(hash_password("x", "PBKDF2"), "PBKDF2")
    assert needs_rehash(hash_password("x", "PBKDF2"), "SCRYPT")
    with pytest.raises(ValueError):
        needs_rehash("x", "BCRYPT")
    with pytest.raises(ValueError):
        hash_password("x", "BCRYPT")


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=100))
def test_shared_secret_round_trip(secret: str) -> None:
    encoded = encode_shared_secret(secret)
    assert encoded.startswith("{PLAIN.B64}")
    assert " " not in encoded and "#" not in encoded and "\n" not in encoded
    assert decode_shared_secret(encoded) == secret


@pytest.mark.parametrize(
    "stored", ["s3cret", "{PLAIN}s3cret", "{PLAIN.B64}!!!!", "{PLAIN.B64}", "{PLAIN.B64}/w=="]
)
def test_bad_shared_secret_errors_do_not_leak_it(stored: str) -> None:
    with pytest.raises(ValueError) as info:
        decode_shared_secret(stored)
    assert "s3cret" not in str(info.value)


def test_generated_passwords_are_long_and_distinct() -> None:
    a, b = passwords.generate_password(), passwords.generate_password()
    assert a != b and len(a) >= 20
