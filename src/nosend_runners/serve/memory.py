"""Keep the server's memory from creeping up in 16 MiB steps after password checks.

Owns: one process-wide allocator setting for ``nosend serve`` (an inetd process serves
one connection and exits, so it does not need it).
Each scrypt password check (N=2^14, r=8) takes a 16 MiB buffer. glibc serves blocks that
large with mmap and returns them to the system when freed -- but each such free raises
its dynamic mmap threshold (up to 32 MiB), after which the next 16 MiB buffers come from
a heap arena and stay in the process when freed. With logins in several hashing threads
(one arena each) the resident size grew by 16 MiB steps and never came back
(benchmarks/bench_soak.py: 64 MiB after 12 checks in 4 threads; 0 with this setting).
Fixing the threshold at 1 MiB with ``mallopt(M_MMAP_THRESHOLD)`` turns the dynamic
adjustment off, so large buffers always go back to the system.

Must not: be called by a library user's process (it changes the whole process's
allocator), or fail the server where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD", "return_large_buffers"]

#: Allocations at least this large are mmapped and unmapped when freed.
MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>


def return_large_buffers() -> bool:
    """Set the fixed mmap threshold; ``False`` where the C library has no ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
