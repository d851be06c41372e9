"""``user =`` in ``[server]``: started as root, nosend binds, reads its keys, then drops.

End to end with a real throwaway system account (``useradd --system``, removed after):
``nosend serve`` started as root runs as that account (every thread, real, effective,
saved and filesystem ids), takes mail over SMTP and serves it over POP3 with STLS on
the certificate it read as root, leaves the Maildir files to that account, and still
reloads on SIGHUP, keeping the key it can no longer read. ``nosend inetd`` and
``nosend queue maintain`` started as root give up root the same way.

These tests need root (to create the account and to drop from): when not root they
skip locally and fail under CI (``CI`` set), where they must run.
"""

from __future__ import annotations

import os
import poplib
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend.control import ack_path, running_server
from nosend.tlscert import make_self_signed
from tests.runners.conftest import free_port, stop_process, write_config

NOSEND = [sys.executable, "-m", "nosend"]
PASSWORD = "test-password-1"


def _need_root() -> None:
    if os.geteuid() == 0:
        return
    reason = "needs root: creates a system account and drops privileges to it"
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI runs the tests as root)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def account() -> Iterator[pwd.struct_passwd]:
    """A throwaway system account and its group, removed at the end."""
    _need_root()
    useradd, userdel = shutil.which("useradd"), shutil.which("userdel")
    if useradd is None or userdel is None:
        pytest.fail("useradd/userdel not found (package passwd)")
    name = f"nosendtest-{secrets.token_hex(4)}"
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--user-group", "--shell",
         "/usr/sbin/nologin", name],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        entry = pwd.getpwnam(name)
        _check_it_can_run_nosend(entry)
        yield entry
    finally:
        subprocess.run([userdel, name], capture_output=True, timeout=60)


def _check_it_can_run_nosend(entry: pwd.struct_passwd) -> None:
    """The dropped server imports modules as the account: it must be able to read them."""
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import email, ssl, anyio, nosend.serve, nosend_runners.mail"],
            user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        problem = probe.stderr if probe.returncode else ""
    except OSError as e:
        problem = str(e)
    if problem:
        # Like a missing interop tool: skipped on a developer's machine, fatal under CI.
        reason = (
            f"{sys.executable} or the nosend sources cannot be read by a system account "
            "(an interpreter or checkout under /root?); run these tests with a Python "
            f"and a checkout other users can read: {problem.strip()}"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def place() -> Iterator[Path]:
    """A folder the account can enter (pytest's tmp_path is inside a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="nosend-svc-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ids(pid: int | str, field: str) -> list[int]:
    """The ``Uid:``/``Gid:`` line of /proc/PID/status: real, effective, saved, filesystem."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def wait_for(condition: object, what: str, log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not condition():  # type: ignore[operator]
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{what}\n{log.read_text()}"
        time.sleep(0.02)


def nosend(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOSEND, *argv], input=stdin, capture_output=True, text=True, timeout=60)


def pop3_tls(port: int, context: ssl.SSLContext, user: str) -> list[bytes]:
    """Log in over STLS (the key was read as root) and return every message."""
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        client.stls(context)
        client.user(user)
        client.pass_(PASSWORD)
        count, _ = client.stat()
        return [b"\r\n".join(client.retr(i)[1]) for i in range(1, count + 1)]
    finally:
        client.quit()


def listening_as(account: pwd.struct_passwd, smtp: int | None = None,
                 pop3: int | None = None) -> list[str]:
    """The mail.cfg lines of a server on free ports (no submission) that drops to
    ``account``."""
    return [f"smtp_listen = 127.0.0.1:{smtp or free_port()}", "submission_listen =",
            f"pop3_listen = 127.0.0.1:{pop3 or free_port()}", f"user = {account.pw_name}"]


def owned_as_the_readme_says(config: Path, account: pwd.struct_passwd) -> Path:
    """``config`` made root:account 0640, as the README says to install it."""
    os.chown(config, 0, account.pw_gid)
    os.chmod(config, 0o640)
    return config


def test_serve_started_as_root_runs_as_the_account(account: pwd.struct_passwd, place: Path) -> None:
    uid, gid = account.pw_uid, account.pw_gid
    # A key only root may read, in a folder only root may enter (like /etc/ssl/private).
    tls = place / "tls"
    made = make_self_signed(tls / "cert.pem", tls / "key.pem", ["localhost", "127.0.0.1"])
    os.chmod(tls, 0o700)
    # What a server that ran as root left behind: a Maildir with a root-owned message,
    # and a link an attacker running as the account might plant to a root file.
    data = place / "data"
    old = data / "mail" / "user" / "new" / "1.old.host"
    for sub in ("tmp", "new", "cur"):
        (data / "mail" / "user" / sub).mkdir(parents=True)
    old.write_bytes(b"Subject: from the root days\r\n\r\nold\r\n")
    outside = place / "outside"
    outside.write_text("root's\n")
    (data / "mail" / "trap").symlink_to(outside)
    smtp, pop3 = free_port(), free_port()
    config = owned_as_the_readme_says(write_config(
        place, *listening_as(account, smtp, pop3),
        f"tls_cert = {made.cert}", f"tls_key = {made.key}"), account)
    log = place / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*NOSEND, "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_for(lambda: running_server(data) is not None, "serve did not start", log, proc)
        # Every thread: real, effective, saved and filesystem ids. The saved uid is not
        # 0, so root cannot be regained (drop_privileges also checks setuid(0) fails).
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            assert ids(task.name, "Uid") == [uid] * 4
            assert ids(task.name, "Gid") == [gid] * 4
        assert f"running as user {account.pw_name} (uid {uid})" in log.read_text()

        with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as client:
            client.sendmail(
                "someone@example.net", ["user@localhost"],
                b"Subject: hello\r\n\r\nover SMTP to a server that dropped root\r\n",
            )  # fmt: skip
        context = made_context(made.cert)
        messages = pop3_tls(pop3, context, "user")
        assert any(b"dropped root" in m for m in messages)
        assert any(b"from the root days" in m for m in messages)  # given to the account
        maildir = data / "mail" / "user"
        files = [p for sub in ("new", "cur") for p in (maildir / sub).iterdir()]
        assert len(files) == 2
        for path in [*files, data, data / "mail", data / "queue", data / "state", maildir]:
            st = path.stat()
            assert (st.st_uid, st.st_gid) == (uid, gid), path
        # The planted link was not followed: the file it points to is still root's.
        assert outside.stat().st_uid == 0
        assert (data / "mail" / "trap").lstat().st_uid == 0

        # An admin command as root rewrites mail.cfg (keeping root:account 0640) and
        # the server, no longer root, reloads it on SIGHUP. The key it cannot read now
        # is kept, said in one line, and STLS still works.
        added = nosend(
            "user", "add", "mate", "--password-stdin", "--config", str(config),
            stdin=PASSWORD + "\n",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr + log.read_text()
        assert f"nosend serve (pid {proc.pid}) reloaded it" in added.stdout
        st = config.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, 0o640)
        text = log.read_text()
        kept = r"tls: \S*cert\.pem: cannot be read by uid \d+; keeping the certificate"
        assert re.search(kept, text)
        assert pop3_tls(pop3, context, "mate") == []

        # A mail.cfg the account cannot read: the reload fails and says how to fix it.
        os.chmod(config, 0o600)
        refused = nosend("reload", "--config", str(config))
        assert refused.returncode == 1
        assert "kept its old configuration" in refused.stderr
        assert f"cannot be read by user {account.pw_name}" in refused.stderr
        assert f"chgrp {account.pw_name} {config}; chmod 640 {config}" in refused.stderr
        assert pop3_tls(pop3, context, "mate") == []  # still serving
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()
    assert not (data / "state" / "serve.pid").exists()  # removed as the account
    assert ack_path(data).stat().st_uid == uid


def made_context(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # the certificate names localhost; we dial 127.0.0.1
    return context


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_serve_reload_by_sighup_as_the_account(
    account: pwd.struct_passwd, place: Path, backend: str
) -> None:
    """A plain SIGHUP (systemctl kill -s HUP) reaches the dropped server's reload."""
    data = place / "data"
    config = owned_as_the_readme_says(write_config(place, *listening_as(account)), account)
    log = place / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*NOSEND, "serve", "--config", str(config), "--backend", backend],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_for(lambda: running_server(data) is not None, "serve did not start", log, proc)
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            assert ids(task.name, "Uid") == [account.pw_uid] * 4
            assert ids(task.name, "Gid") == [account.pw_gid] * 4
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: ack_path(data).exists(), "no reload acknowledgement", log, proc)
        wait_for(lambda: "configuration reloaded" in log.read_text(), "not reloaded", log, proc)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()


def test_serve_as_another_user_than_root_refuses_to_start(
    account: pwd.struct_passwd, place: Path
) -> None:
    config = owned_as_the_readme_says(write_config(place, "user = root"), account)
    result = subprocess.run(
        [*NOSEND, "serve", "--config", str(config)],
        user=account.pw_uid, group=account.pw_gid, extra_groups=[],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    line = config.read_text().split("\n").index("user = root") + 1
    assert result.stderr.startswith(f"nosend: {config}:{line}: user = root: this process runs as ")
    assert f"({account.pw_name}), not root" in result.stderr
    assert not (place / "data").exists()  # refused before touching anything


def test_serve_as_the_account_itself_is_a_no_op(account: pwd.struct_passwd, place: Path) -> None:
    data = place / "data"
    data.mkdir(mode=0o700)
    os.chown(data, account.pw_uid, account.pw_gid)
    config = owned_as_the_readme_says(write_config(place, *listening_as(account)), account)
    log = place / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*NOSEND, "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            user=account.pw_uid, group=account.pw_gid, extra_groups=[],
        )  # fmt: skip
    try:
        wait_for(lambda: running_server(data) is not None, "serve did not start", log, proc)
        assert ids(proc.pid, "Uid") == [account.pw_uid] * 4
        assert "running as" not in log.read_text()  # nothing to switch
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()


def test_inetd_started_as_root_delivers_as_the_account(
    account: pwd.struct_passwd, place: Path
) -> None:
    data = place / "data"
    config = write_config(place, f"user = {account.pw_name}")
    ours, theirs = socket.socketpair()
    with ours:
        proc = subprocess.Popen(
            [*NOSEND, "inetd", "smtp", "--config", str(config),
             "--log-file", str(place / "inetd.log")],
            stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        theirs.close()
        reader = ours.makefile("rb")
        transcript = []
        for command in (
            None, b"EHLO client\r\n", b"MAIL FROM:<a@example.net>\r\n",
            b"RCPT TO:<user@localhost>\r\n", b"DATA\r\n",
            b"Subject: via inetd\r\n\r\nbody\r\n.\r\n", b"QUIT\r\n",
        ):  # fmt: skip
            if command is not None:
                ours.sendall(command)
            while (line := reader.readline())[3:4] == b"-":
                pass
            transcript.append(line[:3])
        assert transcript == [b"220", b"250", b"250", b"250", b"354", b"250", b"221"]
    assert proc.wait(timeout=30) == 0
    delivered = list((data / "mail" / "user" / "new").iterdir())
    assert len(delivered) == 1
    st = delivered[0].stat()
    assert (st.st_uid, st.st_gid) == (account.pw_uid, account.pw_gid)
    assert (data / "state").stat().st_uid == account.pw_uid


def test_queue_maintain_as_root_works_as_the_account(
    account: pwd.struct_passwd, place: Path
) -> None:
    data = place / "data"
    data.mkdir(mode=0o700)  # made by root, as a root server would have
    config = write_config(place, f"user = {account.pw_name}")
    result = nosend("queue", "maintain", "--config", str(config))
    assert result.returncode == 0, result.stderr
    for path in (data, data / "mail", data / "queue", data / "state"):
        assert path.stat().st_uid == account.pw_uid, path


def test_held_commands_as_root_leave_fetch_records_to_the_account(
    account: pwd.struct_passwd, place: Path
) -> None:
    from nosend_link.notice import held_id
    from nosend_store.fetch_state import FetchState

    config = write_config(place, f"user = {account.pw_name}")
    with config.open("a") as cfg:
        cfg.write("\n[account isp]\ntype = pop3\nhost = pop.example.org\nuser = u\n"
                  "secret_file = /nonexistent\ndeliver_to = user\n")
    data = place / "data"
    data.mkdir(mode=0o700)
    with FetchState.open(data, "isp") as state:  # a message held by the server earlier,
        state.hold("big-1", 9_000_000)
    for path in (data, *data.rglob("*")):  # which runs as the account
        os.chown(path, account.pw_uid, account.pw_gid)
    (data / "fetch" / "isp.lock").unlink()  # lock files are made when first needed
    result = nosend("held", "fetch", held_id("isp", "big-1"), "--config", str(config))
    assert result.returncode == 0, result.stderr
    records = list((data / "fetch").iterdir())
    assert records and all(p.stat().st_uid == account.pw_uid for p in records), [
        (p, p.stat().st_uid) for p in records]


def test_serve_says_at_start_what_the_account_cannot_reach(
    account: pwd.struct_passwd, place: Path
) -> None:
    # mail.cfg left root:root 0600: it starts (read as root) and warns about reloads.
    config = write_config(place, *listening_as(account))
    data = place / "data"
    log = place / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*NOSEND, "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_for(lambda: running_server(data) is not None, "serve did not start", log, proc)
        text = log.read_text()
        assert f"{config} cannot be read by user {account.pw_name}" in text
        assert "a reload (SIGHUP, nosend reload) would fail" in text
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()

    # A data folder inside a folder only root may enter: refused after the switch, with
    # the reason, instead of a server that answers every message with 451.
    private = place / "private"
    private.mkdir(mode=0o700)
    text = config.read_text().replace(f"data_dir = {data}", f"data_dir = {private / 'data'}")
    config.write_text(text)
    result = subprocess.run(
        [*NOSEND, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"as user {account.pw_name}: data_dir {private / 'data'}" in result.stderr
    assert "Permission denied" in result.stderr
