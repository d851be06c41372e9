"""Server-wide counters that protect the server from too many peers or guesses.

Owns: the concurrent-connection limits and the authentication-failure tracker that
sessions consult before checking a login, and :func:`client_key`, which says which peer
addresses count as one client for both. Must not: do I/O or sleep; the runner and the
sessions decide what to do with the answers. Both objects live for the whole server
process and are shared by every session on one event loop, so they need no locking
(``shared_limits`` adds a file lock for the processes of ``nosend inetd``).

One client is one IPv4 address, or one IPv6 /64 (``ipv6_prefix``): a single host or
site is normally given a whole /64 (RFC 6177), so counting IPv6 addresses one by one
would hand one machine billions of connection slots and lockout budgets.

Connections, decided as Postfix and Dovecot would (a pool shared by every service,
where Postfix has a process limit per service):

- every service of the server (``services``) owns ``service_reserve`` slots of the
  ``max_total`` pool that only its own connections may use, so a flood of SMTP
  connections never shuts POP3 out, and the other way round (Postfix gives each
  master.cf service its own ``process_limit``; Dovecot each service ``process_limit``);
- the rest is shared; its last ``trusted_reserve`` slots are kept for clients on
  ``trusted_networks``, so the local network can still send and fetch while strangers
  fill the rest;
- one client may hold at most ``max_per_address`` connections *of each service*
  (Postfix's ``smtpd_client_connection_count_limit``, default 50, also per service);
  trusted networks are exempt, as Postfix exempts ``$mynetworks``
  (``smtpd_client_event_limit_exceptions``). Authenticated clients cannot be told
  apart when they connect; they are served from trusted networks or from the reserves.

A slot is taken when a connection is accepted and given back the moment its session ends
(the peer closed, timed out or quit), before the connection's closing work.

Logins: every attempt is counted when it is admitted, before the password check, in the
same step that checks the lockout, so parallel guesses cannot all pass the check before
the first failure is counted. Failures are kept per client and per user name: a client
is locked out when its failures in the window, whatever the names, reach
``max_failures``, and a successful login clears only the failures of that user name
from that client, so an account holder cannot reset the count while guessing other
users' passwords. A lockout of a user name on its own, from every client, is not kept:
anyone could then lock any user out.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "Admission",
    "AuthFailureTracker",
    "ConnectionLimiter",
    "LimitSettings",
    "client_key",
]

#: Bits of an IPv6 address that name one client (RFC 6177: a /64 per site at least).
IPV6_CLIENT_PREFIX = 64
#: Seconds after which an admitted attempt never settled (its process died during the
#: check) counts as a failure; a password check takes well under a second.
PENDING_TIMEOUT = 60.0
#: Characters of a user name kept per failure (mailbox names have at most 64).
_USER_CHARS = 64


@lru_cache(maxsize=4096)
def client_key(address: str, ipv6_prefix: int = IPV6_CLIENT_PREFIX) -> str:
    """The client ``address`` belongs to for the limits: the IPv4 address itself (also
    when written ``::ffff:a.b.c.d``), the IPv6 network of ``ipv6_prefix`` bits, or the
    text unchanged when it is no IP address (``"unknown"`` under a pipe)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Connection and authentication limits (configuration, with conservative defaults).

    ``max_connections`` bounds concurrent sessions overall; ``max_per_address`` bounds
    those of one client (an IPv4 address or an IPv6 /64) for one service, trusted
    networks exempt; ``service_reserve`` slots of the pool are kept for each service and
    ``trusted_reserve`` for trusted networks (see the module docstring).
    ``auth_max_failures`` failures from one client within ``auth_window`` seconds lock
    that client out of authentication until the window passes; each failure delays the
    failing reply by up to ``auth_max_delay`` seconds.
    ``blocking_threads`` bounds anyio's worker threads (password hashing, and disk work
    where no thread pool of our own runs: trio, inetd); ``disk_threads`` is the size of
    ``nosend serve``'s own pool for disk work on asyncio: few, because disk calls are
    short and every thread handing results back contends with the event loop for the
    GIL (8 threads delivered 2 KB messages from 20 clients about 10-20% slower than 2).
    """

    max_connections: int = 100
    max_per_address: int = 50
    service_reserve: int = 10
    trusted_reserve: int = 10
    auth_max_failures: int = 5
    auth_window: float = 900.0
    auth_max_delay: float = 8.0
    blocking_threads: int = 8
    disk_threads: int = 2


class ConnectionLimiter:
    """Count live sessions overall, per service and per client (see the module
    docstring for the rules).

    ``services`` are the services that own a reserve (those the server listens for);
    ``trusted(address)`` says whether a peer is on a trusted network (read at each
    connection, so a reloaded configuration applies at once).
    """

    __slots__ = (
        "max_total",
        "max_per_address",
        "service_reserve",
        "trusted_reserve",
        "trusted",
        "_services",
        "_per_client",
        "_per_service",
        "_trusted_counts",
        "_trusted_total",
        "_total",
    )

    def __init__(
        self,
        max_total: int,
        max_per_address: int,
        *,
        services: Iterable[str] = (),
        service_reserve: int = 0,
        trusted_reserve: int = 0,
        trusted: Callable[[str], bool] | None = None,
    ) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.service_reserve = service_reserve
        self.trusted_reserve = trusted_reserve
        self.trusted = trusted
        self._services = tuple(dict.fromkeys(services))
        self._per_client: dict[tuple[str, str], int] = {}
        self._per_service: dict[str, int] = {}
        # Sessions admitted as trusted, so that their release is counted the same way
        # even if a reload changed the trusted networks meanwhile.
        self._trusted_counts: dict[tuple[str, str], int] = {}
        self._trusted_total = 0
        self._total = 0

    @property
    def total(self) -> int:
        """Number of sessions currently admitted."""
        return self._total

    def count(self, service: str, address: str) -> int:
        """Number of ``service`` sessions currently admitted from ``address``'s client."""
        return self._per_client.get((service, client_key(address)), 0)

    def in_service(self, service: str) -> int:
        """Number of ``service`` sessions currently admitted."""
        return self._per_service.get(service, 0)

    def _reserve(self) -> int:
        # Reserves never take more than half the pool, however many services.
        if not self._services or self.service_reserve <= 0:
            return 0
        return min(self.service_reserve, self.max_total // (2 * len(self._services)))

    def try_acquire(self, service: str, address: str) -> bool:
        """Admit one more ``service`` session from ``address`` if the limits allow; say
        whether."""
        if self._total >= self.max_total:
            return False
        trusted = self.trusted is not None and self.trusted(address)
        key = (service, client_key(address))
        current = self._per_client.get(key, 0)
        if not trusted and current >= self.max_per_address:
            return False
        used = self._per_service.get(service, 0)
        reserve = self._reserve()
        if not (service in self._services and used < reserve):
            # Not one of the service's own slots: one of the shared ones.
            per_service = self._per_service
            in_reserves = sum(min(per_service.get(s, 0), reserve) for s in self._services)
            shared_used = self._total - in_reserves
            shared_size = self.max_total - reserve * len(self._services)
            if shared_used >= shared_size:
                return False
            # Strangers leave the last trusted_reserve shared slots free of their own
            # (trusted sessions are taken to sit in the shared part: at worst a stranger
            # gets one of a reserve's slots, never more than the pool).
            kept = min(self.trusted_reserve, shared_size // 2)
            if not trusted and (
                shared_used - min(self._trusted_total, shared_used) >= shared_size - kept
            ):
                return False
        if trusted:
            self._trusted_counts[key] = self._trusted_counts.get(key, 0) + 1
            self._trusted_total += 1
        self._per_client[key] = current + 1
        self._per_service[service] = used + 1
        self._total += 1
        return True

    def release(self, service: str, address: str) -> None:
        """Forget one admitted ``service`` session from ``address``."""
        key = (service, client_key(address))
        current = self._per_client.get(key, 0)
        if current <= 1:
            self._per_client.pop(key, None)
        else:
            self._per_client[key] = current - 1
        trusted = self._trusted_counts.get(key, 0)
        if trusted:
            if trusted == 1:
                del self._trusted_counts[key]
            else:
                self._trusted_counts[key] = trusted - 1
            self._trusted_total -= 1
        used = self._per_service.get(service, 0)
        if used <= 1:
            self._per_service.pop(service, None)
        else:
            self._per_service[service] = used - 1
        self._total = max(0, self._total - 1)


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to :meth:`AuthFailureTracker.admit`.

    ``ticket`` names the admitted attempt (0: not admitted). When not admitted,
    ``retry`` says it was only because other attempts from the client are being checked
    right now (ask again shortly); otherwise the client is locked out. ``failures`` is
    the client's count once this attempt is included.
    """

    ticket: int
    failures: int
    retry: bool = False

    @property
    def admitted(self) -> bool:
        """Whether the credentials may be checked."""
        return self.ticket != 0


# One remembered attempt: [time stamp, user name, ticket]; ticket 0 is a settled failure,
# any other number an attempt admitted and still being checked.
_Entry = list[float | str | int]


class AuthFailureTracker:
    """Remember recent authentication attempts per client and user name.

    Sessions call ``admit(addr, user)`` before checking credentials (refuse with a
    temporary failure, without checking, when it is not admitted), then ``fail`` or
    ``succeed`` with its ticket; ``delay_for(failures)`` says how long to wait before
    replying to a failure, so that guessing costs the guesser time (RFC 4954 section 4
    leaves rate limiting to the server). ``record_failure``, ``record_success``,
    ``blocked``, ``failures`` and ``failure_delay`` are the same questions without a
    ticket.

    Memory is bounded whatever the peers do: at most ``max_addresses`` clients are
    remembered, each with at most ``max_failures`` failures and as many attempts in
    flight. A guesser with more clients than that first loses the expired entries,
    then those whose last attempt is the oldest; those forget their failures early,
    which is what an attacker with that many networks could have had anyway.
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
        # Client -> attempts, ordered by last attempt (oldest client first).
        self._failures: dict[str, list[_Entry]] = {}

    @property
    def tracked(self) -> int:
        """Number of clients currently remembered (at most ``max_addresses``)."""
        return len(self._failures)

    def _recent(self, key: str) -> list[_Entry]:
        entries = self._failures.get(key)
        if not entries:
            return []
        now = self._clock()
        horizon = now - self.window
        stale = now - PENDING_TIMEOUT
        recent = []
        for entry in entries:
            stamp = float(entry[0])
            if stamp <= horizon:
                continue
            if entry[2] and stamp <= stale:
                entry = [stamp, entry[1], 0]  # its check never ended: a failure
            recent.append(entry)
        if recent:
            self._failures[key] = recent
        else:
            del self._failures[key]
        return recent

    @staticmethod
    def _settled(entries: list[_Entry]) -> int:
        return sum(1 for entry in entries if not entry[2])

    def failures(self, address: str) -> int:
        """Number of failures from ``address``'s client within the window."""
        return self._settled(self._recent(client_key(address)))

    def blocked(self, address: str) -> bool:
        """Whether ``address``'s client has used up its failures for the window."""
        return self.failures(address) >= self.max_failures

    def admit(self, address: str, user: str = "") -> Admission:
        """Count one attempt to log in as ``user`` from ``address`` before it is checked,
        if the client has attempts left counting those being checked now."""
        key = client_key(address)
        entries = self._recent(key)
        settled = self._settled(entries)
        if settled >= self.max_failures:
            return Admission(0, settled)
        if len(entries) >= self.max_failures:
            return Admission(0, settled, retry=True)
        ticket = secrets.randbits(52) + 1
        self._store(key, [*entries, [self._clock(), user.lower()[:_USER_CHARS], ticket]])
        return Admission(ticket, len(entries) + 1)

    def fail(self, address: str, ticket: int) -> int:
        """The attempt ``ticket`` failed; return the client's failures in the window."""
        key = client_key(address)
        entries = self._recent(key)
        for entry in entries:
            if entry[2] == ticket:
                entry[2] = 0
                break
        else:  # forgotten meanwhile (memory bound): count it afresh
            entries = [*entries, [self._clock(), "", 0]]
        return self._store(key, entries)

    def succeed(self, address: str, ticket: int, user: str = "") -> None:
        """The attempt ``ticket`` proved ``user``: forget it and ``user``'s failures from
        this client (only those: other names' failures stay counted)."""
        key = client_key(address)
        name = user.lower()[:_USER_CHARS]
        kept = [
            e
            for e in self._recent(key)
            if (e[2] != ticket if e[2] else e[1] != name)  # in flight: another's; else: not its
        ]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)

    def record_failure(self, address: str, user: str = "") -> int:
        """Note one failed authentication as ``user`` from ``address`` (not admitted
        first); return the client's failures within the window."""
        key = client_key(address)
        entry: _Entry = [self._clock(), user.lower()[:_USER_CHARS], 0]
        return self._store(key, [*self._recent(key), entry])

    def record_success(self, address: str, user: str = "") -> None:
        """Forget ``user``'s failures from ``address``'s client after a successful
        authentication."""
        self.succeed(address, 0, user)

    def failure_delay(self, address: str) -> float:
        """Seconds to wait before answering a failure: doubles per recent failure."""
        return self.delay_for(self.failures(address))

    def delay_for(self, failures: int) -> float:
        """The delay for a client with ``failures`` recent failures (0.5 s, doubling,
        at most ``max_delay``)."""
        if failures == 0:
            return 0.0
        return float(min(self.max_delay, 0.5 * 2 ** (failures - 1)))

    def _store(self, key: str, entries: list[_Entry]) -> int:
        # Bound memory per client: only the newest max_failures failures matter, and no
        # more than max_failures attempts are ever in flight.
        pending = [e for e in entries if e[2]]
        settled = [e for e in entries if not e[2]][-self.max_failures :]
        self._failures.pop(key, None)  # re-inserted last: the newest attempt
        self._failures[key] = sorted(settled + pending, key=lambda e: float(e[0]))
        if len(self._failures) > self.max_addresses:
            self._prune()
        return len(settled)  # the client's failures, as kept

    def _prune(self) -> None:
        # One full pass, then room for a tenth more: the pass costs O(n) once per
        # n/10 new clients, not on every failure once the table is full.
        for key in list(self._failures):
            self._recent(key)
        keep = self.max_addresses - max(1, self.max_addresses // 10)
        excess = len(self._failures) - keep
        if excess > 0:
            for key in list(self._failures)[:excess]:
                del self._failures[key]
