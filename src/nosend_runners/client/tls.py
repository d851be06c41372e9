"""Client TLS contexts for upstream servers: verified by default, or pinned.

Owns: the ``ssl.SSLContext`` nosend uses when it is the client (the smarthost, remote
POP3 accounts) and the certificate-fingerprint check for providers with their own
certificates. Must not: read configuration files or open sockets.

Verification rules, most to least common:

* default: the system's CA store, host name checked (RFC 6125 via OpenSSL);
* ``ca_file``: that PEM bundle instead of the system store, host name still checked;
* ``fingerprint``: the SHA-256 of the server's certificate (DER) must match; neither CA
  nor host name is consulted, since a pinned certificate is usually self-signed. The
  match is checked after the handshake and before a byte of SMTP or POP3 goes out.

TLS 1.2 is the floor (RFC 8996 retires 1.0 and 1.1; RFC 8314 section 4.1).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
from pathlib import Path

__all__ = [
    "TLSVerifyError",
    "client_context",
    "certificate_fingerprint",
    "check_fingerprint",
    "normalise_fingerprint",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")


class TLSVerifyError(Exception):
    """The server's certificate is not the one the account trusts; says which was seen."""


def normalise_fingerprint(text: str) -> str:
    """Lower-case hex without colons; ``ValueError`` unless it is a SHA-256 digest."""
    value = text.strip().replace(":", "").lower()
    if not _HEX64.fullmatch(value):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits (colons allowed)")
    return value


def client_context(
    *, ca_file: str | Path | None = None, fingerprint: str | None = None, verify: bool = True
) -> ssl.SSLContext:
    """A client context for one account's rules (see the module docstring).

    ``verify=False`` (an account's ``tls_verify = no``) encrypts without checking who
    answers: chain and name are not verified. A ``fingerprint`` still pins.
    """
    if ca_file is not None and fingerprint is not None:
        raise ValueError("give ca_file or fingerprint, not both")
    if fingerprint is None and not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif fingerprint is not None:
        normalise_fingerprint(fingerprint)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # The pin replaces CA and name checks; check_fingerprint() is then mandatory.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        if ca_file is not None and not Path(ca_file).is_file():
            raise FileNotFoundError(f"{ca_file}: no such CA file")
        context = ssl.create_default_context(
            cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    return context


def certificate_fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as colon-separated upper-case hex."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def check_fingerprint(ssl_object: ssl.SSLObject | ssl.SSLSocket, fingerprint: str) -> None:
    """Raise :class:`TLSVerifyError` unless the peer's certificate has ``fingerprint``."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise TLSVerifyError("the server presented no certificate")
    seen = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(seen, normalise_fingerprint(fingerprint)):
        raise TLSVerifyError(
            f"certificate fingerprint {certificate_fingerprint(der)} is not the pinned one")
