"""What a ``data_dir`` holds, and whether it can hold mail.

Owns: :func:`data_dir_problem`, used by ``nosend config check`` (which must leave no
trace) and at ``nosend serve`` start (which may create the folder); and
:func:`data_dir_contents`, which ``nosend init`` uses so that a new configuration does
not silently take over another one's mail. A folder that
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
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DATA_SUBDIRS", "DataDirContents", "data_dir_contents", "data_dir_problem"]

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


@dataclass(frozen=True, slots=True)
class DataDirContents:
    """The mail found in a ``data_dir``: messages per Maildir, and queued messages."""

    #: (mailbox name, messages in its ``new/`` and ``cur/``), Maildirs with mail only,
    #: sorted by name.
    mailboxes: tuple[tuple[str, int], ...] = ()
    #: Committed entries of the outbound queue (``queue/active/``).
    queued: int = 0

    @property
    def has_mail(self) -> bool:
        """Whether any message is stored there (delivered or waiting to be sent)."""
        return bool(self.mailboxes) or self.queued > 0

    def describe(self) -> str:
        """One line for a person: which mailboxes hold how many messages, what is queued."""
        parts = []
        if self.mailboxes:
            listed = ", ".join(f"{name} ({_messages(n)})" for name, n in self.mailboxes)
            parts.append(f"mailbox{'es' if len(self.mailboxes) != 1 else ''} {listed}")
        if self.queued:
            parts.append(f"{_messages(self.queued)} queued")
        return "; ".join(parts) if parts else "no mail"


def _messages(n: int) -> str:
    return f"{n} message{'s' if n != 1 else ''}"


def _count_files(folder: Path) -> int:
    try:
        with os.scandir(folder) as it:
            # Maildir readers skip dot files (a convention, not a standard; all follow it).
            return sum(1 for e in it if not e.name.startswith(".") and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return 0


def data_dir_contents(data_dir: Path) -> DataDirContents:
    """Count the mail in ``data_dir`` (read only; a missing folder holds none).

    Raises ``OSError`` when a folder exists but cannot be read: the caller must not
    take an unreadable folder for an empty one.
    """
    mailboxes: list[tuple[str, int]] = []
    maildirs = data_dir / "mail"
    if maildirs.is_dir():
        for name in sorted(os.listdir(maildirs)):
            n = _count_files(maildirs / name / "new") + _count_files(maildirs / name / "cur")
            if n:
                mailboxes.append((name, n))
    active = data_dir / "queue" / "active"
    queued = len(os.listdir(active)) if active.is_dir() else 0
    return DataDirContents(tuple(mailboxes), queued)
