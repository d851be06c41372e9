"""Server-wide counters that protect the server from too many peers or guesses.

Owns: the concurrent-connection limit (overall and per peer address) and the per-address
authentication-failure tracker that sessions consult before answering AUTH/USER/PASS/APOP.
Must not: do I/O or sleep; the runner and the sessions decide what to do with the answers.
Both objects live for the whole server process and are shared by every session on one
event loop, so they need no locking.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ConnectionLimiter", "AuthFailureTracker", "LimitSettings"]


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Connection and authentication limits (configuration, with conservative defaults).

    ``max_connections`` bounds concurrent sessions overall and ``max_per_address`` per
    peer address; ``auth_max_failures`` failures from one address within
    ``auth_window`` seconds lock that address out of authentication until the window
    passes; each failure delays the failing reply by up to ``auth_max_delay`` seconds.
    ``blocking_threads`` bounds anyio's worker threads (password hashing, and disk work
    where no thread pool of our own runs: trio, inetd); ``disk_threads`` is the size of
    ``nosend serve``'s own pool for disk work on asyncio: few, because disk calls are
    short and every thread handing results back contends with the event loop for the
    GIL (8 threads delivered 2 KB messages from 20 clients about 10-20% slower than 2).
    """

    max_connections: int = 100
    max_per_address: int = 10
    auth_max_failures: int = 5
    auth_window: float = 900.0
    auth_max_delay: float = 8.0
    blocking_threads: int = 8
    disk_threads: int = 2


class ConnectionLimiter:
    """Count live sessions overall and per peer address."""

    __slots__ = ("max_total", "max_per_address", "_per_address", "_total")

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._per_address: dict[str, int] = {}
        self._total = 0

    @property
    def total(self) -> int:
        """Number of sessions currently admitted."""
        return self._total

    def count(self, address: str) -> int:
        """Number of sessions currently admitted from ``address``."""
        return self._per_address.get(address, 0)

    def try_acquire(self, address: str) -> bool:
        """Admit one more session from ``address`` if both limits allow; say whether."""
        current = self._per_address.get(address, 0)
        if self._total >= self.max_total or current >= self.max_per_address:
            return False
        self._per_address[address] = current + 1
        self._total += 1
        return True

    def release(self, address: str) -> None:
        """Forget one admitted session from ``address``."""
        current = self._per_address.get(address, 0)
        if current <= 1:
            self._per_address.pop(address, None)
        else:
            self._per_address[address] = current - 1
        self._total = max(0, self._total - 1)


class AuthFailureTracker:
    """Remember recent authentication failures per peer address.

    Sessions call ``blocked(addr)`` before checking credentials (answer a temporary
    failure without checking when it is true), ``record_failure(addr)`` after a failed
    attempt and ``failure_delay(addr)`` for how long to wait before replying, so that
    guessing costs the guesser time (RFC 4954 section 4 leaves rate limiting to the
    server). A success clears the address.

    Memory is bounded whatever the peers do: at most ``max_addresses`` addresses are
    remembered. A guesser with many source addresses (an IPv6 prefix holds billions)
    past that bound first loses the expired entries, then those whose last failure is
    the oldest; those forget their failures early, which is what an attacker with that
    many addresses could have had anyway by using fresh ones.
    """

    __slots__ = ("max_failures", "window", "max_delay", "max_addresses", "_clock", "_failures")

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 900.0,
        max_delay: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_delay = max_delay
        self.max_addresses = max(1, max_addresses)
        self._clock = clock
        # Ordered by last failure (oldest first): a failure moves its address to the end.
        self._failures: dict[str, list[float]] = {}

    @property
    def tracked(self) -> int:
        """Number of addresses currently remembered (at most ``max_addresses``)."""
        return len(self._failures)

    def _recent(self, address: str) -> list[float]:
        stamps = self._failures.get(address)
        if not stamps:
            return []
        horizon = self._clock() - self.window
        recent = [t for t in stamps if t > horizon]
        if recent:
            self._failures[address] = recent
        else:
            del self._failures[address]
        return recent

    def failures(self, address: str) -> int:
        """Number of failures from ``address`` within the window."""
        return len(self._recent(address))

    def blocked(self, address: str) -> bool:
        """Whether ``address`` has used up its failures for the current window."""
        return len(self._recent(address)) >= self.max_failures

    def record_failure(self, address: str) -> int:
        """Note one failed authentication from ``address``; return its failures within
        the window, this one included (``blocked`` once it reaches ``max_failures``)."""
        recent = self._recent(address)
        recent.append(self._clock())
        self._failures.pop(address, None)  # re-inserted last: newest failure
        # Bound memory per address: only the newest max_failures stamps matter.
        kept = self._failures[address] = recent[-self.max_failures :]
        if len(self._failures) > self.max_addresses:
            self._prune()
        return len(kept)

    def record_success(self, address: str) -> None:
        """Forget the failures of ``address`` after a successful authentication."""
        self._failures.pop(address, None)

    def failure_delay(self, address: str) -> float:
        """Seconds to wait before answering a failure: doubles per recent failure."""
        return self.delay_for(len(self._recent(address)))

    def delay_for(self, failures: int) -> float:
        """The delay for an address with ``failures`` recent failures (0.5 s, doubling,
        at most ``max_delay``)."""
        if failures == 0:
            return 0.0
        return float(min(self.max_delay, 0.5 * 2 ** (failures - 1)))

    def _prune(self) -> None:
        # One full pass, then room for a tenth more: the pass costs O(n) once per
        # n/10 new addresses, not on every failure once the table is full.
        for address in list(self._failures):
            self._recent(address)
        keep = self.max_addresses - max(1, self.max_addresses // 10)
        excess = len(self._failures) - keep
        if excess > 0:
            for address in list(self._failures)[:excess]:
                del self._failures[address]
