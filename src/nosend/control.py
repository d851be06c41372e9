"""Finding the ``nosend serve`` of a ``mail.cfg`` and asking it to re-read the file.

Owns: the server's pid file ``<data_dir>/state/serve.pid`` (held with an ``flock`` for
the server's life, so a stale file left by a killed server is never taken for a live
one, and a second server on the same data folder is refused), the reload
acknowledgement ``<data_dir>/state/serve.reload`` the server writes after each reload,
and :func:`request_reload`, used by ``nosend reload`` and by every admin command that
changes ``mail.cfg``. Must not: edit ``mail.cfg`` or signal any process that does not
hold the pid file's lock.

Why a pid file and not ``pkill -HUP -f "nosend serve"``: that signals every server on
the machine, including ones for other configurations, and says nothing when none runs
or when the server refused the new file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PidFile",
    "ReloadOutcome",
    "RunningServer",
    "ServerAlreadyRunning",
    "config_stamp",
    "register",
    "request_reload",
    "running_server",
    "write_reload_ack",
]

#: How long a command waits for the server to say it reloaded (it reads and checks a
#: small file; far longer means the server is stuck, and the command says so).
RELOAD_WAIT = 10.0


def _state_dir(data_dir: Path) -> Path:
    return data_dir.expanduser().absolute() / "state"


def pid_path(data_dir: Path) -> Path:
    """Where the server of ``data_dir`` writes its pid."""
    return _state_dir(data_dir) / "serve.pid"


def ack_path(data_dir: Path) -> Path:
    """Where the server of ``data_dir`` records the outcome of its last reload."""
    return _state_dir(data_dir) / "serve.reload"


def config_stamp(path: Path) -> list[int] | None:
    """What identifies one version of ``mail.cfg``: inode, size, modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _same_config(a: Path | str, b: Path | str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


class ServerAlreadyRunning(Exception):
    """Another ``nosend serve`` holds the pid file of this data folder."""


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A live ``nosend serve``: its pid and the ``mail.cfg`` it was started with."""

    pid: int
    config: str


class PidFile:
    """The pid file a running ``nosend serve`` holds locked until it exits.

    :meth:`acquire` takes the lock (refusing if another server holds it) and leaves the
    file empty; :meth:`publish` writes the pid once the server handles SIGHUP, so that
    nobody signals it earlier (SIGHUP's default action ends a process).
    """

    def __init__(self, data_dir: Path, config: Path) -> None:
        self.path = pid_path(data_dir)
        self._config = os.path.realpath(config)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the pid file; :class:`ServerAlreadyRunning` if another server holds it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                other = running_server_at(self.path)
                who = f"pid {other.pid}, {other.config}" if other else "starting"
                raise ServerAlreadyRunning(
                    f"another nosend serve ({who}) uses this data folder ({self.path})"
                ) from None
            # A server that was exiting may have unlinked the file we opened: lock the
            # file that is at the path now, or a reload would never find us.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        self._fd = fd

    def publish(self) -> None:
        """Write the pid and config path: from now on ``nosend reload`` signals us."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n{self._config}\n".encode(), 0)

    def release(self) -> None:
        """Remove the pid file and drop the lock (at exit)."""
        if self._fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


def running_server_at(path: Path) -> RunningServer | None:
    """The server holding the pid file at ``path``, or None (no file, stale, starting)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        else:
            return None  # nobody holds it: a server was killed and left the file
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    finally:
        os.close(fd)
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].isdigit():
        return None  # locked but not yet published: still starting
    return RunningServer(int(lines[0]), lines[1])


def running_server(data_dir: Path) -> RunningServer | None:
    """The live ``nosend serve`` whose data folder is ``data_dir``, if any."""
    return running_server_at(pid_path(data_dir))


def write_reload_ack(data_dir: Path, stamp: list[int] | None, error: str | None) -> None:
    """Record, in the server, that a reload happened and how it ended.

    Not fsynced: it only informs a waiting command; a crash loses nothing of value.
    """
    path = ack_path(data_dir)
    last = _read_ack(path)
    count = int(last.get("count", 0)) if last.get("pid") == os.getpid() else 0
    record = {"pid": os.getpid(), "count": count + 1, "stamp": stamp, "error": error}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _read_ack(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What became of a reload request."""

    server: RunningServer
    #: True: the server took the file; False: it kept the old one (see ``error``);
    #: None: it did not answer within :data:`RELOAD_WAIT`.
    taken: bool | None
    error: str | None = None

    def describe(self) -> str:
        """One line for a person."""
        who = f"nosend serve (pid {self.server.pid})"
        if self.taken:
            return f"{who} reloaded it"
        if self.taken is None:
            return f"asked {who} to reload it; it has not confirmed yet (see its log)"
        return f"{who} kept its old configuration: {self.error}"


class ForeignServer(Exception):
    """The data folder's server runs with another ``mail.cfg``."""


def request_reload(
    config: Path, data_dir: Path, *, stamp: list[int] | None = None
) -> ReloadOutcome | None:
    """Send SIGHUP to the server of ``config`` and wait for its answer; None if none runs.

    With ``stamp`` (the :func:`config_stamp` of the file just written) the answer must
    be about that version. Raises :class:`ForeignServer` when the server using
    ``data_dir`` was started with another file (it would not read this one).
    """
    server = running_server(data_dir)
    if server is None:
        return None
    if not _same_config(server.config, config):
        raise ForeignServer(
            f"the nosend serve using {data_dir} (pid {server.pid}) reads {server.config}, "
            f"not {config}"
        )
    path = ack_path(data_dir)
    before = _read_ack(path)
    count = int(before.get("count", 0)) if before.get("pid") == server.pid else 0
    try:
        os.kill(server.pid, signal.SIGHUP)
    except ProcessLookupError:
        return None  # it exited between the lock test and now
    deadline = time.monotonic() + RELOAD_WAIT
    while time.monotonic() < deadline:
        ack = _read_ack(path)
        if ack.get("pid") == server.pid and int(ack.get("count", 0)) > count:
            if ack.get("error"):
                return ReloadOutcome(server, False, str(ack["error"]))
            if stamp is None or ack.get("stamp") == stamp:
                return ReloadOutcome(server, True)
        time.sleep(0.05)
    return ReloadOutcome(server, None)


# -- the `nosend reload` command ----------------------------------------------------------

_EPILOG_RELOAD = """\
examples:
  nosend reload
  nosend reload --config /etc/nosend/mail.cfg
  systemctl reload nosend            # the unit's ExecReload runs `nosend reload`
"""


def register(subparsers: Any) -> None:
    """Add ``nosend reload``."""
    import argparse  # noqa: PLC0415

    p = subparsers.add_parser(
        "reload",
        help="make the running nosend serve re-read mail.cfg",
        description="Signal the nosend serve that uses this mail.cfg (found through\n"
        "<data_dir>/state/serve.pid) to re-read it, and say whether it took the new file.",
        epilog=_EPILOG_RELOAD,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="mail.cfg of the server (default: $NOSEND_CONFIG or the usual place)",
    )
    p.set_defaults(handler=_reload)


def _reload(args: Any) -> int:
    import sys  # noqa: PLC0415

    from nosend_store.config import ConfigError, default_config_path, load_config  # noqa: PLC0415

    path: Path = args.config if args.config is not None else default_config_path()
    try:
        config = load_config(path)
    except ConfigError as e:
        # The server would refuse it too and keep its old configuration: say so first.
        for error in e.all_errors:
            print(f"nosend: {error}", file=sys.stderr)
        print("nosend: not reloading; the server keeps its configuration", file=sys.stderr)
        return 1
    try:
        outcome = request_reload(path, config.server.data_dir)
    except ForeignServer as e:
        print(f"nosend: {e}", file=sys.stderr)
        return 1
    if outcome is None:
        print(
            f"nosend: no nosend serve is running for {path} "
            f"(no live {pid_path(config.server.data_dir)})",
            file=sys.stderr,
        )
        return 1
    if outcome.taken is False:
        print(f"nosend: {outcome.describe()}", file=sys.stderr)
        return 1
    print(f"{path}: {outcome.describe()}")
    return 0 if outcome.taken else 1
