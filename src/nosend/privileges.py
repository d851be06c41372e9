"""Running as the service user of ``mail.cfg`` (``user =`` in ``[server]``) after root.

Owns: deciding whether a command started as some user must switch to the ``RunAs`` of
``mail.cfg`` (:func:`plan_switch`), handing the data folder to that user while still
root (:func:`give_data_dir`), the switch itself (:func:`drop_privileges`), which
checks afterwards that root cannot be regained, and the two together for a command
about to write in the data folder (:func:`become_service_user`). Used by ``nosend
serve`` (after binding its ports and reading its TLS files), ``nosend inetd`` (after
reading its TLS files, before reading the connection) and the admin commands that write
in the data folder.
Must not: read ``mail.cfg`` (the caller passes what it loaded), open sockets, or follow
a symbolic link while changing owners as root.

Why the data folder is changed while root: the service user must be able to create
files in every folder of it (``mail/``, ``queue/``, ``state/``, ``fetch/``), including
those a root server or a root ``nosend queue maintain`` made before ``user =`` was set.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nosend_store.config import RunAs
from nosend_store.datadir import DATA_SUBDIRS

__all__ = [
    "PrivilegeError",
    "acting_as",
    "become_service_user",
    "describe_current",
    "drop_privileges",
    "give_data_dir",
    "plan_switch",
]


class PrivilegeError(Exception):
    """The process cannot become, or did not fully become, the configured user."""


def describe_current() -> str:
    """The user this process runs as, for messages: ``uid 1000 (alice)``."""
    import pwd  # noqa: PLC0415

    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
    return f"uid {uid} ({name})"


def plan_switch(run_as: RunAs | None, config_path: Path | str) -> RunAs | None:
    """Whom to switch to (None: nobody); :class:`PrivilegeError` when it cannot be done.

    Root switches. A process that already runs as ``run_as`` (systemd ``User=``, the
    user column of inetd.conf) has nothing to do. Any other user cannot switch, and
    going on would create files the server could not use: the error names the line.
    """
    if run_as is None:
        return None
    euid = os.geteuid()
    if euid == 0:
        return run_as if (run_as.uid, run_as.gid) != (0, 0) else None
    if euid == run_as.uid:
        if run_as.gid == os.getegid() or run_as.gid in os.getgroups():
            return None
        raise PrivilegeError(
            f"{config_path}:{run_as.line}: group = {run_as.group}: this process runs as "
            f"{describe_current()} without group {run_as.group} (gid {run_as.gid}) and is "
            "not root, so it cannot switch to it; start it as root or with that group"
        )
    raise PrivilegeError(
        f"{config_path}:{run_as.line}: user = {run_as.user}: this process runs as "
        f"{describe_current()}, not root, so it cannot switch to {run_as.user}; start it "
        f"as root (it switches after binding its ports) or as {run_as.user}"
    )


def drop_privileges(run_as: RunAs) -> None:
    """Become ``run_as`` for good: supplementary groups, then group, then user.

    The order matters: once the user is no longer root, the groups can no longer be
    changed. ``initgroups`` gives the user's own supplementary groups (as login, su and
    systemd ``User=`` do), so membership of, say, ``ssl-cert`` keeps working. Then
    checks that the real, effective and saved ids all changed and that ``setuid(0)``
    fails; :class:`PrivilegeError` otherwise (the caller must stop).
    """
    try:
        os.initgroups(run_as.user, run_as.gid)
        os.setgid(run_as.gid)
        os.setuid(run_as.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to {run_as}: {exc.strerror or exc}") from None
    if os.getresuid() != (run_as.uid,) * 3 or os.getresgid() != (run_as.gid,) * 3:
        raise PrivilegeError(
            f"switching to {run_as} left uids {os.getresuid()} and gids {os.getresgid()}"
        )
    if run_as.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise PrivilegeError(f"after switching to {run_as} the process could regain root")


def _hardlinks_protected() -> bool:
    """Whether users cannot hard-link files they do not own (Linux fs.protected_hardlinks)."""
    try:
        with open("/proc/sys/fs/protected_hardlinks", encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _give(
    fd: int, name: str | None, run_as: RunAs, *, dir_fd: int | None = None, links_ok: bool
) -> int:
    """Change the owner of one entry (never through a symbolic link); 1 if it changed."""
    st = os.fstat(fd) if name is None else os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if (st.st_uid, st.st_gid) == (run_as.uid, run_as.gid) or stat.S_ISLNK(st.st_mode):
        return 0  # a link's owner matters to nobody; what it points to is never touched
    if name is None:
        os.fchown(fd, run_as.uid, run_as.gid)
        return 1
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and not links_ok:
        # Without the kernel's protection a user can hard-link any file (say
        # /etc/shadow) into the folder; giving that name away would give the file away.
        return 0
    os.chown(name, run_as.uid, run_as.gid, dir_fd=dir_fd, follow_symlinks=False)
    return 1


def give_data_dir(data_dir: Path, run_as: RunAs, *, recursive: bool) -> int:
    """Make ``data_dir`` and its usual folders, owned by ``run_as``; how many changed.

    Run as root, before :func:`drop_privileges`. Missing folders are created (mode
    0700). With ``recursive`` everything below is given to ``run_as`` too, for an
    installation that ran as root before (``nosend serve`` does this at start; the
    per-connection ``nosend inetd`` only fixes the top folders). The walk uses folder
    descriptors and never follows a symbolic link (``os.fwalk``), so a link planted in
    the data folder by the service user cannot make root change the owner of a file
    elsewhere; ``data_dir`` itself may be a link (the administrator's choice).
    """
    root = Path(os.path.realpath(data_dir.expanduser().absolute()))
    os.makedirs(root, mode=0o700, exist_ok=True)
    for sub in DATA_SUBDIRS:
        try:
            os.mkdir(root / sub, 0o700)
        except FileExistsError:
            pass
    links_ok = _hardlinks_protected()
    changed = 0
    if not recursive:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            changed += _give(top, None, run_as, links_ok=links_ok)
            for sub in DATA_SUBDIRS:
                changed += _give(top, sub, run_as, dir_fd=top, links_ok=links_ok)
        finally:
            os.close(top)
        return changed
    # A link to a folder is listed among the folders but never entered; each folder is
    # changed through its own descriptor when the walk enters it.
    for _, _, files, dir_fd in os.fwalk(root, follow_symlinks=False):
        changed += _give(dir_fd, None, run_as, links_ok=links_ok)
        for name in files:
            changed += _give(dir_fd, name, run_as, dir_fd=dir_fd, links_ok=links_ok)
    return changed


def become_service_user(run_as: RunAs | None, config_path: Path | str, data_dir: Path) -> None:
    """For a command about to write in the data folder: go on as ``run_as``, if any.

    Started as root, what the command would write (queue entries, delivery reports,
    Maildir files, fetch state) would belong to root, and a server running as the
    service user could not read or remove it. So the command hands over the data
    folder's top folders and gives up root, as the server does. Raises
    :class:`PrivilegeError` when another non-root user runs it (see :func:`plan_switch`).
    """
    target = plan_switch(run_as, config_path)
    if target is not None:
        give_data_dir(data_dir, target, recursive=False)
        drop_privileges(target)


@contextmanager
def acting_as(run_as: RunAs | None) -> Iterator[None]:
    """Root, for a while, as ``run_as`` (None: nothing changes): the effective ids and
    groups change, the saved ids stay root, and root comes back when the block ends.

    For ``nosend check`` and ``nosend watch`` run as root: the link's ``up`` and
    ``down`` (pppd, nmcli) usually need root, while what the exchange writes (Maildir
    files, queue records, fetch records, delivery reports) must belong to the service
    user from the moment it exists, or the server could not read it. On Linux the change
    applies to every thread of the process (glibc makes ``seteuid`` process-wide), so the
    worker threads the exchange uses write as ``run_as`` too. Not a security boundary:
    the saved uid is root; use :func:`drop_privileges` for that.
    """
    if run_as is None or os.geteuid() != 0:
        yield
        return
    groups = os.getgroups()
    egid = os.getegid()
    os.setgroups(os.getgrouplist(run_as.user, run_as.gid))
    os.setegid(run_as.gid)
    os.seteuid(run_as.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)


def give_tree(path: Path, run_as: RunAs) -> int:
    """Give ``path`` and everything below it to ``run_as`` (as root; never through a
    symbolic link, see :func:`give_data_dir`); how many entries changed. A missing
    ``path`` changes nothing."""
    if not path.is_dir():
        return 0
    links_ok = _hardlinks_protected()
    changed = 0
    for _, _, files, dir_fd in os.fwalk(path, follow_symlinks=False):
        changed += _give(dir_fd, None, run_as, links_ok=links_ok)
        for name in files:
            changed += _give(dir_fd, name, run_as, dir_fd=dir_fd, links_ok=links_ok)
    return changed
