"""Re-reading ``mail.cfg`` in a running server without a restart.

Owns: :class:`ConfigHolder`, which hands out the current :class:`Config` and replaces it
only with a new one that loaded cleanly. Must not: log (the caller logs the returned
error), watch the file by itself, or hold a half-updated configuration.

A session takes ``holder.current`` once when it starts and keeps that value, so a
reload never changes the rules under a transaction in progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nosend_store.config import Config, ConfigError, load_config

__all__ = ["ConfigHolder"]


@dataclass(frozen=True, slots=True)
class _Stamp:
    device: int
    inode: int
    size: int
    mtime_ns: int


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _Stamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ConfigHolder:
    """The server's current configuration, reloadable on demand.

    The constructor loads the file and raises :class:`ConfigError` if it is bad (a
    server must not start on a broken file). Later, :meth:`reload` returns the error
    instead of raising and keeps serving with the old configuration.
    """

    def __init__(self, path: str | os.PathLike[str], config: Config | None = None) -> None:
        self.path = Path(path)
        stamp = _stamp(self.path)
        self._config = config if config is not None else load_config(self.path)
        self._stamp = stamp
        self._failed_stamp: _Stamp | None = None

    @property
    def current(self) -> Config:
        """The configuration in force."""
        return self._config

    def reload(self) -> ConfigError | None:
        """Read the file again; on success use it, on error keep the old one.

        Returns ``None`` on success, else the error (with file and line) to report.
        """
        stamp = _stamp(self.path)
        try:
            config = load_config(self.path)
        except ConfigError as e:
            self._failed_stamp = stamp
            return e
        # One reference assignment: a reader sees the old value or the new, never a mix.
        self._config = config
        self._stamp = stamp
        return None

    def reload_if_changed(self) -> ConfigError | None:
        """:meth:`reload` only when the file changed since it was last read.

        A bad file is reported once, not again on every call until it changes.
        """
        stamp = _stamp(self.path)
        if stamp == self._stamp or stamp == self._failed_stamp:
            return None
        return self.reload()
