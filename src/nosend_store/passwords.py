"""Password hashes and shared secrets as ``{SCHEME}`` strings, standard library only.

Owns: making, checking and recognising the password strings stored in ``mail.cfg``.
Must not: log, print or put a password or secret into an exception message.

Schemes (the ``{SCHEME}`` prefix is the convention Dovecot and OpenLDAP use, so a site
that outgrows nosend can copy ``{PBKDF2}`` hashes straight into a Dovecot passwd-file):

``{SCRYPT}$scrypt$ln=14,r=8,p=1$<salt>$<hash>``
    The default. After the prefix comes a PHC string (the password-hashing-competition
    format): ``ln`` is log2 of the scrypt cost N, ``r`` the block size, ``p`` the
    parallelism; salt (16 bytes) and hash (32 bytes) are standard base64 without padding.
    Computed with :func:`hashlib.scrypt` (RFC 7914). Dovecot cannot read this scheme.

``{PBKDF2}$1$<salt>$<rounds>$<hex>``
    Dovecot's PBKDF2 scheme, byte for byte: PBKDF2-HMAC-SHA1 (RFC 8018 section 5.2)
    of the password with the 16 salt *characters* as the salt, 20 bytes of output in
    lower-case hex. ``doveadm pw -t`` accepts what :func:`hash_password` makes with
    ``scheme="PBKDF2"``; we use more rounds than Dovecot's default of 5000.

``{PLAIN.B64}<base64>``
    Not a hash: the plaintext-equivalent secret that APOP (RFC 1939 section 7) and
    CRAM-MD5 (RFC 2195) need, base64-encoded only so that any character survives the
    line-oriented file (Dovecot reads the same notation). Opt-in per mailbox.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = [
    "DEFAULT_SCHEME",
    "SCHEMES",
    "dummy_hash",
    "dummy_hash_like",
    "hash_password",
    "verify_password",
    "needs_rehash",
    "hash_syntax_error",
    "encode_shared_secret",
    "decode_shared_secret",
    "generate_password",
]

#: The scheme :func:`hash_password` uses unless told otherwise.
DEFAULT_SCHEME = "SCRYPT"
#: Schemes this module can make and verify.
SCHEMES: tuple[str, ...] = ("SCRYPT", "PBKDF2")

# scrypt: N=2**14, r=8 costs 16 MiB and some tens of milliseconds per check; RFC 7914
# section 2 leaves the choice to the application.
_SCRYPT_LN = 14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_SALT_BYTES = 16
_SCRYPT_HASH_BYTES = 32
# Upper bounds on what a stored string may ask of us, so a bad file cannot make every
# login burn a gigabyte or a minute.
_SCRYPT_MAX_LN = 20
_SCRYPT_MAX_R = 32
_SCRYPT_MAX_P = 16
_SCRYPT_MAXMEM = 1 << 30

_PBKDF2_ROUNDS = 100_000
_PBKDF2_MAX_ROUNDS = 10_000_000
_PBKDF2_SALT_CHARS = 16
# Dovecot draws salt characters from this alphabet (password-scheme.c, salt_chars).
_SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

_SCRYPT_RE = re.compile(
    r"\{SCRYPT\}\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})"
    r"\$([A-Za-z0-9+/]{2,88})\$([A-Za-z0-9+/]{16,88})"
)
_PBKDF2_RE = re.compile(r"\{PBKDF2\}\$1\$([^$]{1,64})\$(\d{1,9})\$([0-9a-fA-F]{40})")
_PLAIN_B64_PREFIX = "{PLAIN.B64}"


@dataclass(frozen=True, slots=True)
class _Scrypt:
    ln: int
    r: int
    p: int
    salt: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class _Pbkdf2:
    salt: str
    rounds: int
    digest: bytes


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _parse(stored: str) -> _Scrypt | _Pbkdf2 | str:
    """Return the parsed hash, or a message saying what is wrong with it."""
    if not stored.startswith("{"):
        # Most often a password typed in by hand: say how to store it instead.
        return ("a password hash must start with {SCHEME}, e.g. {SCRYPT}; a plaintext "
                "password is never stored: set it with `nosend user passwd NAME`")
    scheme = stored[1 : stored.find("}")] if "}" in stored else ""
    if scheme == "SCRYPT":
        m = _SCRYPT_RE.fullmatch(stored)
        if m is None:
            return "malformed {SCRYPT} hash"
        ln, r, p = int(m[1]), int(m[2]), int(m[3])
        if not (1 <= ln <= _SCRYPT_MAX_LN and 1 <= r <= _SCRYPT_MAX_R and 1 <= p <= _SCRYPT_MAX_P):
            return "{SCRYPT} parameters out of range"
        try:
            salt, digest = _b64decode(m[4]), _b64decode(m[5])
        except (binascii.Error, ValueError):
            return "malformed base64 in {SCRYPT} hash"
        return _Scrypt(ln, r, p, salt, digest)
    if scheme == "PBKDF2":
        m = _PBKDF2_RE.fullmatch(stored)
        if m is None:
            return "malformed {PBKDF2} hash (expected {PBKDF2}$1$salt$rounds$40-hex-digits)"
        rounds = int(m[2])
        if not 1 <= rounds <= _PBKDF2_MAX_ROUNDS:
            return "{PBKDF2} rounds out of range"
        return _Pbkdf2(m[1], rounds, bytes.fromhex(m[3]))
    return f"unsupported password scheme {{{scheme}}}; use one of " + ", ".join(
        "{" + s + "}" for s in SCHEMES
    )


def hash_syntax_error(stored: str) -> str | None:
    """Return why ``stored`` is not a usable password hash, or ``None`` if it is."""
    parsed = _parse(stored)
    return parsed if isinstance(parsed, str) else None


def _scrypt(password: str, h: _Scrypt) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=h.salt,
        n=1 << h.ln,
        r=h.r,
        p=h.p,
        maxmem=_SCRYPT_MAXMEM,
        dklen=len(h.digest),
    )


def _pbkdf2(password: str, h: _Pbkdf2) -> bytes:
    return hashlib.pbkdf2_hmac(
        "sha1", password.encode("utf-8"), h.salt.encode("utf-8"), h.rounds, len(h.digest)
    )


def hash_password(password: str, scheme: str = DEFAULT_SCHEME) -> str:
    """Hash ``password`` with a fresh random salt and return the ``{SCHEME}`` string."""
    if scheme == "SCRYPT":
        h = _Scrypt(
            _SCRYPT_LN,
            _SCRYPT_R,
            _SCRYPT_P,
            secrets.token_bytes(_SCRYPT_SALT_BYTES),
            b"\0" * _SCRYPT_HASH_BYTES,
        )
        digest = _scrypt(password, h)
        return (
            f"{{SCRYPT}}$scrypt$ln={h.ln},r={h.r},p={h.p}${_b64encode(h.salt)}${_b64encode(digest)}"
        )
    if scheme == "PBKDF2":
        salt = "".join(secrets.choice(_SALT_ALPHABET) for _ in range(_PBKDF2_SALT_CHARS))
        p = _Pbkdf2(salt, _PBKDF2_ROUNDS, b"\0" * 20)
        return f"{{PBKDF2}}$1${salt}${p.rounds}${_pbkdf2(password, p).hex()}"
    raise ValueError(f"unsupported password scheme {scheme!r}; use one of {', '.join(SCHEMES)}")


def dummy_hash(scheme: str = DEFAULT_SCHEME) -> str:
    """A hash of ``scheme`` with today's parameters that no password matches.

    Check the password of a user who does not exist against it: the check then costs
    what a real user's does (same scheme, same parameters), so the time of a failed
    login does not tell which user names exist. Its digest is all zeros, which no
    password is known to produce (finding one means breaking the hash).
    """
    if scheme == "SCRYPT":
        salt = _b64encode(b"nosend-dummy-slt"[:_SCRYPT_SALT_BYTES])
        digest = _b64encode(b"\0" * _SCRYPT_HASH_BYTES)
        return f"{{SCRYPT}}$scrypt$ln={_SCRYPT_LN},r={_SCRYPT_R},p={_SCRYPT_P}${salt}${digest}"
    if scheme == "PBKDF2":
        salt = "nosend.dummy.slt"[:_PBKDF2_SALT_CHARS]
        return f"{{PBKDF2}}$1${salt}${_PBKDF2_ROUNDS}${'0' * 40}"
    raise ValueError(f"unsupported password scheme {scheme!r}; use one of {', '.join(SCHEMES)}")


def dummy_hash_like(stored: str) -> str:
    """A hash no password matches, of the scheme and parameters of ``stored`` (salt
    and digest of the same lengths), or :func:`dummy_hash` when ``stored`` is no usable
    hash: for a site whose mailboxes use other parameters than today's defaults, so that
    an unknown user costs what its real users cost."""
    parsed = _parse(stored)
    if isinstance(parsed, _Scrypt):
        salt = _b64encode(b"\1" * len(parsed.salt))
        digest = _b64encode(b"\0" * len(parsed.digest))
        return f"{{SCRYPT}}$scrypt$ln={parsed.ln},r={parsed.r},p={parsed.p}${salt}${digest}"
    if isinstance(parsed, _Pbkdf2):
        salt = "." * len(parsed.salt)
        return f"{{PBKDF2}}$1${salt}${parsed.rounds}${'0' * 2 * len(parsed.digest)}"
    return dummy_hash()


def verify_password(password: str, stored: str) -> bool:
    """Return whether ``password`` matches ``stored``; compares in constant time.

    A malformed or unknown ``stored`` string never matches (and never raises), so a
    broken entry locks its mailbox rather than opening it.
    """
    parsed = _parse(stored)
    if isinstance(parsed, _Scrypt):
        computed = _scrypt(password, parsed)
    elif isinstance(parsed, _Pbkdf2):
        computed = _pbkdf2(password, parsed)
    else:
        # A broken entry costs what a real one does, so a probe cannot tell it apart.
        verify_password(password, dummy_hash())
        return False
    return hmac.compare_digest(computed, parsed.digest)


def needs_rehash(stored: str, scheme: str = DEFAULT_SCHEME) -> bool:
    """Return whether ``stored`` should be replaced by a fresh :func:`hash_password`.

    True when it uses another scheme than ``scheme`` or weaker parameters than today's
    defaults; a caller that has just verified the password can then store a new hash.
    """
    parsed = _parse(stored)
    if scheme == "SCRYPT":
        return not (
            isinstance(parsed, _Scrypt)
            and parsed.ln >= _SCRYPT_LN
            and parsed.r >= _SCRYPT_R
            and len(parsed.salt) >= _SCRYPT_SALT_BYTES
            and len(parsed.digest) >= _SCRYPT_HASH_BYTES
        )
    if scheme == "PBKDF2":
        return not (
            isinstance(parsed, _Pbkdf2)
            and parsed.rounds >= _PBKDF2_ROUNDS
            and len(parsed.salt) >= _PBKDF2_SALT_CHARS
        )
    raise ValueError(f"unsupported password scheme {scheme!r}; use one of {', '.join(SCHEMES)}")


def encode_shared_secret(secret: str) -> str:
    """Return the ``{PLAIN.B64}`` form of a plaintext-equivalent secret for ``mail.cfg``."""
    return _PLAIN_B64_PREFIX + base64.b64encode(secret.encode("utf-8")).decode("ascii")


def decode_shared_secret(stored: str) -> str:
    """Return the secret in a ``{PLAIN.B64}`` string; ``ValueError`` (secret-free) if bad."""
    if not stored.startswith(_PLAIN_B64_PREFIX):
        raise ValueError("a shared secret must be written as {PLAIN.B64}<base64>")
    try:
        raw = base64.b64decode(stored[len(_PLAIN_B64_PREFIX) :], validate=True)
        secret = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise ValueError("malformed base64 or UTF-8 in {PLAIN.B64} shared secret") from None
    if not secret:
        raise ValueError("empty shared secret")
    return secret


def generate_password() -> str:
    """Return a new random password (about 128 bits) for a generated mailbox."""
    return secrets.token_urlsafe(16)
