"""Is the link up? A TCP connection to the probe target that answers with a banner line.

Owns: :func:`probe` (one attempt: connect, read the first line, close) and
:func:`wait_for_probe` (attempts until one answers or the time allowed runs out, which
is what a cycle does right after ``up``: a PPP link may take seconds to route after
``pon`` returned). Both time what they did, for the log and the progress line.

Why a banner and not ICMP: satellite gateways and hotspots drop ping, and a ping says
nothing about whether the smarthost is reachable. A banner proves what the cycle needs:
name resolution, a route, and a server speaking over it. Any line counts -- even a
``554`` greeting shows the link carries traffic; whether the server will take our mail
is the exchange's business.

Must not: run outside a cycle (a periodic probe costs airtime and keeps a demand-dialled
link from ever going idle), send anything to the server (a QUIT would cost a round
trip), or keep the connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from nosend_link.plan import Endpoint

__all__ = ["ATTEMPT_TIMEOUT", "BANNER_LIMIT", "RETRY_INTERVAL", "ProbeResult", "probe",
           "wait_for_probe"]

#: The most one attempt may take: a geostationary hop costs over a second per round
#: trip, and DNS, SYN and banner are three of them at the least.
ATTEMPT_TIMEOUT = 30.0
#: The pause between attempts: long enough not to hammer a route coming up.
RETRY_INTERVAL = 3.0
#: The longest banner read; a longer first line still counts as an answer.
BANNER_LIMIT = 512


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of probing ``endpoint``.

    ``connect_seconds``: time to the TCP connection (None if none was made);
    ``banner_seconds``: from the connection to the banner line (None if none came);
    ``attempts``: how many connections were tried (by :func:`wait_for_probe`).
    """

    endpoint: Endpoint
    ok: bool
    banner: str = ""
    connect_seconds: float | None = None
    banner_seconds: float | None = None
    error: str | None = None
    attempts: int = 1

    def describe(self) -> str:
        """One line for the log."""
        if self.ok:
            return f"probe {self.endpoint}: {self.banner!r}"
        return f"probe {self.endpoint}: {self.error}"


async def probe(
    endpoint: Endpoint,
    *,
    timeout: float = ATTEMPT_TIMEOUT,
    monotonic: Callable[[], float] = time.monotonic,
) -> ProbeResult:
    """One attempt: connect to ``endpoint`` and read a line within ``timeout`` seconds."""
    start = monotonic()
    connected: float | None = None
    buffer = b""
    try:
        with anyio.fail_after(timeout):
            async with await anyio.connect_tcp(endpoint.host, endpoint.port) as stream:
                connected = monotonic()
                while b"\n" not in buffer and len(buffer) < BANNER_LIMIT:
                    try:
                        buffer += await stream.receive(BANNER_LIMIT - len(buffer))
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
    except TimeoutError:
        what = "no connection" if connected is None else "no banner"
        return _failed(endpoint, start, connected, monotonic,
                       f"{what} within {timeout:g} s")
    except OSError as exc:  # refused, unreachable, name not resolved
        return _failed(endpoint, start, connected, monotonic,
                       f"cannot connect: {exc.strerror or exc}")
    if not buffer:
        return _failed(endpoint, start, connected, monotonic, "closed without a banner")
    line = buffer.split(b"\n", 1)[0].rstrip(b"\r")
    assert connected is not None  # bytes only come over a connection
    return ProbeResult(
        endpoint,
        True,
        banner=line.decode("utf-8", "replace"),
        connect_seconds=connected - start,
        banner_seconds=monotonic() - connected,
    )


def _failed(
    endpoint: Endpoint,
    start: float,
    connected: float | None,
    monotonic: Callable[[], float],
    error: str,
) -> ProbeResult:
    return ProbeResult(
        endpoint,
        False,
        connect_seconds=None if connected is None else connected - start,
        error=error,
    )


async def wait_for_probe(
    endpoint: Endpoint,
    *,
    within: float,
    interval: float = RETRY_INTERVAL,
    attempt_timeout: float = ATTEMPT_TIMEOUT,
    monotonic: Callable[[], float] = time.monotonic,
) -> ProbeResult:
    """Probe until an attempt answers or ``within`` seconds have passed.

    Returns the answering attempt, or the last failed one; ``attempts`` counts them all.
    No attempt starts or runs past the deadline.
    """
    deadline = monotonic() + within
    attempts = 0
    while True:
        attempts += 1
        remaining = max(deadline - monotonic(), 0.001)
        result = await probe(endpoint, timeout=min(attempt_timeout, remaining),
                             monotonic=monotonic)
        if result.ok or monotonic() + interval >= deadline:
            return ProbeResult(
                result.endpoint, result.ok, result.banner, result.connect_seconds,
                result.banner_seconds, result.error, attempts,
            )
        await anyio.sleep(interval)
