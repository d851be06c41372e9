"""An account's secret (password or OAuth2 access token), fetched at the moment of use.

Owns: reading ``secret_file`` and running ``secret_command`` (like mpop's
``passwordeval`` or msmtp's ``passwordeval``): the command is run without a shell, with
no standard input, and its first line of output is the secret. Short-lived OAuth2 tokens
therefore stay fresh: nothing is cached between cycles.

Must not: log, or put the secret, the command's output or its error stream into an
exception message (DESIGN invariant 5). Errors name the account and what failed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SecretError", "resolve_secret"]

#: A token helper that talks to an identity provider may be slow, but never forever.
COMMAND_TIMEOUT = 60.0
_MAX_SECRET = 64 * 1024


class SecretError(Exception):
    """The secret could not be had; the message names the account and the cause only."""


def resolve_secret(
    account: str,
    *,
    secret: str | None = None,
    secret_file: str | Path | None = None,
    secret_command: Sequence[str] | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> str | None:
    """The secret for ``account`` from whichever source it has; ``None`` if it has none."""
    if secret is not None:
        return secret
    if secret_file is not None:
        return _from_file(account, Path(secret_file))
    if secret_command:
        return _from_command(account, list(secret_command), timeout)
    return None


def _first_line(account: str, raw: bytes, source: str) -> str:
    if len(raw) > _MAX_SECRET:
        raise SecretError(f"account {account}: {source} is longer than {_MAX_SECRET} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"account {account}: {source} is not UTF-8") from None
    line = text.splitlines()[0] if text else ""
    if not line:
        raise SecretError(f"account {account}: {source} is empty")
    return line


def _from_file(account: str, path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_SECRET + 1)
    except OSError as exc:
        raise SecretError(
            f"account {account}: cannot read secret_file {path}: {exc.strerror}") from None
    return _first_line(account, raw, f"secret_file {path}")


def _from_command(account: str, argv: list[str], timeout: float) -> str:
    program = argv[0]
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise SecretError(f"account {account}: secret_command {program}: not found") from None
    except PermissionError:
        raise SecretError(
            f"account {account}: secret_command {program}: permission denied") from None
    except subprocess.TimeoutExpired:
        raise SecretError(
            f"account {account}: secret_command {program} gave no answer in {timeout:g} s"
        ) from None
    if done.returncode != 0:
        # The error stream is left out on purpose: a helper may echo what it was given.
        raise SecretError(
            f"account {account}: secret_command {program} exited with status {done.returncode}")
    return _first_line(account, done.stdout, f"the output of secret_command {program}")
