"""``nosend export``: Dovecot and Postfix take over nosend's Maildirs and users.

Dovecot runs for real (its master process, POP3 on a free 127.0.0.1 port) on the files
``nosend export dovecot`` wrote, and poplib logs in as a {PBKDF2} mailbox and reads a
message that ``nosend serve`` delivered. Postfix's maps are queried with ``postmap -q``.
"""

from __future__ import annotations

import grp
import os
import poplib
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend_store.passwords import encode_shared_secret, hash_password
from tests.conftest import require_tool
from tests.interop.conftest import free_port

pytestmark = pytest.mark.interop

NOSEND = [sys.executable, "-m", "nosend"]
DOMAIN = "yacht.example"
PASSWORDS = {"mate": "Mate pw 1", "cook": "Cook pw 2", "steward": "Steward pw 3"}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    # Dovecot reads mail as a non-root user and its auth process as 'dovecot': pytest's
    # tmp_path (mode 0700 under root) is out of their reach.
    d = Path(tempfile.mkdtemp(prefix="nosend-export-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def write_config(root: Path, smtp_port: int) -> Path:
    cfg = root / "mail.cfg"
    cfg.write_text(
        f"[server]\nhostname = mx.{DOMAIN}\ndata_dir = {root / 'data'}\n"
        f"smtp_listen = 127.0.0.1:{smtp_port}\nsubmission_listen =\npop3_listen =\n"
        f"[domains]\n{DOMAIN}\n"
        f"[mailbox mate]\npassword = {hash_password(PASSWORDS['mate'], 'PBKDF2')}\n"
        f"[mailbox cook]\npassword = {hash_password(PASSWORDS['cook'])}\n"
        f"[mailbox steward]\npassword = {hash_password(PASSWORDS['steward'])}\n"
        f"shared_secret = {encode_shared_secret(PASSWORDS['steward'])}\n"
        f"[aliases]\nskipper@{DOMAIN} = mate\ncrew@{DOMAIN} = mate, cook, friend@example.net\n"
    )
    os.chmod(cfg, 0o600)
    return cfg


def deliver_with_nosend(cfg: Path, port: int, data: Path, body: bytes) -> None:
    log = cfg.parent / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*NOSEND, "serve", "--config", str(cfg)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while b"listening" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.sendmail("someone@example.org", [f"skipper@{DOMAIN}"], body)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert len(list((data / "mail" / "mate" / "new").iterdir())) == 1


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)


def test_dovecot_serves_nosend_mail_to_exported_users(shared_dir: Path) -> None:
    dovecot = require_tool("dovecot")
    smtp_port, pop3_port = free_port(), free_port()
    cfg = write_config(shared_dir, smtp_port)
    data = shared_dir / "data"
    body = b"From: someone@example.org\r\nSubject: for dovecot\r\n\r\n.dotted\r\nahoy\r\n"
    deliver_with_nosend(cfg, smtp_port, data, body)

    if os.geteuid() == 0:
        # What the export's warning asks for: Dovecot never accesses mail as root.
        mail_user = "nobody"
        user = pwd.getpwnam(mail_user)
        for root, dirs, files in os.walk(data):
            for name in [".", *dirs, *files]:
                os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)
    else:
        mail_user = pwd.getpwuid(os.getuid()).pw_name
    out = shared_dir / "export"
    result = subprocess.run(
        [*NOSEND, "export", "dovecot", "--config", str(cfg), "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "cannot log in until their password is reset: cook." in result.stderr
    assert "steward" in result.stdout and "root" not in result.stderr
    passwd = (out / "dovecot.passwd").read_text()
    assert passwd.count("\nmate:{PBKDF2}$1$") == 1 and "\ncook:" not in passwd
    assert "{SCRYPT}$" not in passwd  # the unreadable hash is not copied
    assert PASSWORDS["steward"] not in passwd  # the shared secret stays encoded
    assert (out / "dovecot.passwd").stat().st_mode & 0o077 == 0
    # Installed as the fragment says: readable by Dovecot's auth process.
    if os.geteuid() == 0:
        os.chown(out / "dovecot.passwd", 0, grp.getgrnam("dovecot").gr_gid)
        os.chmod(out / "dovecot.passwd", 0o640)
        internal = ""
    else:
        internal = f"default_internal_user = {mail_user}\ndefault_login_user = {mail_user}\n"

    log = shared_dir / "dovecot.log"
    conf = shared_dir / "dovecot.conf"
    conf.write_text(
        f"base_dir = {shared_dir}/run\nstate_dir = {shared_dir}/state\n"
        f"log_path = {log}\ninstance_name = nosend-export-test\n{internal}"
        "listen = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n"
        "auth_mechanisms = plain\n"
        f"service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3_port}\n  }}\n"
        "  inet_listener pop3s {\n    port = 0\n  }\n}\n"
        f"!include {out}/dovecot.conf.fragment\n"
    )
    (shared_dir / "state").mkdir()
    proc = subprocess.Popen([dovecot, "-F", "-c", str(conf)], stderr=log.open("ab"))
    try:
        wait_for_port(pop3_port, proc, log)
        client = poplib.POP3("127.0.0.1", pop3_port, timeout=30)
        client.user("mate")
        try:
            client.pass_(PASSWORDS["mate"])
        except poplib.error_proto as e:
            raise AssertionError(log.read_text(errors="replace")) from e
        count, _ = client.stat()
        assert count == 1
        _, lines, _ = client.retr(1)
        assert b"Subject: for dovecot" in lines and b".dotted" in lines and b"ahoy" in lines
        client.quit()

        client = poplib.POP3("127.0.0.1", pop3_port, timeout=30)
        client.user(f"steward@{DOMAIN}")  # through its shared secret, name@domain too
        client.pass_(PASSWORDS["steward"])
        client.quit()

        client = poplib.POP3("127.0.0.1", pop3_port, timeout=30)
        client.user("cook")
        with pytest.raises(poplib.error_proto):
            client.pass_(PASSWORDS["cook"])
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_postfix_maps_route_like_nosend(tmp_path: Path) -> None:
    postmap = require_tool("postmap")
    cfg = write_config(tmp_path, free_port())
    out = tmp_path / "postfix"
    result = subprocess.run(
        [*NOSEND, "export", "postfix", "--config", str(cfg), "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    # postmap reads a main.cf; an empty one of our own keeps the machine's out of it.
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "main.cf").write_text("")

    def query(table: str, key: str) -> str | None:
        found = subprocess.run(
            [postmap, "-c", str(tmp_path / "etc"), "-q", key, f"texthash:{out / table}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return found.stdout.strip() if found.returncode == 0 else None

    assert query("virtual_mailbox_maps", f"mate@{DOMAIN}") == "mate/"
    assert query("virtual_mailbox_maps", f"nobody@{DOMAIN}") is None
    assert query("virtual_alias_maps", f"skipper@{DOMAIN}") == f"mate@{DOMAIN}"
    assert query("virtual_alias_maps", f"crew@{DOMAIN}") == (
        f"mate@{DOMAIN}, cook@{DOMAIN}, friend@example.net"
    )
    assert query("virtual_alias_maps", f"postmaster@{DOMAIN}") == f"mate@{DOMAIN}"
    assert (out / "virtual_mailbox_domains").read_text() == f"{DOMAIN}\n"
    fragment = (out / "main.cf.fragment").read_text()
    assert f"virtual_mailbox_base = {tmp_path / 'data' / 'mail'}" in fragment
    assert "recipient_delimiter = +" in fragment
