"""Checking one set of credentials, for every session that takes a login.

Owns: the sequence SMTP AUTH and POP3 USER/PASS, APOP and AUTH share: refuse an address
that used up its attempts without checking, refuse a digest the backend cannot verify
(not a guess: clients such as smtplib try CRAM-MD5 first), have the backend check the
password in a hashing thread, and on a failure count it, wait (RFC 4954 section 4 and
RFC 1939 leave rate limiting to the server: make guessing slow) and log it. This guard
holds for every backend. Must not: speak either protocol (each session turns a
:class:`LoginCheck` into its own reply) or decide whose credentials are good (the backend
does, :class:`nosend_runners.session.backend.Authenticator`).
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from nosend_proto import Credentials
from nosend_runners.session.backend import Authenticator
from nosend_runners.session.boundary import SessionContext

__all__ = ["LoginCheck", "check_login"]


@dataclass(frozen=True, slots=True)
class LoginCheck:
    """The outcome of one credential check.

    ``name`` is the mailbox proved, or ``None``. When ``None``: ``locked_out`` says the
    address had no attempts left and nothing was checked; ``unverifiable`` that no secret
    could check the digest (not counted); ``now_locked`` that this failure used up the
    address's attempts.
    """

    name: str | None
    locked_out: bool = False
    unverifiable: bool = False
    now_locked: bool = False


async def check_login(
    ctx: SessionContext, backend: Authenticator, credentials: Credentials
) -> LoginCheck:
    """Check ``credentials`` with ``backend`` for the session's peer, with the lockout,
    the delay and the log lines."""
    tracker = ctx.auth_failures
    address = ctx.peer.address
    user, mechanism = credentials.username, credentials.mechanism
    if tracker.blocked(address):
        ctx.log.warning("auth_locked_out", user=user, mechanism=mechanism)
        return LoginCheck(None, locked_out=True)
    if not backend.can_verify(credentials):
        ctx.log.event(
            "auth_failed",
            user=user,
            mechanism=mechanism,
            reason="no shared secret for this mechanism",
        )
        return LoginCheck(None, unverifiable=True)
    name = await ctx.run_cpu_bound(backend.authenticate, credentials)
    if name is None:
        failures = tracker.record_failure(address)
        await anyio.sleep(tracker.delay_for(failures))
        ctx.log.warning("auth_failed", user=user, mechanism=mechanism, failures=failures)
        now_locked = failures >= tracker.max_failures
        if now_locked:
            ctx.log.warning("auth_locked_out", user=user)
        return LoginCheck(None, now_locked=now_locked)
    tracker.record_success(address)
    return LoginCheck(name)
