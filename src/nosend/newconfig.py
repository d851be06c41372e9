"""A new ``mail.cfg``, for ``nosend init`` and ``serve``'s first run.

Owns: the default ``data_dir`` of a new ``mail.cfg``, the refusal to take over a folder
that already holds mail, and the text of the new file (the sample from
:mod:`nosend_store.config` with the LAN choices and the explanation of
``trusted_networks``). Must not: write anything but the new file, which it never
writes over an existing one (:mod:`nosend_store.datadir` counts the mail).

Two configurations sharing one data folder would deliver into, and serve POP3 from,
the same Maildirs, each with its own passwords; so only the usual ``mail.cfg`` gets the
usual folder (``/var/lib/nosend`` for root), and any other file gets ``data`` beside it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from nosend_store import passwords
from nosend_store.config import (
    Config,
    default_config_path,
    default_data_dir,
    parse_config,
    sample_config,
    write_atomically,
)
from nosend_store.config_edit import ConfigDocument
from nosend_store.datadir import data_dir_contents

__all__ = [
    "TRUST_COMMENT",
    "DataInUse",
    "claim_data_dir",
    "create_config",
    "data_dir_for",
    "new_config_text",
]


class DataInUse(Exception):
    """The chosen data folder already holds mail and adopting it was not asked for."""


def data_dir_for(config_path: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The default ``data_dir`` of a new configuration at ``config_path``.

    The usual place of ``mail.cfg`` (ignoring ``$NOSEND_CONFIG``, which can point
    anywhere) gets :func:`default_data_dir`; any other file gets ``data`` in its folder.
    """
    env = dict(os.environ if environ is None else environ)
    env.pop("NOSEND_CONFIG", None)
    here = config_path.expanduser().absolute()
    if here == default_config_path(env).expanduser().absolute():
        return default_data_dir(env)
    return here.parent / "data"


def claim_data_dir(data_dir: Path, *, adopt: bool, config_path: Path) -> str | None:
    """Check that a new configuration may use ``data_dir``; a note to print, or None.

    Raises :class:`DataInUse`, saying what was found, if the folder holds mail and
    ``adopt`` is false. With ``adopt`` the note says what is taken over.
    """
    found = data_dir_contents(data_dir.expanduser().absolute())
    if not found.has_mail:
        return None
    if not adopt:
        raise DataInUse(
            f"data folder {data_dir} already holds mail ({found.describe()}); it may "
            f"belong to another configuration. To use it for {config_path} anyway, add "
            "--adopt-data; otherwise choose another folder with --data-dir"
        )
    return (
        f"adopting data folder {data_dir}: {found.describe()}. A mailbox not in the new "
        "mail.cfg keeps its mail but cannot log in until added (nosend user add NAME)"
    )


# -- the text of a new mail.cfg -----------------------------------------------------------

#: Put before ``trusted_networks`` in every new mail.cfg: the choice that decides who
#: can send mail out through the link without a password (DESIGN invariant 4).
TRUST_COMMENT = (
    "# Who may relay (send to other domains) without logging in: the networks below.",
    "# Mail for the local domains is accepted from any client; sending elsewhere needs",
    "# a login, or a client on a trusted network. Keep this to the machine itself",
    "# unless every device on the LAN is yours; then add its network (192.168.1.0/24):",
    "# anyone who can plug in or join the Wi-Fi could then send through your link.",
    "# With lan_plaintext_auth = yes those networks may also log in without TLS, so the",
    "# passwords cross the LAN in clear; with a certificate (nosend tls self-signed)",
    "# clients use STARTTLS/STLS instead.",
)


def _host_port(host: str, port: int) -> str:
    bare = host.strip("[]")
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def new_config_text(
    base: str,
    *,
    listen_hosts: Sequence[str] = (),
    tls: tuple[Path, Path] | None = None,
    trusted: Sequence[str] = (),
    user: str | None = None,
) -> str:
    """``base`` (a sample mail.cfg) with the trust comment and the LAN choices applied.

    ``listen_hosts`` replaces 127.0.0.1 on every listener that is on, keeping its port.
    ``user`` sets ``user =`` (the account the server runs as once its ports are bound).
    """
    lines = base.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("trusted_networks"):
            start = i - 1 if i > 0 and lines[i - 1].startswith("# Clients here may relay") else i
            lines[start:i] = list(TRUST_COMMENT)
            break
    doc = ConfigDocument("\n".join(lines))
    config = doc.config()
    server = config.server
    if listen_hosts:
        for key in ("smtp", "submission", "smtps", "pop3", "pop3s"):
            addresses = getattr(server, f"{key}_listen")
            ports = list(dict.fromkeys(a.port for a in addresses))
            if ports:
                value = ", ".join(_host_port(h, p) for p in ports for h in listen_hosts)
                doc.set_value("server", "", f"{key}_listen", value)
    if tls is not None:
        doc.set_value("server", "", "tls_cert", os.fspath(tls[0]))
        doc.set_value("server", "", "tls_key", os.fspath(tls[1]))
    if trusted:
        nets = [str(n) for n in server.trusted_networks] + list(trusted)
        doc.set_value("server", "", "trusted_networks", ", ".join(dict.fromkeys(nets)))
    if user is not None:
        doc.set_value("server", "", "user", user)
    doc.config()  # ConfigError if an option made it invalid (an unknown user, say)
    return doc.text()


def create_config(
    path: Path,
    *,
    data_dir: Path,
    hostname: str = "localhost",
    domain: str | None = None,
    mailbox: str = "user",
    password: str | None = None,
    scheme: str = passwords.DEFAULT_SCHEME,
    listen_hosts: Sequence[str] = (),
    tls: tuple[Path, Path] | None = None,
    trusted: Sequence[str] = (),
    user: str | None = None,
) -> tuple[Config, str]:
    """Write a new mail.cfg at ``path`` (never over an existing file); it and the password.

    Like :func:`nosend_store.config.create_default_config`, plus the trust comment and
    the LAN choices. Nothing is written if an option makes the file invalid.
    """
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    chosen = password if password is not None else passwords.generate_password()
    base = sample_config(
        hostname=hostname,
        data_dir=data_dir.expanduser().absolute(),
        domain=(domain or hostname).lower(),
        mailbox=mailbox,
        password_hash=passwords.hash_password(chosen, scheme),
    )
    text = new_config_text(base, listen_hosts=listen_hosts, tls=tls, trusted=trusted, user=user)
    config = parse_config(text, path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    write_atomically(path, text, exclusive=True)
    return config, chosen
