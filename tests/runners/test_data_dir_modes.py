"""What ``nosend serve`` creates under the data folder is private (issue 14, "Attackers").

``data/`` and ``data/mail/`` were created world-readable, so local users could list the
mailbox names. The server now runs with umask 077 and makes its folders 0700.
"""

from __future__ import annotations

import os
import smtplib
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nosend_runners.serve.datadir import secure_data_dir
from tests.runners.conftest import free_port, stop_process, wait_for_port
from tests.runners.session_support import config_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_nosend_serve_makes_private_folders_and_files(tmp_path: Path, backend: str) -> None:
    ports = {"smtp": free_port(), "pop3": free_port()}
    data = tmp_path / "data"
    path = tmp_path / "mail.cfg"
    path.write_text(config_text(data, ports=ports))
    path.chmod(0o600)
    old = os.umask(0o022)  # a usual login umask, which the server must not keep
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nosend", "serve", "--config", str(path), "--backend", backend],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.umask(old)
    try:
        for port in ports.values():
            wait_for_port(port)
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as smtp:
            smtp.sendmail(
                "a@remote.example",
                ["alice@example.test", "x@remote.example"],
                "Subject: modes\r\n\r\nhi\r\n",
            )
    except smtplib.SMTPRecipientsRefused:
        pass
    finally:
        stop_process(proc)
    assert mode(data) == 0o700
    assert mode(data / "mail") == 0o700
    assert mode(data / "mail" / "alice") == 0o700
    [message] = list((data / "mail" / "alice" / "new").iterdir())
    assert mode(message) == 0o600
    for folder in data.rglob("*"):
        assert mode(folder) & 0o077 == 0, folder


def test_existing_folders_lose_access_by_others(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "mail").mkdir(parents=True)
    data.chmod(0o755)
    (data / "mail").chmod(0o775)
    secure_data_dir(data)
    assert mode(data) == 0o750 and mode(data / "mail") == 0o770  # a group may be meant
    fresh = tmp_path / "fresh"
    secure_data_dir(fresh)
    assert mode(fresh) == 0o700 and mode(fresh / "mail") == 0o700
