"""The replies that never change, written once for every session and runner.

Owns: the refusals a runner or session sends instead of a greeting (too many
connections, no usable configuration), the goodbyes on a timeout or a graceful shutdown,
and the fixed SMTP replies the SMTP session and the mail backend both send. Made (and
validated) once at import rather than per command. Must not: hold replies that depend on
what the client said; those are built where the decision is made.

Wording is shared across protocols where the condition is the same: a shutdown is
"server shutting down, try again later" and a lockout "too many failed logins, try again
later" whether the client speaks SMTP or POP3.
"""

from __future__ import annotations

from nosend_proto import Reply

__all__ = [
    "is_pop3",
    "refusal",
    "smtp_timeout",
    "smtp_shutdown",
    "smtp_flooded",
    "POP3_FLOODED",
    "POP3_TOO_MANY_ERRORS",
    "POP3_TIMEOUT",
    "POP3_SHUTDOWN",
    "LOCKED_OUT_TEXT",
    "LOCAL_ERROR",
    "GO_AHEAD",
    "RESET_OK",
    "CANNOT_VRFY",
    "OK",
    "HELP",
    "NO_TLS",
    "TLS_READY",
    "SENDER_OK",
    "HEADER_TOO_LARGE",
    "AUTH_INVALID",
    "AUTH_OK",
    "AUTH_LOCKED_OUT",
]

_SHUTTING_DOWN = "server shutting down, try again later"
_UNAVAILABLE = "service not available, try again later"
_BUSY = "too many connections, try again later"
#: Why a login was refused without checking it: the peer used up its attempts.
LOCKED_OUT_TEXT = "too many failed logins, try again later"


def is_pop3(service: str) -> bool:
    """Whether ``service`` speaks POP3 (else SMTP)."""
    return service.startswith("pop3")


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


_REFUSALS = {
    # SMTP allows a 421 in place of the 220 greeting (RFC 5321 section 3.1), POP3 an
    # -ERR greeting; RFC 3463 4.7.0 / 4.3.0 and RFC 3206 SYS/TEMP say "try later".
    (False, "busy"): f"421 4.7.0 {_capital(_BUSY)}\r\n".encode(),
    (False, "unavailable"): f"421 4.3.0 {_capital(_UNAVAILABLE)}\r\n".encode(),
    (True, "busy"): f"-ERR [SYS/TEMP] {_BUSY}\r\n".encode(),
    (True, "unavailable"): f"-ERR [SYS/TEMP] {_UNAVAILABLE}\r\n".encode(),
}


def refusal(service: str, reason: str) -> bytes:
    """A refusal sent before (instead of) a greeting, then the connection closes.

    ``reason`` is ``"busy"`` (connection limits) or ``"unavailable"`` (no usable
    configuration); anything else counts as ``"unavailable"``.
    """
    key = "busy" if reason == "busy" else "unavailable"
    return _REFUSALS[is_pop3(service), key]


def smtp_timeout(hostname: str) -> Reply:
    """The 421 after the command or data-block timeout (RFC 5321 section 4.5.3.2)."""
    return Reply(421, f"{hostname} Timeout, closing", "4.4.2")


def smtp_shutdown(hostname: str) -> Reply:
    """The 421 to an idle client when the server stops (RFC 5321 section 3.8)."""
    return Reply(421, f"{hostname} {_capital(_SHUTTING_DOWN)}", "4.3.2")


def smtp_flooded(hostname: str) -> Reply:
    """The 421 to a client that sent more than a session reads without answering (an
    endless line, a body far past the size limit); RFC 5321 section 3.8 allows it."""
    return Reply(421, f"{hostname} Too much input without a line end, closing", "4.7.0")


#: POP3's goodbye to a client that sent more than a session reads without answering.
POP3_FLOODED = b"-ERR too much input without a line end, closing\r\n"
#: POP3's goodbye after the engine's answer to the last of too many bad commands.
POP3_TOO_MANY_ERRORS = b"-ERR too many errors, closing\r\n"

#: POP3's goodbye when the autologout timer expires (RFC 1939 section 3: no UPDATE).
POP3_TIMEOUT = b"-ERR [SYS/TEMP] autologout timer expired, closing\r\n"
#: POP3's goodbye to an idle client when the server stops (no UPDATE either).
POP3_SHUTDOWN = f"-ERR [SYS/TEMP] {_SHUTTING_DOWN}\r\n".encode()

# SMTP replies of the session and of the mail backend.
LOCAL_ERROR = Reply(451, "Local error in processing, try again later", "4.3.0")
GO_AHEAD = Reply(354, "End data with <CR><LF>.<CR><LF>")
RESET_OK = Reply(250, "Reset OK")
CANNOT_VRFY = Reply(252, "Cannot VRFY user, but will accept message and attempt delivery")
OK = Reply(250, "OK")
HELP = Reply(214, "See RFC 5321")
NO_TLS = Reply(454, "TLS not available", "4.7.0")
TLS_READY = Reply(220, "Ready to start TLS")
SENDER_OK = Reply(250, "Sender OK")
HEADER_TOO_LARGE = Reply(552, "Message header too large", "5.3.4")
AUTH_INVALID = Reply(535, "Authentication credentials invalid", "5.7.8")
AUTH_OK = Reply(235, "Authentication successful")
AUTH_LOCKED_OUT = Reply(421, _capital(LOCKED_OUT_TEXT), "4.7.0")
