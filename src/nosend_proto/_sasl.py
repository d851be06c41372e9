"""SASL framing shared by the SMTP (RFC 4954) and POP3 (RFC 5034) engines, both roles.

Owns: the mechanisms PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login) and CRAM-MD5
(RFC 2195) as small state machines over *decoded* bytes (client side also XOAUTH2 and
OAUTHBEARER, RFC 7628, with a bearer token in place of the password), plus the base64
line framing both protocols share (RFC 4954 section 4 / RFC 5034 section 4: ``*``
cancels, ``=`` is an empty initial response, bad base64 fails the exchange). It never
checks a password: it hands the application a ``Credentials`` value and the application
decides.

Must not: know the protocol's reply codes or prefixes (``334``/``+``), hold secrets beyond
the exchange, or read clocks or randomness. The CRAM-MD5 challenge is built by the engine
from a nonce the application supplies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

__all__ = [
    "SERVER_MECHANISMS",
    "CLIENT_MECHANISMS",
    "Credentials",
    "SaslChallenge",
    "SaslSuccess",
    "SaslFailure",
    "SaslStep",
    "SaslServer",
    "SaslClient",
    "decode_sasl_line",
    "encode_sasl_data",
]

#: Mechanisms the server engines implement, in the order they are advertised.
SERVER_MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN", "CRAM-MD5")

# RFC 4616 section 2: each of authzid, authcid and passwd is at most 255 UTF-8 octets.
_PLAIN_FIELD_MAX = 255


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client proved it knows; the application checks it against its store.

    For password mechanisms (PLAIN, LOGIN, POP3 USER/PASS) ``password`` is set. For
    shared-secret mechanisms (CRAM-MD5, POP3 APOP) ``challenge`` and ``digest`` are set
    and :meth:`matches_secret` checks them against the plaintext-equivalent secret.
    """

    mechanism: str
    username: str
    authzid: str = ""
    password: str | None = None
    challenge: bytes | None = None
    digest: str | None = None

    def __repr__(self) -> str:
        # Never show a secret, even in a traceback or a debug log.
        return (
            f"Credentials(mechanism={self.mechanism!r}, username={self.username!r}, "
            f"authzid={self.authzid!r}, password={'***' if self.password else None})"
        )

    def matches_secret(self, secret: str) -> bool:
        """Check a CRAM-MD5 or APOP digest, or a plain password, against ``secret``."""
        if self.password is not None:
            return hmac.compare_digest(self.password.encode(), secret.encode())
        if self.challenge is None or self.digest is None:
            return False
        if self.mechanism == "APOP":
            # RFC 1939 section 7: MD5 of the greeting's timestamp followed by the secret.
            expected = hashlib.md5(self.challenge + secret.encode()).hexdigest()
        else:
            # RFC 2195 section 2: HMAC-MD5 keyed with the secret over the challenge.
            expected = hmac.new(secret.encode(), self.challenge, hashlib.md5).hexdigest()
        return hmac.compare_digest(expected, self.digest.lower())


@dataclass(frozen=True, slots=True)
class SaslChallenge:
    """The server must send ``data`` (raw, not yet base64) and wait for a response."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SaslSuccess:
    """The exchange is complete; ``credentials`` await the application's verdict."""

    credentials: Credentials


@dataclass(frozen=True, slots=True)
class SaslFailure:
    """The exchange failed: ``cancelled`` (client sent ``*``) or a malformed response."""

    reason: str
    cancelled: bool = False


SaslStep = SaslChallenge | SaslSuccess | SaslFailure


def decode_sasl_line(line: bytes) -> bytes | SaslFailure:
    """Decode one client response line (terminator already removed).

    ``*`` cancels (RFC 4954 section 4); ``=`` is the empty response; anything that is not
    strict base64 fails.
    """
    text = line.strip(b" \t")
    if text == b"*":
        return SaslFailure("authentication cancelled by client", cancelled=True)
    if text == b"=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return SaslFailure("invalid base64 in SASL response")


def encode_sasl_data(data: bytes) -> bytes:
    """Base64-encode a challenge or response for the wire (empty stays empty)."""
    return base64.b64encode(data)


def _utf8(raw: bytes, what: str) -> str | SaslFailure:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return SaslFailure(f"{what} is not valid UTF-8")


class SaslServer:
    """One server-side SASL exchange.

    Create it with the mechanism name (already checked by the engine against what it
    offers), the decoded initial response or ``None``, and the challenge string CRAM-MD5
    should use. Call :meth:`start` once, then :meth:`respond` with each decoded client
    response until a ``SaslSuccess`` or ``SaslFailure`` comes back.
    """

    __slots__ = ("mechanism", "_initial", "_challenge", "_step", "_username")

    def __init__(self, mechanism: str, initial_response: bytes | None, challenge: bytes) -> None:
        mechanism = mechanism.upper()
        if mechanism not in SERVER_MECHANISMS:
            raise ValueError(f"unsupported SASL mechanism {mechanism!r}")
        self.mechanism = mechanism
        self._initial = initial_response
        self._challenge = challenge
        self._step = 0
        self._username = ""

    def start(self) -> SaslStep:
        """Begin the exchange: the first challenge, or the result of the initial response."""
        if self.mechanism == "PLAIN":
            if self._initial is None:
                # RFC 4954 section 4: no initial response, so send an empty challenge.
                return SaslChallenge(b"")
            return self._plain(self._initial)
        if self.mechanism == "LOGIN":
            if self._initial is None:
                return SaslChallenge(b"Username:")
            return self._login_username(self._initial)
        # CRAM-MD5 is server-first: an initial response is a protocol error (RFC 4954 s4).
        if self._initial is not None:
            return SaslFailure("CRAM-MD5 does not take an initial response")
        self._step = 1
        return SaslChallenge(self._challenge)

    def respond(self, response: bytes) -> SaslStep:
        """Feed one decoded client response."""
        if self.mechanism == "PLAIN":
            return self._plain(response)
        if self.mechanism == "LOGIN":
            if self._step == 0:
                return self._login_username(response)
            password = _utf8(response, "password")
            if isinstance(password, SaslFailure):
                return password
            return SaslSuccess(Credentials("LOGIN", self._username, password=password))
        return self._cram(response)

    def _plain(self, raw: bytes) -> SaslStep:
        # RFC 4616 section 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
        parts = raw.split(b"\0")
        if len(parts) != 3:
            return SaslFailure("PLAIN response must be authzid NUL authcid NUL password")
        if not parts[1] or not parts[2] or any(len(p) > _PLAIN_FIELD_MAX for p in parts):
            return SaslFailure("PLAIN response has an empty or overlong field")
        fields = [_utf8(p, "PLAIN field") for p in parts]
        for field in fields:
            if isinstance(field, SaslFailure):
                return field
        authzid, authcid, password = (str(f) for f in fields)
        return SaslSuccess(Credentials("PLAIN", authcid, authzid=authzid, password=password))

    def _login_username(self, raw: bytes) -> SaslStep:
        username = _utf8(raw, "username")
        if isinstance(username, SaslFailure):
            return username
        if not username:
            return SaslFailure("empty username")
        self._username = username
        self._step = 1
        return SaslChallenge(b"Password:")

    def _cram(self, raw: bytes) -> SaslStep:
        # RFC 2195 section 2: response = user SP 32 lowercase hex digits
        text = _utf8(raw, "CRAM-MD5 response")
        if isinstance(text, SaslFailure):
            return text
        user, sep, digest = text.rpartition(" ")
        if not sep or not user or len(digest) != 32:
            return SaslFailure("CRAM-MD5 response must be 'user digest'")
        try:
            int(digest, 16)
        except ValueError:
            return SaslFailure("CRAM-MD5 digest is not hexadecimal")
        return SaslSuccess(
            Credentials("CRAM-MD5", user, challenge=self._challenge, digest=digest.lower())
        )


#: Mechanisms :class:`SaslClient` implements, strongest first: a client engine offered
#: several of those the application allows picks the first of this order. The bearer-token
#: mechanisms (RFC 7628) never reveal a password; CRAM-MD5 (RFC 2195) sends a keyed digest;
#: PLAIN and LOGIN send the password itself (only ever over TLS, the engines' default).
CLIENT_MECHANISMS: tuple[str, ...] = ("OAUTHBEARER", "XOAUTH2", "CRAM-MD5", "PLAIN", "LOGIN")

# Mechanisms whose first message is the client's, complete in one go.
_CLIENT_FIRST = frozenset({"PLAIN", "XOAUTH2", "OAUTHBEARER"})


def _gs2_saslname(name: str) -> str:
    # RFC 5801 section 4: in a gs2-header's authzid, "=" becomes "=3D" and "," "=2C".
    return name.replace("=", "=3D").replace(",", "=2C")


class SaslClient:
    """The client side of PLAIN, LOGIN, CRAM-MD5, XOAUTH2 and OAUTHBEARER.

    ``password`` is the secret: the password for PLAIN, LOGIN and CRAM-MD5, the OAuth 2.0
    bearer token for XOAUTH2 and OAUTHBEARER (RFC 7628). ``host`` and ``port`` are the
    server's, sent by OAUTHBEARER when given (RFC 7628 section 3.1, optional).

    ``initial_response()`` gives what to put on the AUTH line (``None`` when the
    mechanism is server-first); ``respond(challenge)`` answers each decoded challenge. A
    client-first mechanism whose initial response was not sent (too long for the command
    line, RFC 4954 section 4) gives it as the answer to the first, empty, challenge. A
    challenge after a token mechanism's response is the server's error report: the
    answer is the empty response for XOAUTH2 (Google's protocol description) and a single
    ``0x01`` for OAUTHBEARER (RFC 7628 section 3.2.3), after which the server fails the
    exchange. ``error`` then holds the decoded report (JSON, RFC 7628 section 3.2.2).
    """

    __slots__ = (
        "mechanism",
        "_username",
        "_password",
        "_authzid",
        "_host",
        "_port",
        "_step",
        "_initial_sent",
        "error",
    )

    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        authzid: str = "",
        *,
        host: str = "",
        port: int | None = None,
    ) -> None:
        mechanism = mechanism.upper()
        if mechanism not in CLIENT_MECHANISMS:
            raise ValueError(f"unsupported SASL mechanism {mechanism!r}")
        if mechanism in ("XOAUTH2", "OAUTHBEARER"):
            # The fields are separated by 0x01 (RFC 7628 section 3.1): none may hold one.
            if any("\x01" in field for field in (username, password, authzid, host)):
                raise ValueError("OAuth fields must not contain 0x01")
        self.mechanism = mechanism
        self._username = username
        self._password = password
        self._authzid = authzid
        self._host = host
        self._port = port
        self._step = 0
        self._initial_sent = False
        #: The server's error report after a failed token exchange, else ``None``.
        self.error: str | None = None

    def __repr__(self) -> str:
        # Never show the secret, even in a traceback or a debug log.
        return f"SaslClient(mechanism={self.mechanism!r}, username={self._username!r})"

    def initial_response(self) -> bytes | None:
        """The decoded initial response, or ``None`` for server-first mechanisms."""
        if self.mechanism not in _CLIENT_FIRST:
            return None
        self._initial_sent = True
        return self._first_message()

    def _first_message(self) -> bytes:
        if self.mechanism == "PLAIN":
            # RFC 4616 section 2: [authzid] NUL authcid NUL passwd
            return b"\0".join(s.encode() for s in (self._authzid, self._username, self._password))
        if self.mechanism == "XOAUTH2":
            # Google's XOAUTH2: "user=" user ^A "auth=Bearer " token ^A ^A
            return f"user={self._username}\x01auth=Bearer {self._password}\x01\x01".encode()
        # RFC 7628 section 3.1: gs2-header kvsep *(kvpair) kvsep, where the gs2-header
        # is "n," [ "a=" saslname ] "," (RFC 5801: no channel binding) and kvsep is 0x01.
        authzid = self._authzid or self._username
        pairs = []
        if self._host:
            pairs.append(f"host={self._host}\x01")
        if self._port is not None:
            pairs.append(f"port={self._port}\x01")
        pairs.append(f"auth=Bearer {self._password}\x01")
        gs2 = f"n,a={_gs2_saslname(authzid)}," if authzid else "n,,"
        return (gs2 + "\x01" + "".join(pairs) + "\x01").encode()

    def respond(self, challenge: bytes) -> bytes:
        """Answer one decoded challenge."""
        if self.mechanism in _CLIENT_FIRST:
            if not self._initial_sent:
                # RFC 4954 section 4: the initial response, after an empty challenge.
                self._initial_sent = True
                return self._first_message()
            if self.mechanism == "PLAIN":
                return b""  # PLAIN has no second step: an empty answer lets it fail
            self.error = challenge.decode("utf-8", "replace")
            # RFC 7628 section 3.2.3: OAUTHBEARER answers the error with a single 0x01;
            # XOAUTH2 (Google) with an empty response.
            return b"\x01" if self.mechanism == "OAUTHBEARER" else b""
        if self.mechanism == "LOGIN":
            self._step += 1
            if self._step == 1:
                return self._username.encode()
            return self._password.encode()
        # RFC 2195 section 2: user SP hex(HMAC-MD5(secret, challenge)).
        digest = hmac.new(self._password.encode(), challenge, hashlib.md5).hexdigest()
        return f"{self._username} {digest}".encode()
