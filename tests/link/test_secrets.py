"""Account secrets: from the value, a file or a command, and never in an error message."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nosend_link.secrets import SecretError, resolve_secret

PY = sys.executable


def test_value_file_and_command_each_give_the_first_line(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret-from-file\nignored\n")
    assert resolve_secret("a", secret="direct") == "direct"
    assert resolve_secret("a", secret_file=secret_file) == "s3cret-from-file"
    command = [PY, "-c", "print('ya29.token-from-command')"]
    assert resolve_secret("a", secret_command=command) == "ya29.token-from-command"
    assert resolve_secret("a") is None


def test_a_failing_command_names_account_and_status_but_not_its_output() -> None:
    command = [PY, "-c", "import sys; print('hunter2'); print('hunter2', file=sys.stderr); "
               "sys.exit(3)"]
    with pytest.raises(SecretError) as caught:
        resolve_secret("smarthost", secret_command=command)
    assert "smarthost" in str(caught.value) and "status 3" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_missing_program_empty_output_and_timeout(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="not found"):
        resolve_secret("a", secret_command=[str(tmp_path / "no-such-helper")])
    with pytest.raises(SecretError, match="is empty"):
        resolve_secret("a", secret_command=[PY, "-c", "pass"])
    with pytest.raises(SecretError, match="no answer in 0.5 s"):
        resolve_secret("a", secret_command=[PY, "-c", "import time; time.sleep(5)"],
                       timeout=0.5)


def test_unreadable_secret_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SecretError, match=f"cannot read secret_file {missing}"):
        resolve_secret("a", secret_file=missing)


def test_command_gets_no_stdin() -> None:
    # A helper that would wait for a prompt's answer must see end of file, not hang.
    command = [PY, "-c", "import sys; print(repr(sys.stdin.read()) or 'x')"]
    assert resolve_secret("a", secret_command=command) == "''"
