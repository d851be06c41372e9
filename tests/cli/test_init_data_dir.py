"""A new configuration gets its own data folder and never takes over mail silently."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from nosend.cli import main
from nosend.newconfig import DataInUse, data_dir_for
from nosend.serve import first_run
from nosend_store.config import default_config_path, default_data_dir, load_config


def _init(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Sea s3cret\n"))
    capsys.readouterr()
    try:
        status = main(["init", "--password-stdin", *argv])
    except SystemExit as e:
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def _deliver(data: Path, mailbox: str, count: int) -> None:
    for sub in ("tmp", "new", "cur"):
        (data / "mail" / mailbox / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (data / "mail" / mailbox / ("new" if i % 2 else "cur") / f"{i}.host:2,").write_bytes(
            b"Subject: kept\n\nmail is sacred\n"
        )


def test_each_new_configuration_gets_data_beside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("first", "other"):
        status, out, err = _init(capsys, monkeypatch, "--config", f"./{name}/mail.cfg")
        assert status == 0, err
        config = load_config(tmp_path / name / "mail.cfg")
        assert config.server.data_dir == tmp_path / name / "data"
        assert f"data in {tmp_path / name / 'data'}" in out


def test_only_the_usual_mail_cfg_gets_the_usual_data_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {"HOME": str(tmp_path), "NOSEND_CONFIG": str(tmp_path / "elsewhere.cfg")}
    usual = default_config_path({"HOME": str(tmp_path)})
    assert data_dir_for(usual, env) == default_data_dir(env)
    assert data_dir_for(tmp_path / "elsewhere.cfg", env) == tmp_path / "data"


def test_init_refuses_a_data_folder_with_mail_and_says_what_it_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "shared"
    _deliver(data, "captain", 3)
    _deliver(data, "mate", 1)
    _deliver(data, "empty", 0)
    (data / "queue" / "active" / "q1").mkdir(parents=True)
    cfg = tmp_path / "second" / "mail.cfg"
    status, out, err = _init(capsys, monkeypatch, "--config", str(cfg), "--data-dir", str(data))
    assert status == 1 and not cfg.exists()
    assert f"data folder {data} already holds mail" in err
    assert "captain (3 messages), mate (1 message); 1 message queued" in err
    assert "--adopt-data" in err and "empty" not in err

    argv = ["--config", str(cfg), "--data-dir", str(data), "--adopt-data"]
    status, out, err = _init(capsys, monkeypatch, *argv)
    assert status == 0, err
    assert f"adopting data folder {data}: mailboxes captain (3 messages)" in out
    assert load_config(cfg).server.data_dir == data
    assert len(list((data / "mail" / "captain" / "cur").iterdir())) == 2  # untouched


def test_a_data_folder_without_mail_is_used_without_a_word(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    _deliver(data, "user", 0)
    status, out, err = _init(capsys, monkeypatch, "--config", str(tmp_path / "mail.cfg"))
    assert status == 0 and err == "" and "adopting" not in out


def test_serve_first_run_does_not_take_over_mail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _deliver(tmp_path / "data", "user", 2)
    with pytest.raises(DataInUse, match=r"user \(2 messages\)"):
        first_run(tmp_path / "mail.cfg")
    assert not (tmp_path / "mail.cfg").exists()
    result = subprocess.run(
        [sys.executable, "-m", "nosend", "serve", "--config", str(tmp_path / "mail.cfg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "already holds mail" in result.stderr
    assert not (tmp_path / "mail.cfg").exists()
