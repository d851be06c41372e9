"""``nosend tls self-signed``: a certificate for a LAN with no certificate authority.

Owns: making a self-signed certificate and key with the ``openssl`` command (Python's
``ssl`` module can load certificates but not make them, and ``cryptography`` is not a
dependency), installing them where ``mail.cfg``'s ``tls_cert``/``tls_key`` point (or
beside ``mail.cfg``, setting those keys), and the SHA-256 fingerprint clients check
before accepting the certificate. Must not: print or log the key, or replace an
existing certificate unless asked (clients that accepted it would be warned again).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Certificate", "TLSCertError", "fingerprint", "make_self_signed", "register"]

#: Ten years: a LAN certificate is checked by its fingerprint, not by its dates, and
#: renewing it means every client must accept the new one.
DEFAULT_DAYS = 3650


class TLSCertError(Exception):
    """The certificate could not be made (no openssl, bad name, failed run)."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate and key just written, and what a client checks."""

    cert: Path
    key: Path
    hosts: tuple[str, ...]
    #: SHA-256 of the certificate (DER), as clients show it: ``AB:CD:...``.
    sha256: str


def fingerprint(cert_pem: str) -> str:
    """The SHA-256 fingerprint of the first certificate in ``cert_pem``, colon-separated."""
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _subject_alt_names(hosts: Sequence[str]) -> str:
    names = []
    for host in hosts:
        try:
            names.append(f"IP:{ipaddress.ip_address(host.strip('[]'))}")
        except ValueError:
            if not host or any(c in host for c in ",/=\\ \t\n") or host.startswith("-"):
                raise TLSCertError(f"bad host name {host!r}") from None
            names.append(f"DNS:{host}")
    return ",".join(names)


def make_self_signed(
    cert: Path, key: Path, hosts: Sequence[str], *, days: int = DEFAULT_DAYS, force: bool = False
) -> Certificate:
    """Write a self-signed certificate for ``hosts`` to ``cert`` and its key to ``key``.

    The key is mode 0600 from its creation on (made in a private temporary folder and
    renamed into place). Refuses to replace existing files unless ``force``.
    """
    if not hosts:
        raise TLSCertError("no host name for the certificate")
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TLSCertError(
            "the openssl command is needed to make a certificate (Debian: apt install openssl)"
        )
    if not force:
        for path in (cert, key):
            if path.exists():
                raise TLSCertError(
                    f"{path} already exists; --force replaces it (clients must then "
                    "accept the new certificate)"
                )
    san = _subject_alt_names(hosts)
    for path in (cert, key):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # In the key's folder, so that the final rename stays on one filesystem.
    work = Path(tempfile.mkdtemp(prefix=".nosend-tls.", dir=key.parent))
    try:
        new_key, new_cert = work / "key.pem", work / "cert.pem"
        result = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes",
             "-days", str(days), "-subj", f"/CN={hosts[0].strip('[]')}",
             "-addext", f"subjectAltName={san}",
             "-keyout", str(new_key), "-out", str(new_cert)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise TLSCertError(f"openssl failed: {last}")
        os.chmod(new_key, 0o600)
        os.chmod(new_cert, 0o644)
        pem = new_cert.read_text()
        os.replace(new_key, key)
        os.replace(new_cert, cert)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Certificate(cert, key, tuple(hosts), fingerprint(pem))


def describe(made: Certificate) -> list[str]:
    """What to tell the administrator, who tells the users."""
    return [
        f"certificate {made.cert} for {', '.join(made.hosts)}",
        f"key {made.key} (mode 0600)",
        f"SHA-256 fingerprint: {made.sha256}",
        "A mail client warns that it does not know this certificate: accept it only if",
        "the fingerprint it shows is the one above.",
    ]


# -- the `nosend tls` command -------------------------------------------------------------

_EPILOG = """\
examples:
  nosend tls self-signed                           # for the hostname in mail.cfg
  nosend tls self-signed --host mail.yacht.lan --host 192.168.1.10
  nosend tls self-signed --force                   # replace it (clients accept it again)
"""


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``nosend tls self-signed``; ``common`` carries ``--config``."""
    p = subparsers.add_parser(
        "tls",
        help="make a TLS certificate",
        description="Make a TLS certificate for STARTTLS/STLS on a LAN.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    leaf = sub.add_parser(
        "self-signed",
        parents=[common],
        help="make a self-signed certificate and key and point mail.cfg at them",
        description="Make a self-signed certificate and key (with the openssl command), "
        "write them where tls_cert and tls_key point, or into tls/ beside mail.cfg and "
        "set those keys, and print the fingerprint clients check.",
    )
    leaf.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name or address clients use (repeat; default: the hostname in mail.cfg)",
    )
    leaf.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity (3650)")
    leaf.add_argument("--force", action="store_true", help="replace existing files")
    leaf.set_defaults(handler=_self_signed)


def default_paths(config_path: Path) -> tuple[Path, Path]:
    """Where a new certificate goes when mail.cfg names none: ``tls/`` beside it."""
    folder = config_path.expanduser().absolute().parent / "tls"
    return folder / "cert.pem", folder / "key.pem"


def _self_signed(args: argparse.Namespace) -> int:
    from nosend.admin import _changed, _config_path  # noqa: PLC0415
    from nosend_store.config import ConfigError, load_config  # noqa: PLC0415
    from nosend_store.config_edit import ConfigEditError, edit_config  # noqa: PLC0415

    path = _config_path(args)
    try:
        config = load_config(path)
    except ConfigError as e:
        print(f"nosend: {e}", file=sys.stderr)
        return 1
    server = config.server
    default_cert, default_key = default_paths(path)
    cert = server.tls_cert or default_cert
    key = server.tls_key or (default_key if server.tls_cert is None else cert)
    if key == cert:
        # One PEM file holding both is valid for mail.cfg, but openssl writes them apart.
        print(f"nosend: tls_key is not set; set it apart from {cert} first", file=sys.stderr)
        return 1
    hosts = list(dict.fromkeys(args.host or [server.hostname]))
    try:
        made = make_self_signed(cert, key, hosts, days=args.days, force=args.force)
    except (TLSCertError, OSError) as e:
        print(f"nosend: {e}", file=sys.stderr)
        return 1
    for line in describe(made):
        print(line)
    if server.tls_cert == cert and server.tls_key == key:
        _changed(path, config)  # same paths, new files: a running server reloads them
        return 0

    def point_at(doc: Any) -> None:
        doc.set_value("server", "", "tls_cert", os.fspath(cert))
        doc.set_value("server", "", "tls_key", os.fspath(key))

    try:
        _, config = edit_config(path, point_at)
    except (ConfigError, ConfigEditError) as e:
        print(f"nosend: {e}", file=sys.stderr)
        return 1
    print(f"set tls_cert and tls_key in {path}")
    _changed(path, config)
    return 0
