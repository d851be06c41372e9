"""``nosend reload`` and admin edits reach the ``nosend serve`` of that mail.cfg, only it.

End to end: real ``nosend serve`` processes, the real commands in subprocesses, POP3
logins with poplib. No sleeps: every wait is for a condition, with a bound.
"""

from __future__ import annotations

import os
import poplib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend.control import pid_path, running_server
from tests.runners.conftest import free_port, stop_process, write_config

NOSEND = [sys.executable, "-m", "nosend"]


class Served:
    """A ``nosend serve`` of our own and its POP3 port."""

    def __init__(self, root: Path) -> None:
        self.pop3 = free_port()
        self.config = write_config(
            root,
            f"smtp_listen = 127.0.0.1:{free_port()}",
            "submission_listen =",
            f"pop3_listen = 127.0.0.1:{self.pop3}",
            "lan_plaintext_auth = yes",
        )
        self.data = root / "data"
        self.log = root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*NOSEND, "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        # Ready when the pid is published: it listens and handles SIGHUP by then.
        while running_server(self.data) is None:
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def login(self, user: str, password: str) -> None:
        client = poplib.POP3("127.0.0.1", self.pop3, timeout=10)
        try:
            client.user(user)
            client.pass_(password)
        finally:
            client.quit()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path)
    server.start()
    yield server
    server.stop()


def nosend(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOSEND, *argv], input=stdin, capture_output=True, text=True, timeout=60)


def test_user_add_while_serving_logs_in_without_a_manual_reload(served: Served) -> None:
    with pytest.raises(poplib.error_proto):
        served.login("mate", "Sea s3cret 1")
    result = nosend(
        "user", "add", "mate", "--password-stdin", "--config", str(served.config),
        stdin="Sea s3cret 1\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert served.proc is not None
    assert result.stdout == (
        f"added mailbox mate\nchanged {served.config}; "
        f"nosend serve (pid {served.proc.pid}) reloaded it\n"
    )
    served.login("mate", "Sea s3cret 1")  # at once: the command waited for the reload
    served.login("user", "test-password-1")


def test_reload_command_and_the_pid_file_life(served: Served) -> None:
    assert served.proc is not None
    pid_file = pid_path(served.data)
    assert pid_file.read_text() == f"{served.proc.pid}\n{os.path.realpath(served.config)}\n"
    result = nosend("reload", "--config", str(served.config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{served.config}: nosend serve (pid {served.proc.pid}) reloaded it\n"
    served.stop()
    assert not pid_file.exists()
    result = nosend("reload", "--config", str(served.config))
    assert result.returncode == 1 and "no nosend serve is running for" in result.stderr


def test_a_bad_file_is_refused_and_the_server_keeps_serving(served: Served) -> None:
    served.config.write_text(served.config.read_text() + "\n[mailbox Bad Name]\n")
    result = nosend("reload", "--config", str(served.config))
    assert result.returncode == 1 and "not reloading" in result.stderr
    served.login("user", "test-password-1")


def test_a_certificate_the_server_cannot_load_is_reported(served: Served, tmp_path: Path) -> None:
    # Both files exist, so mail.cfg is valid; only loading them shows they are not PEM.
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    text = served.config.read_text()
    text = text.replace("tls_cert =\n", f"tls_cert = {tmp_path / 'cert.pem'}\n")
    text = text.replace("tls_key =\n", f"tls_key = {tmp_path / 'key.pem'}\n")
    served.config.write_text(text)
    result = nosend("reload", "--config", str(served.config))
    assert result.returncode == 1 and "kept its old configuration" in result.stderr
    served.login("user", "test-password-1")


def test_a_second_server_on_the_same_data_folder_is_refused(served: Served) -> None:
    result = nosend("serve", "--config", str(served.config))
    assert result.returncode == 1
    assert served.proc is not None
    assert f"another nosend serve (pid {served.proc.pid}" in result.stderr


def test_a_stale_pid_file_is_not_signalled(tmp_path: Path) -> None:
    server = Served(tmp_path)
    pid_file = pid_path(server.data)
    pid_file.parent.mkdir(parents=True)
    # Our own pid, as a killed server's reused pid might be: nobody holds the lock.
    pid_file.write_text(f"{os.getpid()}\n{server.config}\n")
    hups: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: hups.append(signum))
    try:
        result = nosend("reload", "--config", str(server.config))
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert result.returncode == 1 and "no nosend serve is running" in result.stderr
    assert hups == []
    # and a new server takes the file over
    server.start()
    try:
        assert running_server(server.data) is not None
    finally:
        server.stop()


def test_a_server_of_another_file_is_not_signalled(served: Served, tmp_path: Path) -> None:
    # A second mail.cfg that adopted the first one's data folder.
    other = tmp_path / "other.cfg"
    other.write_text(served.config.read_text())
    os.chmod(other, 0o600)
    result = nosend("domain", "add", "example.net", "--config", str(other))
    assert result.returncode == 0, result.stderr
    assert f"reads {os.path.realpath(served.config)}, not {other}" in result.stderr
    result = nosend("reload", "--config", str(other))
    assert result.returncode == 1 and "not" in result.stderr
