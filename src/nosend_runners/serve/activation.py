"""systemd socket activation: sockets passed in by the service manager.

Owns: the ``sd_listen_fds(3)`` protocol (``LISTEN_PID``, ``LISTEN_FDS``,
``LISTEN_FDNAMES``, descriptors from 3) and deciding which service each inherited socket
carries. Must not: accept connections or know what runs on them.

With ``Accept=no`` the listening sockets are handed to ``nosend serve``; name each with
``FileDescriptorName=smtp`` (or ``submission``, ``smtps``, ``pop3``, ``pop3s``) in the
``.socket`` unit. Unnamed sockets are matched by their well-known port (25, 587, 465,
110, 995). With ``Accept=yes`` ``nosend inetd`` receives one connected socket as fd 3.

Example units (``Accept=no``: one long-running server for every listener)::

    # /etc/systemd/system/nosend-smtp.socket (likewise nosend-pop3.socket, ...)
    [Socket]
    ListenStream=25
    FileDescriptorName=smtp
    Service=nosend.service
    [Install]
    WantedBy=sockets.target

    # /etc/systemd/system/nosend.service
    [Service]
    ExecStart=/usr/local/bin/nosend serve --config /etc/nosend/mail.cfg
    ExecReload=/bin/kill -HUP $MAINPID
    User=nosend
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

__all__ = ["SD_LISTEN_FDS_START", "InheritedSocket", "ActivationError", "listen_fds"]

SD_LISTEN_FDS_START = 3

_WELL_KNOWN_PORTS = {25: "smtp", 587: "submission", 465: "smtps", 110: "pop3", 995: "pop3s"}
_SERVICES = frozenset(_WELL_KNOWN_PORTS.values())


class ActivationError(Exception):
    """The service manager's environment names sockets that cannot be used."""


@dataclass(frozen=True, slots=True)
class InheritedSocket:
    """One socket from the service manager: its service (or ``None``) and the socket."""

    name: str
    service: str | None
    sock: socket.socket
    listening: bool


def _service_for(name: str, sock: socket.socket, ports: Mapping[int, str]) -> str | None:
    if name in _SERVICES:
        return name
    try:
        port = sock.getsockname()[1]
    except (OSError, IndexError, TypeError):
        return None
    return ports.get(port) or _WELL_KNOWN_PORTS.get(port)


def listen_fds(
    environ: MutableMapping[str, str] | None = None,
    *,
    ports: Mapping[int, str] | None = None,
    unset: bool = True,
) -> list[InheritedSocket]:
    """Return the sockets passed by systemd, or ``[]`` when none were passed to us.

    ``ports`` maps extra port numbers (those in ``mail.cfg``) to services for sockets
    without a recognised ``FileDescriptorName``. The variables are removed from
    ``environ`` when ``unset`` (as ``sd_listen_fds(1)`` does) so children do not inherit
    them.
    """
    env = os.environ if environ is None else environ
    pid_text = env.get("LISTEN_PID")
    fds_text = env.get("LISTEN_FDS")
    names_text = env.get("LISTEN_FDNAMES", "")
    if unset:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
    if not pid_text or not fds_text:
        return []
    try:
        pid, count = int(pid_text), int(fds_text)
    except ValueError:
        raise ActivationError(
            f"LISTEN_PID={pid_text!r} LISTEN_FDS={fds_text!r} are not numbers"
        ) from None
    # The variables were meant for another process (we were started by the real target).
    if pid != os.getpid():
        return []
    names = names_text.split(":") if names_text else []
    result = []
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ActivationError(f"inherited fd {fd} is not a socket: {exc}") from None
        name = names[index] if index < len(names) else "unknown"
        try:
            listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        except OSError:
            listening = False
        result.append(InheritedSocket(name, _service_for(name, sock, ports or {}), sock, listening))
    return result
