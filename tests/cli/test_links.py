"""``nosend link add|remove|list|use|test``: edits that keep comments, and a real test."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from nosend_link.cycle_lock import CycleLock, UpMarker
from nosend_link.ledger import Ledger
from nosend_store.config import load_config
from tests.cli.test_admin import run
from tests.link.link_scripts import banner_down, banner_up, free_port, touch

HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"

ORIGINAL = f"""\
# Yacht mail -- my notes must survive `nosend` edits.

[server]
hostname = mail.yacht.example   # the boat
data_dir = data                 # next to this file

[domains]
yacht.example

[mailbox captain]
password = {HASH}

# the marina's wifi
[link marina]   # free
priority = 10

[account shore]
type = smtp
host = smtp.example.net
"""


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mail.cfg"
    path.write_text(ORIGINAL)
    os.chmod(path, 0o600)
    monkeypatch.setenv("NOSEND_CONFIG", str(tmp_path / "not-this-one.cfg"))
    return path


def test_add_writes_every_key_and_keeps_the_rest(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run(
        capsys, monkeypatch, "link", "add", "iridium", "--config", str(cfg),
        "--up", 'rasdial "Iridium GO"', "--down", 'rasdial "Iridium GO" /disconnect',
        "--probe", "smtp.example.net:587", "--priority", "50", "--cost-per-minute", "1.35",
        "--cost-per-mb", "0", "--max-size", "50K", "--accounts", "", "--hours", "22:00-06:00",
        "--budget", "500 MB", "--smarthost", "shore", "--rate", "2400 bit/s",
        "--setup-seconds", "25s", "--down-timeout", "30s", "--disabled")
    assert (status, err) == (0, ""), err
    assert out == f"added link iridium (dialled)\nchanged {cfg}\n"
    text = cfg.read_text()
    assert text.startswith(ORIGINAL.split("[account shore]")[0].rstrip("\n"))
    assert "# the marina's wifi\n[link marina]   # free\n" in text
    link = load_config(cfg).links["iridium"]
    assert link.up == ("rasdial", "Iridium GO")
    assert link.down == ("rasdial", "Iridium GO", "/disconnect")
    assert (link.priority, str(link.cost_per_minute), link.max_size) == (50, "1.35", 51200)
    assert link.budget is not None and link.budget.unit == "MB"
    assert link.smarthost == "shore" and link.rate == 300.0 and not link.enabled
    assert (link.setup_seconds, link.down_timeout) == (25.0, 30.0)


@pytest.mark.parametrize(("argv", "message"), [
    (("marina",), "link 'marina' already exists"),
    (("x", "--hours", "late"), "refused, the file would become invalid: hours: not HH:MM"),
    (("x", "--smarthost", "nowhere"), "smarthost: no [account nowhere]"),
    (("x", "--accounts", "ghost"), "[link x]: no [account ghost]"),
    (("x", "--up", "dial # now"), "a value cannot contain ' #'"),
    (("bad name",), "bad name 'bad name'"),
])
def test_add_refuses_bad_values_and_leaves_the_file(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...], message: str
) -> None:
    status, out, err = run(capsys, monkeypatch, "link", "add", *argv, "--config", str(cfg))
    assert status == 1 and out == ""
    assert message in err and err.startswith("nosend: ")
    assert cfg.read_text() == ORIGINAL


def test_list_use_and_remove(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = str(cfg)
    assert run(capsys, monkeypatch, "link", "add", "gsm", "--config", c,
               "--up", "nmcli connection up gsm", "--down", "nmcli connection down gsm",
               "--budget", "20")[0] == 0
    status, out, _ = run(capsys, monkeypatch, "link", "list", "--config", c)
    assert status == 0
    assert out.splitlines()[0] == "link in use: auto (every usable link, by priority)"
    assert "marina\n    always up (no up command)\n" in out
    assert "gsm\n    up: nmcli connection up gsm\n    down: nmcli connection down gsm\n" in out
    assert "probe smtp.example.net:587; smarthost shore; accounts all" in out
    assert "budget 20 a month" in out

    status, out, err = run(capsys, monkeypatch, "link", "use", "gsm", "--config", c)
    assert (status, out) == (0, f"link in use: gsm (only this link)\nchanged {cfg}\n"), err
    assert load_config(cfg).schedule.link == "gsm"
    assert "gsm (in use)" in run(capsys, monkeypatch, "link", "list", "--config", c)[1]
    status, _, err = run(capsys, monkeypatch, "link", "use", "iridium", "--config", c)
    assert status == 1 and "no link 'iridium' (links: marina, gsm)" in err
    assert run(capsys, monkeypatch, "link", "use", "COST", "--config", c)[0] == 0
    assert load_config(cfg).schedule.link == "cost"
    assert run(capsys, monkeypatch, "link", "use", "gsm", "--config", c)[0] == 0

    status, out, _ = run(capsys, monkeypatch, "link", "remove", "gsm", "--config", c)
    assert status == 0 and out.startswith("removed link gsm\nlink gsm was in use;")
    config = load_config(cfg)
    assert list(config.links) == ["marina"] and config.schedule.link == "auto"
    status, _, err = run(capsys, monkeypatch, "link", "remove", "gsm", "--config", c)
    assert status == 1 and "no link 'gsm'" in err


def add_link(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cfg: Path,
             name: str, *options: str) -> None:
    status, _, err = run(capsys, monkeypatch, "link", "add", name, "--config", str(cfg),
                         *options)
    assert status == 0, err


def as_command(argv: tuple[str, ...], script: Path) -> str:
    """A ``python -c CODE ARGS`` argv as one mail.cfg line: the code goes to ``script``
    (a value is one line; the stand-ins read their arguments from ``sys.argv[1:]``)."""
    assert argv[1] == "-c"
    script.write_text(argv[2])
    return shlex.join((argv[0], str(script), *argv[3:]))


def test_test_brings_the_link_up_probes_it_and_brings_it_down(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    port, pidfile, log = free_port(), tmp_path / "banner.pid", tmp_path / "link.log"
    add_link(capsys, monkeypatch, cfg, "sat",
             "--up", as_command(banner_up(port, pidfile, log), tmp_path / "up.py"),
             "--down", as_command(banner_down(pidfile, log), tmp_path / "down.py"),
             "--probe", f"127.0.0.1:{port}", "--up-timeout", "30s",
             "--cost-per-minute", "60")
    status, out, err = run(capsys, monkeypatch, "link", "test", "sat", "--config", str(cfg))
    assert status == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "testing link sat"
    assert lines[1].startswith(f"up: {sys.executable}: exit status 0 after ")
    assert lines[2].startswith(f"probe 127.0.0.1:{port}: connected in ")
    assert lines[2].endswith(": 220 test.invalid ESMTP ready")
    assert lines[3].startswith(f"down: {sys.executable}: exit status 0 after ")
    assert lines[4].startswith("online ") and lines[4].endswith("(in the ledger)")
    assert lines[5] == "link sat works"
    assert log.read_text() == "up\ndown\n"
    state = tmp_path / "data" / "state"
    assert UpMarker(state).read() == ()
    (record,) = Ledger(state / "cycles.jsonl").records()
    assert (record.link, record.result, record.error) == ("sat", "link test", None)
    assert record.cost > 0  # at 60 a minute, any time online costs something


def test_a_failed_up_still_runs_down(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    up_log, down_log = tmp_path / "up.log", tmp_path / "down.log"
    add_link(capsys, monkeypatch, cfg, "modem",
             "--up", shlex.join(touch(up_log, status=3)),
             "--down", shlex.join(touch(down_log)), "--probe", f"127.0.0.1:{free_port()}")
    status, out, err = run(capsys, monkeypatch, "link", "test", "modem", "--config", str(cfg))
    assert status == 1 and "nosend: link modem failed the test" in err
    assert "up: " in out and "exit status 3" in out
    assert "    | dialling" in out  # up's output, to see why
    assert "probe" not in out  # nothing to probe over a link that did not come up
    assert up_log.read_text() == "ran\n" and down_log.read_text() == "ran\n"
    (record,) = Ledger(tmp_path / "data" / "state" / "cycles.jsonl").records()
    assert record.error == "test failed"


def test_a_silent_probe_fails_the_test_and_down_runs(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    down_log = tmp_path / "down.log"
    add_link(capsys, monkeypatch, cfg, "modem", "--up", shlex.join(touch(tmp_path / "up")),
             "--down", shlex.join(touch(down_log)), "--probe", f"127.0.0.1:{free_port()}",
             "--up-timeout", "2s")
    status, out, err = run(capsys, monkeypatch, "link", "test", "modem", "--config", str(cfg))
    assert status == 1
    assert "cannot connect" in out and down_log.read_text() == "ran\n"


def test_test_refuses_while_a_cycle_runs(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    up_log = tmp_path / "up.log"
    add_link(capsys, monkeypatch, cfg, "modem", "--up", shlex.join(touch(up_log)))
    state = tmp_path / "data" / "state"
    state.mkdir(parents=True)
    with CycleLock(state):
        status, _, err = run(capsys, monkeypatch, "link", "test", "modem", "--config", str(cfg))
    assert status == 1 and f"another cycle is running (pid {os.getpid()})" in err
    assert not up_log.exists()


def test_test_of_an_unknown_link(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = run(capsys, monkeypatch, "link", "test", "ghost", "--config", str(cfg))
    assert status == 1 and "no link 'ghost' (links: marina)" in err
