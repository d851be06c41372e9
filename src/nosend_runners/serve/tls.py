"""Server TLS contexts from the certificate and key named in ``mail.cfg``.

Owns: building the ``ssl.SSLContext`` used for implicit TLS (RFC 8314) and for the
STARTTLS/STLS upgrade (RFC 3207, RFC 2595), and reporting a bad certificate as one clear
error naming the file. Must not: read configuration itself or touch sockets.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

__all__ = ["TLSConfigError", "TLSUnreadable", "server_context"]


class TLSConfigError(Exception):
    """The configured certificate or key cannot be used; the message names the file."""


class TLSUnreadable(TLSConfigError):
    """This process may not read the certificate or key (a server that gave up root)."""


def server_context(cert_file: str | Path, key_file: str | Path | None = None) -> ssl.SSLContext:
    """Return a server-side context for ``cert_file`` (PEM chain) and ``key_file``.

    ``key_file`` may be ``None`` when the key is in the certificate file. TLS 1.2 is the
    floor: RFC 8314 section 4.1 requires at least 1.2 and RFC 8996 retires 1.0/1.1.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Mail clients do not present certificates; we authenticate them with SASL/APOP.
    context.verify_mode = ssl.CERT_NONE
    context.options |= ssl.OP_NO_COMPRESSION  # CRIME (RFC 7457 section 2.6)
    # TLS 1.2: forward-secret AEAD suites only (RFC 7525 section 4.2), so no CBC suite is
    # offered (LUCKY13, RFC 7457 section 2.8). TLS 1.3's suites are all AEAD already.
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL")
    cert = Path(cert_file)
    key = Path(key_file) if key_file is not None else None
    for path in (cert, key):
        if path is None:
            continue
        try:
            if not path.is_file():
                raise TLSConfigError(f"{path}: no such file")
            with open(path, "rb"):
                pass
        except PermissionError:
            raise TLSUnreadable(f"{path}: cannot be read by uid {os.geteuid()}") from None
        except OSError:
            pass  # load_cert_chain below says what is wrong
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        named = f"{cert}" if key is None else f"{cert} / {key}"
        raise TLSConfigError(f"{named}: cannot load certificate and key: {exc}") from None
    return context
