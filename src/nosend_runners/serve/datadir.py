"""The data folder's permissions: mail and mailbox names are for the server only.

Owns: the umask the server process runs with (:data:`PRIVATE_UMASK`: files 0600,
folders 0700 whoever creates them: the Maildir and queue code ask for 0700 on the
folders they make, but ``os.makedirs`` gives the parents it adds the umask's mode, which
made ``data/`` and ``data/mail/`` world-readable and the mailbox names listable by any
local user) and :func:`secure_data_dir`, which makes ``data_dir`` and ``data_dir/mail``
0700 when it creates them and takes access by others away from existing ones (a group
bit is left: ``0750`` with a group of its own is a deliberate choice). Must not: touch
anything inside a Maildir or the queue, or change ownership.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "secure_data_dir", "set_private_umask"]

_log = logging.getLogger("nosend.server")

#: The umask of ``nosend serve`` and ``nosend inetd``: nothing for group or others.
PRIVATE_UMASK = 0o077


def set_private_umask() -> int:
    """Give this process :data:`PRIVATE_UMASK`; return the one it had. For a process
    that is the server (the command line), never for a library user's process."""
    return os.umask(PRIVATE_UMASK)


def secure_data_dir(data_dir: Path) -> None:
    """Make ``data_dir`` and ``data_dir/mail`` if missing (0700), and remove access by
    others from them if they exist; a failure is logged, not raised (the sessions then
    report the folder's own errors as they meet them)."""
    for folder in (data_dir, data_dir / "mail"):
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            # mkdir's mode passes through the umask; say it exactly for a new folder.
            current = stat.S_IMODE(folder.stat().st_mode)
            if current & 0o007:
                folder.chmod(current & ~0o007)
                _log.info("%s: access by others removed (was %o)", folder, current)
        except OSError as exc:
            _log.error("cannot secure %s: %s", folder, exc.strerror or exc)
