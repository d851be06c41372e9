"""Storage failures of the machine itself, named and classified.

Owns: the few helpers that make every storage error say WHERE it happened and WHAT kind
of trouble it is, so that a server left alone for weeks on a small disk logs one line an
administrator can act on ("ENOSPC /var/mail/anna/tmp/..."), and the sessions pick the
right temporary reply:

- :func:`name_path` puts the file or folder into an ``OSError`` that came without one.
  ``os.open``, ``os.rename`` and ``os.mkdir`` already name theirs; ``os.write``,
  ``os.writev`` and ``os.fsync`` work on a descriptor and do not, so the store catches
  those and names the file the descriptor belongs to.
- :func:`describe` gives the two log fields ``error`` (the errno name, such as
  ``ENOSPC``, or the exception's class) and ``path``.
- :func:`is_full` tells a full disk or an exhausted quota (RFC 3463 section 3.4,
  X.3.1 "mail system full") from other failures (X.3.0).

Must not: retry, sleep, log or decide replies (callers do); hold state.
"""

from __future__ import annotations

import errno
import os

__all__ = ["name_path", "describe", "is_full", "FULL_ERRNOS"]

#: Errors meaning "no room": the disk (ENOSPC), or the user's quota (EDQUOT).
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def name_path(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """Set ``exc.filename`` to ``path`` unless the error already names a file; return
    ``exc`` (to be re-raised by the caller with a bare ``raise``)."""
    if exc.filename is None:
        exc.filename = os.fspath(path)
    return exc


def describe(exc: BaseException) -> dict[str, str | None]:
    """The log fields of a storage failure: ``error`` (errno name, or the class name
    when there is no errno) and ``path`` (the file or folder, None if unknown)."""
    if isinstance(exc, OSError):
        code = exc.errno
        name = errno.errorcode.get(code, type(exc).__name__) if code else type(exc).__name__
        path = exc.filename
        return {"error": name, "path": os.fsdecode(path) if path is not None else None}
    return {"error": type(exc).__name__, "path": None}


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or a quota) is full."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS
