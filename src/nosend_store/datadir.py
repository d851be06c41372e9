"""Whether ``data_dir`` can hold mail: checked before a server accepts any.

Owns: :func:`data_dir_problem`, used by ``nosend config check`` (which must leave no
trace) and at ``nosend serve`` start (which may create the folder). A folder that
cannot be written would otherwise be found only by the first delivery, after the
server had started and said it was listening: every message would get a 451.
Must not: delete or change anything it did not create itself, or look inside the
mailboxes (their number is unbounded; the delivery reports its own errors).

The test is a real write (a probe file or folder, removed at once), not ``os.access``:
root passes ``os.access`` on folders it still cannot write (``/proc``, a read-only
bind mount, NFS with root squashing).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["data_dir_problem", "DATA_SUBDIRS"]

#: The folders the server writes in ``data_dir`` (mailboxes, queue, runtime state).
DATA_SUBDIRS = ("mail", "queue", "state")

_PROBE = ".nosend-probe."


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _probe_write(folder: Path) -> str | None:
    """Create and remove a file in ``folder``; the reason it failed, or ``None``."""
    try:
        fd, name = tempfile.mkstemp(prefix=_PROBE, dir=folder)
    except OSError as e:
        return _reason(e)
    os.close(fd)
    os.unlink(name)
    return None


def _probe_mkdir(folder: Path) -> str | None:
    """Create and remove a folder in ``folder``; the reason it failed, or ``None``."""
    try:
        made = tempfile.mkdtemp(prefix=_PROBE, dir=folder)
    except OSError as e:
        return _reason(e)
    os.rmdir(made)
    return None


def data_dir_problem(data_dir: Path, *, create: bool = False) -> str | None:
    """Why mail cannot be kept in ``data_dir``, naming the path; ``None`` if it can.

    ``data_dir`` and each of :data:`DATA_SUBDIRS` that exists must be a folder the
    current user can create files in. A missing ``data_dir`` is made (mode 0700) when
    ``create`` is true; otherwise its nearest existing parent must let it be made.
    """
    path = data_dir.expanduser().absolute()
    if not path.exists():
        if create:
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
            except OSError as e:
                return f"data_dir {path} cannot be created: {_reason(e)}"
        else:
            parent = path.parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            if not parent.is_dir():
                return f"data_dir {path} cannot be created: {parent} is not a folder"
            reason = _probe_mkdir(parent)
            if reason is not None:
                return f"data_dir {path} cannot be created in {parent}: {reason}"
            return None
    for folder in (path, *(path / sub for sub in DATA_SUBDIRS)):
        if folder != path and not os.path.lexists(folder):
            continue  # made when first needed, as data_dir itself allows
        if not folder.is_dir():
            return f"data_dir {path}: {folder} is not a folder"
        reason = _probe_write(folder)
        if reason is not None:
            return f"data_dir {path}: cannot write in {folder}: {reason}"
    return None
