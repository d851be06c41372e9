"""``nosend --version`` and what ``--help`` shows a user of ``serve`` and ``inetd``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import nosend
from nosend.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    try:
        status = main(list(argv))
    except SystemExit as e:
        status = int(e.code or 0)
    return status, capsys.readouterr().out


def test_version_agrees_with_pyproject(capsys: pytest.CaptureFixture[str]) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert nosend.__version__ == declared
    assert _run(capsys, "--version") == (0, f"nosend {declared}\n")
    assert _run(capsys, "version") == (0, f"{declared}\n")


def test_version_works_from_a_fresh_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nosend", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("nosend "), result.stderr


@pytest.mark.parametrize("command", ["serve", "inetd"])
def test_help_has_examples_and_no_test_only_options(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    status, out = _run(capsys, command, "--help")
    assert status == 0 and "examples" in out and f"nosend {command}" in out
    assert "--session" not in out and "echo" not in out
    assert "--foreground" not in out


def test_hidden_options_are_still_accepted() -> None:
    # Old scripts and the tests still pass them.
    args = nosend.cli.build_parser().parse_args(["serve", "--foreground", "--session", "echo"])
    assert args.session == "echo" and args.foreground is True
