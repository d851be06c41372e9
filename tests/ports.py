"""Free TCP ports on 127.0.0.1, for servers a test starts on a port it chooses.

Owns: :func:`free_port`, which ``tests/runners/conftest.py``, ``tests/interop/conftest.py``
and ``tests/link/link_scripts.py`` export under that name. Must not: hold a port open (the
server under test binds it next) or pick from a fixed list (other programs on the machine
use ports too).

Why not just bind port 0 and close: the kernel picks a port for ``bind(0)`` at random
among the odd ports of the ephemeral range (about 14,000 on Linux), and the port is free
again as soon as the probing socket closes. Two calls in a row then return the same port
about once in 14,000; a server given five ports for five services has two services on
one port about once in 1,400, and fails to start. Over the hundreds of servers of one run
that is a flake of a few percent. Ports handed out once are never handed out again in
this process, so the ports of one configuration, and of one run, are distinct.
"""

from __future__ import annotations

import socket
import threading

_HANDED_OUT: set[int] = set()
_LOCK = threading.Lock()
#: Redraws before giving up (only reachable if nearly every port was handed out).
_MAX_DRAWS = 1000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and that no earlier call in this
    process returned."""
    with _LOCK:
        for _ in range(_MAX_DRAWS):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    raise RuntimeError(f"no port left that was not handed out already ({len(_HANDED_OUT)})")
