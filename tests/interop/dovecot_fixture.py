"""A throw-away Dovecot POP3 server (the Debian package), for interop tests.

Run unprivileged from a configuration written for the test: every user's password is
:data:`DOVECOT_PASSWORD`, mail in ``mail/<user>`` Maildirs, plain POP3 with STLS on one
port and implicit TLS on another, using the interop certificate (``tls_files``), so the
POP3 client and the fetch code meet an independent server with TLS both ways. Stopped by
its pid when the test ends.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import SAMPLE_MESSAGES, TLSFiles, free_port, wait_for_port

__all__ = ["DOVECOT_PASSWORD", "DovecotServer", "start_dovecot", "dovecot_server"]

DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5 apop
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
default_login_user = {login_user}
default_internal_user = {internal_user}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = {pop3s_port}
    ssl = yes
  }}
}}
"""
DOVECOT_PASSWORD = "dove-Secret-3"


@dataclass(frozen=True, slots=True)
class DovecotServer:
    """Where a running Dovecot listens and keeps its mail."""

    port: int  # POP3, STLS offered
    pop3s_port: int  # implicit TLS
    mail: Path  # one Maildir per user
    owner_uid: int
    owner_gid: int

    def deliver(self, user: str, name: str, message: bytes) -> None:
        """Put a message into ``user``'s Maildir, as Dovecot's own user."""
        path = self.mail / user / "new" / name
        path.write_bytes(message)
        os.chown(path, self.owner_uid, self.owner_gid)

    def messages(self, user: str) -> list[Path]:
        """The files in ``user``'s new/ and cur/."""
        return [p for sub in ("new", "cur") for p in (self.mail / user / sub).iterdir()]


def start_dovecot(
    tls: TLSFiles, messages: Sequence[bytes] = SAMPLE_MESSAGES
) -> Iterator[DovecotServer]:
    """Start Dovecot with ``messages`` in alice's Maildir; yield; stop it by its pid.

    Its files live in a fresh directory of their own under the system's temporary
    directory (pytest's is private to the user running the tests, and Dovecot's mail
    and login processes run as other users when the tests run as root).
    """
    binary = require_tool("dovecot")
    root = Path(tempfile.mkdtemp(prefix="nosend-dovecot-"))
    root.chmod(0o755)
    (root / "home").mkdir()
    (root / "mail").mkdir()
    shutil.copy(tls.cert, root / "cert.pem")
    shutil.copy(tls.key, root / "key.pem")
    if os.getuid() == 0:
        # Dovecot never serves mail as uid 0: use its own unprivileged users.
        owner = pwd.getpwnam("dovecot")
        login_user, internal_user = "dovenull", "dovecot"
    else:
        owner = pwd.getpwuid(os.getuid())
        login_user = internal_user = owner.pw_name
    port, pop3s_port = free_port(), free_port()
    config = root / "dovecot.conf"
    config.write_text(
        DOVECOT_CONF.format(
            root=root, port=port, pop3s_port=pop3s_port, password=DOVECOT_PASSWORD,
            uid=owner.pw_uid, gid=owner.pw_gid, login_user=login_user,
            internal_user=internal_user,
        )
    )  # fmt: skip
    for sub in ("tmp", "new", "cur"):
        (root / "mail" / "alice" / sub).mkdir(parents=True)
    for i, message in enumerate(messages):
        (root / "mail" / "alice" / "new" / f"{i}.M{i}P1.test").write_bytes(message)
    for path in [root / "home", *(root / "mail").rglob("*"), root / "mail"]:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    proc = subprocess.Popen(
        [binary, "-F", "-c", str(config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, proc)
        wait_for_port(pop3s_port, proc)
        yield DovecotServer(port, pop3s_port, root / "mail", owner.pw_uid, owner.pw_gid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dovecot_server(tls_files: TLSFiles) -> Iterator[DovecotServer]:
    """A running Dovecot with the sample messages in alice's Maildir."""
    yield from start_dovecot(tls_files)
