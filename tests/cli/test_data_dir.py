"""A ``data_dir`` that cannot take mail is refused by ``config check`` and ``serve``.

Without the check the server started, said it was listening, and answered every
message with 451 while its log said ``FileNotFoundError`` with no path.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nosend.cli import main
from nosend_store.datadir import data_dir_problem
from tests.runners.conftest import free_port

HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"  # "password"


def _config(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "mail.cfg"
    path.write_text(
        f"[server]\nhostname = mx.example\ndata_dir = {data_dir}\n"
        f"smtp_listen = 127.0.0.1:{free_port()}\nsubmission_listen =\npop3_listen =\n"
        f"[domains]\nexample.org\n[mailbox a]\npassword = {HASH}\n"
    )
    os.chmod(path, 0o600)
    return path


def _check(capsys: pytest.CaptureFixture[str], cfg: Path) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["config", "check", "--config", str(cfg)])
    return status, capsys.readouterr().err


def test_a_data_dir_below_a_file_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    cfg = _config(tmp_path, blocker / "data")
    status, err = _check(capsys, cfg)
    assert status == 1
    assert f"data_dir {blocker / 'data'} cannot be created" in err and str(cfg) in err


def test_a_data_dir_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.write_text("")
    status, err = _check(capsys, _config(tmp_path, data))
    assert status == 1 and f"{data} is not a folder" in err


def test_a_subfolder_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "queue").write_text("")
    status, err = _check(capsys, _config(tmp_path, data))
    assert status == 1 and f"{data / 'queue'} is not a folder" in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_folder_even_root_cannot_write_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # os.access says yes to root here; the probe write does not.
    status, err = _check(capsys, _config(tmp_path, Path("/proc/nosend-data-test")))
    assert status == 1 and "data_dir /proc/nosend-data-test cannot be created in /proc" in err


def test_check_leaves_no_trace_and_passes_a_creatable_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, tmp_path / "new" / "data")
    before = sorted(os.listdir(tmp_path))
    status, err = _check(capsys, cfg)
    assert status == 0, err
    assert sorted(os.listdir(tmp_path)) == before


def test_an_existing_writable_data_dir_passes_and_keeps_no_probe(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "mail").mkdir(parents=True)
    assert data_dir_problem(data) is None
    assert os.listdir(data) == ["mail"] and os.listdir(data / "mail") == []


def test_serve_start_creates_a_missing_data_dir_private(tmp_path: Path) -> None:
    data = tmp_path / "a" / "data"
    assert data_dir_problem(data, create=True) is None
    assert data.is_dir() and stat.S_IMODE(data.stat().st_mode) == 0o700


def test_serve_refuses_to_start_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    cfg = _config(tmp_path, blocker / "data")
    result = subprocess.run(
        [sys.executable, "-m", "nosend", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"data_dir {blocker / 'data'} cannot be created" in result.stderr
    assert "listening" not in result.stderr
