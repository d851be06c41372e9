"""Faults of the machine for tests: a real small filesystem, and injected system-call
errors.

``small_tmpfs`` mounts a size-limited tmpfs (root only). Where mounting is not allowed
the test is skipped with the reason, except under CI (``CI`` set), where it fails: a green
CI run must not hide a fault test that did not run.

``inject`` makes ``os.write``/``os.writev``/``os.fsync``/... raise a chosen ``OSError``
from a chosen call on, for descriptors of files under one directory only, so the event
loop's own descriptors (pipes, sockets) are never touched.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def _cannot(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"fault test cannot run under CI: {reason}")
    pytest.skip(reason)


@contextmanager
def small_tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``where`` (made if missing) for the block."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        _cannot("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        _cannot(f"mount -t tmpfs refused: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, mode: str) -> None:
    """``mount -o remount,<mode>`` (``ro`` or ``rw``) the tmpfs at ``where``."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last block; return the filler file
    (remove it to give the space back)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def _path_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Injected:
    """Which calls failed so far (``hits``) and how many calls were seen (``calls``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.hits = 0
        self.armed = True


@contextmanager
def inject(
    monkeypatch: pytest.MonkeyPatch,
    names: tuple[str, ...],
    code: int,
    under: Path,
    *,
    from_call: int = 1,
    times: int | None = None,
) -> Iterator[Injected]:
    """Make each ``os.<name>`` in ``names`` raise ``OSError(code)`` for descriptors (or
    paths) under ``under``, from the ``from_call``-th such call on, ``times`` times
    (None: until the block ends or ``state.armed`` is set to False)."""
    state = Injected()
    root = os.path.realpath(under)

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def fake(target: Any, *args: Any, **kwargs: Any) -> Any:
            where = _path_of(target) if isinstance(target, int) else os.fsdecode(target)
            if state.armed and os.path.realpath(where).startswith(root):
                state.calls += 1
                if state.calls >= from_call and (times is None or state.hits < times):
                    state.hits += 1
                    if isinstance(target, int):
                        raise OSError(code, os.strerror(code))  # as the kernel: no name
                    raise OSError(code, os.strerror(code), where)
            return real(target, *args, **kwargs)

        return fake

    for name in names:
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))
    try:
        yield state
    finally:
        state.armed = False
