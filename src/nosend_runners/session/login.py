"""Checking one set of credentials, for every session that takes a login.

Owns: the sequence SMTP AUTH and POP3 USER/PASS, APOP and AUTH share: refuse a digest
the backend cannot verify (not a guess: clients such as smtplib try CRAM-MD5 first),
count the attempt with the server-wide tracker before checking it (refusing, without
checking, a client that used up its attempts: the count and the check are one step, so
guesses sent in parallel are counted before any of them is checked), have the backend
check the password in a hashing thread, and on a failure wait (RFC 4954 section 4 and
RFC 1939 leave rate limiting to the server: make guessing slow) and log it. A success
clears only the failures of the user name proved. This guard holds for every backend.
Must not: speak either protocol (each session turns a :class:`LoginCheck` into its own
reply) or decide whose credentials are good (the backend does,
:class:`nosend_runners.session.backend.Authenticator`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from nosend_proto import Credentials
from nosend_runners.session.backend import Authenticator
from nosend_runners.session.boundary import SessionContext

__all__ = ["LoginCheck", "check_login"]

#: Seconds between asks while the client's other attempts are being checked.
ADMISSION_RETRY = 0.05


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
    ctx: SessionContext,
    backend: Authenticator,
    credentials: Credentials,
    pause: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> LoginCheck:
    """Check ``credentials`` with ``backend`` for the session's peer, with the lockout,
    the delay (``pause(seconds)``: the session's, which ends early when the client
    leaves) and the log lines."""
    tracker = ctx.auth_failures
    address = ctx.peer.address
    user, mechanism = credentials.username, credentials.mechanism
    if not backend.can_verify(credentials):
        if tracker.blocked(address):
            ctx.log.warning("auth_locked_out", user=user, mechanism=mechanism)
            return LoginCheck(None, locked_out=True)
        ctx.log.event(
            "auth_failed",
            user=user,
            mechanism=mechanism,
            reason="no shared secret for this mechanism",
        )
        return LoginCheck(None, unverifiable=True)
    while True:
        admission = tracker.admit(address, user)
        if admission.admitted or not admission.retry:
            break
        # Only attempts in flight fill the budget: their outcome decides this one.
        await anyio.sleep(ADMISSION_RETRY)
    if not admission.admitted:
        ctx.log.warning("auth_locked_out", user=user, mechanism=mechanism)
        return LoginCheck(None, locked_out=True)
    ticket = admission.ticket
    name: str | None = None
    try:
        name = await ctx.run_cpu_bound(backend.authenticate, credentials)
    finally:
        if name is None:
            # Also when the session is cancelled during the check: the guess was made.
            failures = tracker.fail(address, ticket)
    if name is None:
        await pause(tracker.delay_for(failures))
        ctx.log.warning("auth_failed", user=user, mechanism=mechanism, failures=failures)
        now_locked = failures >= tracker.max_failures
        if now_locked:
            ctx.log.warning("auth_locked_out", user=user)
        return LoginCheck(None, now_locked=now_locked)
    tracker.succeed(address, ticket, user)
    return LoginCheck(name)
