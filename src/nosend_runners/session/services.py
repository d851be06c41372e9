"""Where each service's session comes from: the one place sessions plug into runners.

Owns: mapping a service name (``smtp``, ``submission``, ``smtps``, ``pop3``, ``pop3s``)
to its session coroutine: nosend's SMTP and POP3 sessions bound to nosend's own mail
backend (:mod:`nosend_runners.mail.backend`), or, asked for by name, the echo session of
the testing package. Must not: hold policy; the sessions live in their own modules and
are imported here lazily, so a runner starts even while a session module has a problem
and the error names that module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from nosend_runners.session.boundary import SERVICES, SessionFunc

__all__ = [
    "SessionsUnavailable",
    "SESSION_ENTRY_POINTS",
    "session_factory",
    "FACTORIES",
]

#: service -> (module, coroutine name). The SMTP session serves port 25 relay/delivery,
#: submission (RFC 6409) and SMTPS (RFC 8314); it reads ``ctx.service`` to tell them
#: apart. The POP3 session serves POP3 and POP3S the same way.
SESSION_ENTRY_POINTS: dict[str, tuple[str, str]] = {
    "smtp": ("nosend_runners.mail.backend", "run_smtp"),
    "submission": ("nosend_runners.mail.backend", "run_smtp"),
    "smtps": ("nosend_runners.mail.backend", "run_smtp"),
    "pop3": ("nosend_runners.mail.backend", "run_pop3"),
    "pop3s": ("nosend_runners.mail.backend", "run_pop3"),
}


class SessionsUnavailable(Exception):
    """The session module for a service cannot be imported; the message names it."""


def session_factory(service: str) -> SessionFunc:
    """Return the session coroutine for ``service``, or raise ``SessionsUnavailable``."""
    if service not in SESSION_ENTRY_POINTS:
        raise SessionsUnavailable(f"unknown service {service!r}; expected one of {SERVICES}")
    module_name, attribute = SESSION_ENTRY_POINTS[service]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise SessionsUnavailable(
            f"the {service} session ({module_name}) is not installed in this build; "
            "`nosend serve --session echo` runs the transport test session instead"
        ) from None
    run: SessionFunc = getattr(module, attribute)
    return run


def _echo_from_testing(service: str) -> SessionFunc:
    """The line-echo transport test session, reached only through the testing package
    (imported when asked for by name, never by a mail path)."""
    from nosend_runners.testing.echo import echo_session_factory  # noqa: PLC0415

    return echo_session_factory(service)


#: The session factories ``nosend serve --session`` can choose from.
FACTORIES: dict[str, Callable[[str], SessionFunc]] = {
    "mail": session_factory,
    "echo": _echo_from_testing,
}
