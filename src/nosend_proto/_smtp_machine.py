"""The SMTP server's state machine, whole: its states, the replies it owes, every move.

Owns (after h11's ``_state.py``, whose rule it follows: everything that changes the state
lives here): the states, which command verbs each state refuses, the reply each event asks
for, and three tables that give the next state. ``ServerConnection`` (in ``smtp_state``)
consults them and never picks a state itself; its reply handlers keep only side effects
(forgetting a transaction, dropping input after STARTTLS, ...).

Must not: parse, render, hold a connection's data or import the engine.

The conversation (RFC 5321 sections 3 and 4.1.4; RFC 3030, 3207, 4954), read as: in this
state, this event, then the application's reply (``2xx/3xx`` positive, ``4xx/5xx``
refused) moves to::

    GREETING    the greeting       220 -> CONNECTED     554 -> REFUSED (RFC 5321 3.1)
    REFUSED     Quit               221 -> CLOSED        every other command: 503, stays
    CONNECTED   Hello              250 -> READY         (refused: stays)
    READY       MailFrom           250 -> MAIL
    MAIL, RCPT  RcptTo             250 -> RCPT
    RCPT        DataStart          354 -> DATA
    DATA        EndOfData          any -> READY         (DataRejected: READY too)
    any cmd     BDAT command, no reply  -> BDAT          (its octets are read first)
    BDAT        octets read, accepted   -> RCPT, then BdatChunkEnd 250 -> RCPT, refused
                                           -> READY (RFC 3030 2); or EndOfData/DataRejected
                                           -> READY
    BDAT        octets read, refused    -> back to the state BDAT was read in, then its 5xx
    CONN, READY StartTLS           220 -> TLS_PENDING, then start_tls_done() -> CONNECTED
    READY       AuthChallenge      334 -> AUTH          (refused: READY)
    AUTH        AuthChallenge      334 -> AUTH          the client's last line -> READY
    READY       AuthAttempt        any -> READY
    any cmd     Reset              any -> READY (CONNECTED before a Hello)
    any cmd     Hello              250 -> READY
    any cmd     Quit               221 -> CLOSED
    any         a ProtocolViolation with ``close``, any 421, the peer's EOF -> CLOSED

``SEQUENCE`` is the first column for commands, ``REPLIES`` the rest for replies,
``INPUTS`` the moves the engine makes by itself when input completes something. Two rules
hold in every state and are not repeated in the tables: a 421 reply closes (RFC 5321
section 3.8), and so does the peer's end of input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "SMTPState",
    "OwedReply",
    "Owed",
    "Input",
    "RESUME",
    "COMMAND_STATES",
    "PIPELINE_STATES",
    "LINE_STATES",
    "SEQUENCE",
    "REFUSED_SERVES",
    "NOT_IMPLEMENTED",
    "REPLIES",
    "INPUTS",
]


class SMTPState(enum.Enum):
    """Where the conversation stands (see the table in ``nosend_proto._smtp_machine``)."""

    GREETING = "greeting"  # the application has not sent its 220 yet
    REFUSED = "refused"  # greeted with 554: only QUIT is served (RFC 5321 section 3.1)
    CONNECTED = "connected"  # greeted, no successful HELO/EHLO yet
    READY = "ready"  # HELO/EHLO done, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # reading a DATA body after 354
    BDAT = "bdat"  # reading the octets of one BDAT chunk
    AUTH = "auth"  # waiting for a SASL response line after 334
    TLS_PENDING = "tls-pending"  # 220 sent to STARTTLS; waiting for start_tls_done()
    CLOSED = "closed"

    # Enum's own __hash__ is Python code (it hashes the member's name), so every set or
    # dict lookup keyed by a state cost a Python call. Members are singletons compared by
    # identity, so identity hashing is equivalent, and it runs in C.
    __hash__ = object.__hash__


GREETING = SMTPState.GREETING
REFUSED = SMTPState.REFUSED
CONNECTED = SMTPState.CONNECTED
READY = SMTPState.READY
MAIL = SMTPState.MAIL
RCPT = SMTPState.RCPT
DATA = SMTPState.DATA
BDAT = SMTPState.BDAT
AUTH = SMTPState.AUTH
TLS_PENDING = SMTPState.TLS_PENDING
CLOSED = SMTPState.CLOSED

#: States that read command lines and serve the whole command set.
COMMAND_STATES: frozenset[SMTPState] = frozenset({CONNECTED, READY, MAIL, RCPT})
#: Where further complete commands may already wait in the input (RFC 2920 section 3.1).
PIPELINE_STATES: frozenset[SMTPState] = COMMAND_STATES | {REFUSED}
#: Where ``next_event()`` reads a line: a command, or a SASL response.
LINE_STATES: frozenset[SMTPState] = PIPELINE_STATES | {AUTH}


@dataclass(frozen=True, slots=True, eq=False)
class OwedReply:
    """What the reply the application owes answers (with the state, it decides the move).

    ``positive``: the positive codes it admits (RFC 5321 section 4.3.2; 4xx and 5xx are
    always admitted except for QUIT, and a 421 always closes). The RFC 3463 codes the
    engine adds when the application gives none: ``success`` on a 2xx, ``class.failure``
    on a 4xx/5xx, none at all when ``enhanced`` is false. Compared and hashed by identity
    (``eq=False``), since one is looked up on every reply.
    """

    value: str  # what the reply answers, for error messages
    positive: frozenset[int]
    enhanced: bool = True
    success: str = "2.0.0"
    failure: str = "0.0"


class Owed:
    """The owed replies, one per kind of event that asks for one."""

    # RFC 2034 section 3: no enhanced status code on the greeting or a reply to HELO/EHLO.
    GREETING = OwedReply("greeting", frozenset({220}), enhanced=False)
    HELLO = OwedReply("HELO/EHLO", frozenset({250}), enhanced=False)
    # RFC 3463 section 3.2: X.1.0 other address status, X.1.5 destination address valid.
    MAIL = OwedReply("MAIL", frozenset({250}), success="2.1.0")
    RCPT = OwedReply("RCPT", frozenset({250, 251}), success="2.1.5")
    DATA = OwedReply("DATA", frozenset({354}))
    END_DATA = OwedReply("end of data", frozenset({250}))
    BDAT_CHUNK = OwedReply("BDAT chunk", frozenset({250}))
    RSET = OwedReply("RSET", frozenset({250}))
    NOOP = OwedReply("NOOP", frozenset({250}))
    VRFY = OwedReply("VRFY", frozenset({250, 251, 252}))
    HELP = OwedReply("HELP", frozenset({211, 214}))
    # RFC 3207 section 4: 454 4.7.0 TLS not available.
    STARTTLS = OwedReply("STARTTLS", frozenset({220}), failure="7.0")
    AUTH_CHALLENGE = OwedReply("AUTH challenge", frozenset({334}))
    # RFC 4954 section 6: 235 2.7.0, failures X.7.0 (and 535 5.7.8, see the engine).
    AUTH_ATTEMPT = OwedReply("AUTH", frozenset({235}), success="2.7.0", failure="7.0")
    QUIT = OwedReply("QUIT", frozenset({221}))
    VIOLATION = OwedReply("protocol violation", frozenset())
    HELLO_VIOLATION = OwedReply("HELO/EHLO syntax error", frozenset(), enhanced=False)
    FATAL = OwedReply("protocol violation that closes", frozenset())
    REJECTED = OwedReply("rejected data", frozenset())


# -- commands --------------------------------------------------------------------------

#: The verbs and the command states that refuse them with 503 (RFC 5321 sections 4.1.4
#: and 3.3; RFC 3030; RFC 3207; RFC 4954): verb -> {state: the 503 text}. A verb is
#: accepted in every command state its row does not name. (The engine answers DATA and
#: BDAT in MAIL with 554 instead when every RCPT was refused, RFC 5321 section 3.3, and
#: reads and drops a refused BDAT's octets first, RFC 3030 section 2.)
SEQUENCE: dict[str, dict[SMTPState, str]] = {
    "HELO": {},
    "EHLO": {},
    "MAIL": {
        CONNECTED: "Send HELO or EHLO first",
        MAIL: "Nested MAIL command",
        RCPT: "Nested MAIL command",
    },
    "RCPT": {
        CONNECTED: "Need MAIL before RCPT",
        READY: "Need MAIL before RCPT",
    },
    "DATA": {
        CONNECTED: "Need MAIL before DATA",
        READY: "Need MAIL before DATA",
        MAIL: "Need RCPT before DATA",
    },
    "BDAT": {
        CONNECTED: "Need MAIL before BDAT",
        READY: "Need MAIL before BDAT",
        MAIL: "Need RCPT before BDAT",
    },
    "RSET": {},
    "NOOP": {},
    "VRFY": {},
    "HELP": {},
    "QUIT": {},
    "STARTTLS": {
        MAIL: "STARTTLS not allowed during a mail transaction",
        RCPT: "STARTTLS not allowed during a mail transaction",
    },
    "AUTH": {
        CONNECTED: "Send EHLO first",
        MAIL: "AUTH not allowed during a mail transaction",
        RCPT: "AUTH not allowed during a mail transaction",
    },
}

#: RFC 5321 section 3.1: after a 554 greeting (state REFUSED) only these are served; any
#: other line, known verb or not, gets 503.
REFUSED_SERVES: frozenset[str] = frozenset({"QUIT"})

#: RFC 5321 section 4.2.4: known but not implemented is 502 (unknown is 500).
NOT_IMPLEMENTED: frozenset[str] = frozenset(
    {"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML"}
)


# -- replies ---------------------------------------------------------------------------

_SAME = "same"  # in the rows below: the reply leaves the state as it was

_ReplyRow = tuple[OwedReply, tuple[SMTPState, ...], SMTPState | str | None, SMTPState | str | None]

# owed reply, the states it can be owed in, next state after a positive reply, after a
# refusal. None: that outcome cannot happen (no positive code, or QUIT refused: only 221
# or 421 answer it) and send() refuses it as the application's error.
_REPLY_ROWS: tuple[_ReplyRow, ...] = (
    (Owed.GREETING, (GREETING,), CONNECTED, REFUSED),
    (Owed.HELLO, (CONNECTED, READY, MAIL, RCPT), READY, _SAME),
    (Owed.HELLO_VIOLATION, (CONNECTED, READY, MAIL, RCPT), None, _SAME),
    (Owed.MAIL, (READY,), MAIL, _SAME),
    (Owed.RCPT, (MAIL, RCPT), RCPT, _SAME),
    (Owed.DATA, (RCPT,), DATA, _SAME),
    # The end of a body (DATA, or BDAT LAST: back in RCPT once its octets are read):
    # whatever the verdict, the transaction is over.
    (Owed.END_DATA, (DATA, RCPT), READY, READY),
    (Owed.REJECTED, (DATA, RCPT), None, READY),
    # RFC 3030 section 2: a refused chunk fails the transaction.
    (Owed.BDAT_CHUNK, (RCPT,), RCPT, READY),
    # RSET forgets the transaction, but not the greeting (RFC 5321 section 4.1.1.5).
    (Owed.RSET, (CONNECTED,), CONNECTED, CONNECTED),
    (Owed.RSET, (READY, MAIL, RCPT), READY, READY),
    (Owed.NOOP, (CONNECTED, READY, MAIL, RCPT), _SAME, _SAME),
    (Owed.VRFY, (CONNECTED, READY, MAIL, RCPT), _SAME, _SAME),
    (Owed.HELP, (CONNECTED, READY, MAIL, RCPT), _SAME, _SAME),
    (Owed.STARTTLS, (CONNECTED, READY), TLS_PENDING, _SAME),
    # RFC 4954 section 4: a refused challenge ends the exchange.
    (Owed.AUTH_CHALLENGE, (READY, AUTH), AUTH, READY),
    (Owed.AUTH_ATTEMPT, (READY,), READY, READY),
    (Owed.QUIT, (REFUSED, CONNECTED, READY, MAIL, RCPT), CLOSED, None),
    (Owed.VIOLATION, (REFUSED, CONNECTED, READY, MAIL, RCPT), None, _SAME),
    (Owed.FATAL, (REFUSED, CONNECTED, READY, MAIL, RCPT), None, CLOSED),
)


def _reply_table(rows: tuple[_ReplyRow, ...]) -> dict[tuple[SMTPState, OwedReply, bool], SMTPState]:
    table: dict[tuple[SMTPState, OwedReply, bool], SMTPState] = {}
    for owed, states, positive, refused in rows:
        for state in states:
            for outcome, target in ((True, positive), (False, refused)):
                if target is None:
                    continue
                key = (state, owed, outcome)
                if key in table:
                    raise AssertionError(f"two rows for {key}")
                table[key] = target if isinstance(target, SMTPState) else state
    return table


#: (state, owed reply, positive?) -> the state after the application's reply. A pair
#: absent from the table cannot occur: the engine never owes that reply in that state.
REPLIES: dict[tuple[SMTPState, OwedReply, bool], SMTPState] = _reply_table(_REPLY_ROWS)


# -- moves on input --------------------------------------------------------------------


class Input(enum.Enum):
    """What the engine completes by itself from the peer's input (or the runner's call)."""

    BDAT_COMMAND = "a BDAT command was read (RFC 3030 section 2: its octets come next)"
    CHUNK_ACCEPTED = "the octets of an accepted BDAT chunk were read"
    CHUNK_REFUSED = "the octets of a refused BDAT chunk were read and dropped"
    SASL_ENDED = "the client's line ended the SASL exchange (success, failure or cancel)"
    TLS_DONE = "the runner's start_tls_done() after the handshake (RFC 3207 section 4.2)"

    __hash__ = object.__hash__


class _Resume:
    """Type of ``RESUME``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "RESUME"


#: In ``INPUTS``: back to the command state the BDAT command was read in (a refused
#: chunk changes nothing; its 502, 503 or 554 follows there).
RESUME = _Resume()

#: (state, input) -> the next state.
INPUTS: dict[tuple[SMTPState, Input], SMTPState | _Resume] = {
    **{(state, Input.BDAT_COMMAND): BDAT for state in COMMAND_STATES},
    (BDAT, Input.CHUNK_ACCEPTED): RCPT,
    (BDAT, Input.CHUNK_REFUSED): RESUME,
    # An AUTH command whose initial response settles the exchange stays in READY.
    (READY, Input.SASL_ENDED): READY,
    (AUTH, Input.SASL_ENDED): READY,
    (TLS_PENDING, Input.TLS_DONE): CONNECTED,
}
