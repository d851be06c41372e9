"""``nosend export dovecot|postfix``: what those servers need to take over the Maildirs.

Owns: writing, from ``mail.cfg``, a Dovecot passwd-file and ``dovecot.conf`` fragment
(POP3 from the same Maildirs, same UIDLs) and Postfix virtual mailbox, alias and domain
maps with a ``main.cf`` fragment (delivery into the same Maildirs). Must not: change
``mail.cfg``, the Maildirs or any installed configuration (it writes only into the
folder given), or print a password hash.

Passwords: ``{PBKDF2}`` hashes are Dovecot's own PBKDF2 scheme byte for byte and are
copied as they are; a mailbox with a shared secret (``{PLAIN.B64}``, Dovecot reads the
same notation) keeps working through it. ``{SCRYPT}``, nosend's default, is a scheme
Dovecot does not have: those mailboxes are listed, commented out in the passwd-file,
and must get a new password (``nosend user passwd NAME --scheme PBKDF2``, then export
again) before the move.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nosend_store import passwords
from nosend_store.config import Config

__all__ = ["DovecotExport", "export_dovecot", "export_postfix", "register"]

_EPILOG = """\
examples:
  nosend export dovecot --out /etc/dovecot/nosend       # then !include it from dovecot.conf
  nosend export postfix --out /etc/postfix/nosend       # then add main.cf.fragment
  nosend export dovecot --mail-user vmail               # the user Dovecot reads mail as
"""


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``nosend export dovecot`` and ``nosend export postfix``."""
    p = subparsers.add_parser(
        "export",
        help="write what Dovecot or Postfix need to take over the same Maildirs",
        description="Write, into a folder, the files with which Dovecot (POP3) or Postfix "
        "(delivery) serve the same Maildirs and users as this mail.cfg.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    for name, handler, text in (
        ("dovecot", _dovecot, "a passwd-file and a dovecot.conf fragment"),
        ("postfix", _postfix, "virtual mailbox, alias and domain maps and a main.cf fragment"),
    ):
        leaf = sub.add_parser(name, parents=[common], help=text, description=f"Write {text}.")
        leaf.add_argument(
            "--out",
            type=Path,
            metavar="DIR",
            default=Path(f"nosend-{name}"),
            help=f"folder to write into (./nosend-{name})",
        )
        leaf.add_argument(
            "--mail-user",
            metavar="USER",
            help="the system user that owns the Maildirs for the new server (default: "
            "their current owner)",
        )
        leaf.set_defaults(handler=handler)


# -- shared ---------------------------------------------------------------------------------


def _owner(config: Config, mail_user: str | None) -> tuple[int, int]:
    if mail_user is not None:
        try:
            entry = pwd.getpwnam(mail_user)
        except KeyError:
            raise ValueError(f"no system user {mail_user!r}") from None
        return entry.pw_uid, entry.pw_gid
    for path in (config.server.maildir_root, config.server.data_dir):
        try:
            st = path.stat()
        except OSError:
            continue
        return st.st_uid, st.st_gid
    return os.getuid(), os.getgid()


def _write(folder: Path, name: str, text: str, mode: int = 0o644) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def _root_warning(uid: int) -> str | None:
    if uid != 0:
        return None
    return (
        "the Maildirs belong to root, and neither Dovecot nor Postfix's virtual delivery "
        "accesses mail as root: chown -R them to a mail user (e.g. vmail) and export "
        "again, or pass --mail-user"
    )


# -- Dovecot --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DovecotExport:
    """What :func:`export_dovecot` wrote and what it could not carry over."""

    passwd_file: Path
    conf: Path
    #: Mailboxes whose password Dovecot cannot check ({SCRYPT}): reset them first.
    must_reset: tuple[str, ...]
    #: Mailboxes carried over through their shared secret ({PLAIN.B64}).
    via_shared_secret: tuple[str, ...]
    uid: int
    gid: int


def export_dovecot(config: Config, out: Path, *, mail_user: str | None = None) -> DovecotExport:
    """Write ``out/dovecot.passwd`` (mode 0600) and ``out/dovecot.conf.fragment``."""
    uid, gid = _owner(config, mail_user)
    lines = [
        "# Dovecot passwd-file written by `nosend export dovecot`; user:password:uid:gid::home",
        "# Lines starting with '#' are ignored by Dovecot.",
    ]
    must_reset: list[str] = []
    shared: list[str] = []
    for mailbox in config.mailboxes.values():
        stored = mailbox.password_hash
        home = config.maildir_path(mailbox.name)
        if stored.startswith("{PBKDF2}"):
            password = stored
        elif mailbox.shared_secret is not None:
            # Config holds it decoded; {PLAIN.B64} is mail.cfg's notation and Dovecot's.
            password = passwords.encode_shared_secret(mailbox.shared_secret)
            shared.append(mailbox.name)
        else:
            must_reset.append(mailbox.name)
            lines.append(
                f"# {mailbox.name}: its {stored[: stored.find('}') + 1]} hash cannot be read "
                "by Dovecot; run `nosend user passwd "
                f"{mailbox.name} --scheme PBKDF2` and export again"
            )
            continue
        lines.append(f"{mailbox.name}:{password}:{uid}:{gid}::{home}::")
    passwd = _write(out, "dovecot.passwd", "\n".join(lines) + "\n", mode=0o600)
    tls = ""
    if config.server.tls_enabled:
        key = config.server.tls_key or config.server.tls_cert
        tls = f"ssl = required\nssl_cert = <{config.server.tls_cert}\nssl_key = <{key}\n"
    else:
        tls = "# No certificate in mail.cfg: set ssl_cert/ssl_key before serving a LAN.\n"
    # Dovecot refuses mail access for uids below first_valid_uid (500 by default).
    first_valid = f"first_valid_uid = {uid}\nfirst_valid_gid = {gid}\n" if 0 < uid < 500 else ""
    fragment = f"""\
# dovecot.conf fragment written by `nosend export dovecot`.
# Serves POP3 from nosend's Maildirs ({config.server.maildir_root}/<mailbox>) to the
# same users. Include it from dovecot.conf (!include {out.absolute()}/dovecot.conf.fragment)
# after the stock 10-auth.conf, whose !include auth-system.conf.ext you comment out.
# The passwd-file holds password hashes and is mode 0600: Dovecot's auth process reads
# it as the 'dovecot' user, so: chgrp dovecot dovecot.passwd; chmod 640 dovecot.passwd
protocols = pop3
# Same UIDLs as nosend gave: POP3 clients that leave mail on the server do not fetch
# it all again (nosend_store.maildir names its files so that %f is its UIDL).
pop3_uidl_format = %f
mail_location = maildir:~
{first_valid}auth_username_format = %Ln
passdb {{
  driver = passwd-file
  args = {passwd.absolute()}
}}
userdb {{
  driver = passwd-file
  args = {passwd.absolute()}
}}
{tls}"""
    conf = _write(out, "dovecot.conf.fragment", fragment)
    return DovecotExport(passwd, conf, tuple(must_reset), tuple(shared), uid, gid)


def _dovecot(args: argparse.Namespace) -> int:
    from nosend.admin import _config_path  # noqa: PLC0415
    from nosend_store.config import ConfigError, load_config  # noqa: PLC0415

    try:
        config = load_config(_config_path(args))
        done = export_dovecot(config, args.out, mail_user=args.mail_user)
    except (ConfigError, ValueError, OSError) as e:
        print(f"nosend: {e}", file=sys.stderr)
        return 1
    print(f"wrote {done.passwd_file} (mode 0600) and {done.conf}")
    if done.via_shared_secret:
        print(
            "carried over through their shared secret ({PLAIN.B64}): "
            + ", ".join(done.via_shared_secret)
        )
    if done.must_reset:
        print(
            "warning: Dovecot cannot read {SCRYPT} hashes (nosend's default scheme); "
            f"these mailboxes cannot log in until their password is reset: "
            f"{', '.join(done.must_reset)}. Run `nosend user passwd NAME --scheme PBKDF2` "
            "for each, then export again.",
            file=sys.stderr,
        )
    if warning := _root_warning(done.uid):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


# -- Postfix --------------------------------------------------------------------------------


def export_postfix(config: Config, out: Path, *, mail_user: str | None = None) -> list[Path]:
    """Write Postfix ``texthash:`` maps and ``main.cf.fragment`` into ``out``."""
    uid, gid = _owner(config, mail_user)
    domains = sorted(config.domains)
    first = domains[0] if domains else config.server.hostname
    mailboxes = [
        f"{name}@{domain}    {name}/"  # a trailing slash: Maildir (virtual(8))
        for name in config.mailboxes
        for domain in domains
    ]
    aliases: list[str] = []
    for alias in config.aliases.values():
        targets = [t if "@" in t else f"{t}@{first}" for t in alias.targets]
        aliases.append(f"{alias.address}    {', '.join(targets)}")
    postmaster = config.postmaster
    if postmaster:
        target = postmaster if "@" in postmaster else f"{postmaster}@{first}"
        for domain in domains:
            address = f"postmaster@{domain}"
            if address not in config.aliases and "postmaster" not in config.mailboxes:
                aliases.append(f"{address}    {target}")
    written = [
        _write(out, "virtual_mailbox_domains", "".join(f"{d}\n" for d in domains)),
        _write(out, "virtual_mailbox_maps", "".join(f"{m}\n" for m in mailboxes)),
        _write(out, "virtual_alias_maps", "".join(f"{a}\n" for a in aliases)),
    ]
    where = out.absolute()
    plus = config.server.plus_separator
    fragment = f"""\
# main.cf fragment written by `nosend export postfix`: deliver into nosend's Maildirs.
# texthash: maps need no postmap; Postfix reads them at start and `postfix reload`.
virtual_mailbox_domains = {where}/virtual_mailbox_domains
virtual_mailbox_base = {config.server.maildir_root}
virtual_mailbox_maps = texthash:{where}/virtual_mailbox_maps
virtual_alias_maps = texthash:{where}/virtual_alias_maps
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = {min(uid, 100) if uid else 1}
message_size_limit = {config.server.max_message_size}
{f"recipient_delimiter = {plus}" if plus else "# plus addressing was off in mail.cfg"}
# Relaying, as trusted_networks did (then authenticated submission via Dovecot SASL):
mynetworks = {" ".join(str(n) for n in config.server.trusted_networks)}
"""
    written.append(_write(out, "main.cf.fragment", fragment))
    return written


def _postfix(args: argparse.Namespace) -> int:
    from nosend.admin import _config_path  # noqa: PLC0415
    from nosend_store.config import ConfigError, load_config  # noqa: PLC0415

    try:
        config = load_config(_config_path(args))
        written = export_postfix(config, args.out, mail_user=args.mail_user)
    except (ConfigError, ValueError, OSError) as e:
        print(f"nosend: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    uid, _ = _owner(config, args.mail_user)
    if warning := _root_warning(uid):
        print(f"warning: {warning}", file=sys.stderr)
    return 0
