"""Postfix as a smarthost that requires STARTTLS and AUTH (SASL through Dovecot), for tests.

A private instance: its own configuration directory, queue, data directory and Maildir
under one temporary directory, listening on a free 127.0.0.1 port; Dovecot runs with its
own configuration only to answer Postfix's SASL questions (a passwd-file with one user).
Nothing of the system's Postfix or Dovecot is read or touched: no /etc/postfix/main.cf
is needed, ``postfix -c DIR`` names ours, and both are stopped by what identifies them
-- ``postfix -c DIR stop`` and then the master's pid from our own queue's pid file,
Dovecot by the pid of the process we started.

Postfix starts its master as root and runs its daemons as the ``postfix`` user, so the
temporary directory lives under /tmp with mode 0755 (pytest's own directories are
private to root). Mail for ``alice@smarthost.test`` is delivered by Postfix's
``virtual`` agent into ``mail/alice/`` (a Maildir) as uid 65534. ``start-fg`` keeps the
master in the foreground and its log goes to our file through ``maillog_file =
/dev/stdout`` (Postfix's container mode), so no syslog is needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import TLSFiles, free_port, make_tls_files, wait_for_port

USER = "alice@smarthost.test"
PASSWORD = "alice-Postfix-1"
_NOBODY = 65534
_STOP_TIMEOUT = 15.0

def private_main_cf(root: Path, hostname: str) -> str:
    """The start of ``main.cf`` for a private Postfix under ``root`` (shared with
    benchmarks/bench_transport.py): its own queue and data folders, the system's
    programs, no local domain, no aliases, the log on stdout, IPv4 on loopback."""
    return f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = {hostname}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = /dev/stdout
alias_maps =
alias_database =
"""


# The smarthost's own settings, after private_main_cf.
_MAIN_CF = """\
smtputf8_enable = yes
message_size_limit = {size}
virtual_mailbox_domains = smarthost.test
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = texthash:{root}/vmailbox
virtual_uid_maps = static:{nobody}
virtual_gid_maps = static:{nobody}
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
relayhost =
default_transport = error:this test smarthost relays nowhere
smtpd_client_restrictions =
smtpd_helo_required = yes
"""

#: The Postfix services a private instance needs besides smtpd (the master.cf body
#: shared with benchmarks/bench_transport.py, whose Postfix takes mail by sendmail).
MASTER_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# The smtpd on our port: TLS before anything (encrypt), AUTH through Dovecot, relaying
# only for authenticated clients -- what a provider's submission port does.
_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path={root}/dovecot-run/auth-postfix
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
""" + MASTER_SERVICES + """\
virtual   unix  -       n       n       -       -       virtual
"""

_DOVECOT_CONF = """\
base_dir = {root}/dovecot-run
state_dir = {root}/dovecot-state
instance_name = nosend-test-{port}
protocols =
log_path = {root}/dovecot.log
ssl = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={nobody} gid={nobody} home=/nonexistent
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
"""


@dataclass
class PostfixSmarthost:
    """A running private Postfix (and its Dovecot SASL helper)."""

    root: Path
    port: int
    tls: TLSFiles
    master: subprocess.Popen[bytes]
    dovecot: subprocess.Popen[bytes]
    user: str = USER
    password: str = PASSWORD

    def messages(self, mailbox: str = "alice") -> list[bytes]:
        """Every message delivered to ``mailbox`` so far."""
        out = []
        for sub in ("new", "cur"):
            directory = self.root / "mail" / mailbox / sub
            if directory.is_dir():
                out += [p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()]
        return out

    def wait_for_messages(self, count: int, timeout: float = 20.0,
                          mailbox: str = "alice") -> list[bytes]:
        """The messages once ``count`` arrived (Postfix delivers after it answered 250),
        or what is there at the bound."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(mailbox)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def log(self) -> str:
        """Postfix's log so far."""
        try:
            return (self.root / "postfix.out").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """``postfix -c DIR stop``, then the master by its pid; Dovecot by its pid."""
        subprocess.run(["postfix", "-c", str(self.root / "etc"), "stop"],
                       capture_output=True, timeout=_STOP_TIMEOUT, check=False)
        _stop_pid_file(self.root / "queue" / "pid" / "master.pid")
        for proc in (self.master, self.dovecot):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(_STOP_TIMEOUT)


def _stop_pid_file(path: Path) -> None:
    """Make sure the master named by our own pid file is gone (it may outlive start-fg's
    shell)."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + _STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_for(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


@contextmanager
def postfix_smarthost(message_size_limit: int = 10_240_000) -> Iterator[PostfixSmarthost]:
    """Start a private Postfix smarthost; stop it (and only it) when the block ends."""
    require_tool("postfix")
    require_tool("dovecot")
    if not Path("/usr/lib/postfix/sbin/master").exists():
        pytest.fail("postfix is installed without /usr/lib/postfix/sbin/master")
    if os.geteuid() != 0:
        pytest.skip("Postfix's master must be started as root")
    root = Path(tempfile.mkdtemp(prefix="nosend-postfix-", dir="/tmp"))
    root.chmod(0o755)
    try:
        tls = make_tls_files(root)
        (root / "etc").mkdir()
        (root / "queue").mkdir()  # postfix start fills it (post-install set-permissions)
        (root / "data").mkdir()
        shutil.chown(root / "data", "postfix")
        (root / "mail").mkdir()
        os.chown(root / "mail", _NOBODY, _NOBODY)
        port = free_port()
        values = {"root": root, "port": port, "size": message_size_limit, "nobody": _NOBODY,
                  "cert": tls.cert, "key": tls.key}
        (root / "etc" / "main.cf").write_text(
            private_main_cf(root, "smarthost.test") + _MAIN_CF.format(**values))
        (root / "etc" / "master.cf").write_text(_MASTER_CF.format(**values))
        (root / "dovecot.conf").write_text(_DOVECOT_CONF.format(**values))
        (root / "vmailbox").write_text(f"{USER} alice/\n")
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        (root / "passwd").chmod(0o600)
        shutil.chown(root / "passwd", "dovecot")  # read by Dovecot's unprivileged auth
        tls.key.chmod(0o600)
        with (root / "dovecot.out").open("wb") as out:
            dovecot = subprocess.Popen(
                ["dovecot", "-F", "-c", str(root / "dovecot.conf")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(root / "dovecot-run" / "auth-postfix", dovecot, "dovecot")
            with (root / "postfix.out").open("wb") as out:
                master = subprocess.Popen(
                    ["postfix", "-c", str(root / "etc"), "start-fg"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            server = PostfixSmarthost(root, port, tls, master, dovecot)
            try:
                try:
                    wait_for_port(port, master)
                except RuntimeError as exc:
                    pytest.fail(f"postfix did not start ({exc}):\n{server.log()[-3000:]}")
                yield server
            finally:
                server.stop()
        finally:
            if dovecot.poll() is None:
                dovecot.send_signal(signal.SIGTERM)
                dovecot.wait(_STOP_TIMEOUT)
    finally:
        shutil.rmtree(root, ignore_errors=True)
