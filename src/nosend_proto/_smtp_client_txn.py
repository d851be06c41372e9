"""One SMTP client transaction on the wire: its commands, and its progress.

Owns: turning a :class:`Transaction` and the server's :class:`Extensions` into MAIL and
RCPT lines with the parameters the server offers (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531
SMTPUTF8, RFC 3461 DSN), or into a local refusal before a byte is sent; and the records
the engine keeps per transaction and per reply owed.

Must not: know the conversation's state or send anything (``smtp_client`` does).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from nosend_proto import _smtp_grammar as grammar
from nosend_proto._smtp_client_wire import DotStuffer, LineEnds
from nosend_proto.smtp_client_events import (
    Extensions,
    Recipient,
    RecipientResult,
    Reply,
    Transaction,
)

__all__ = ["Kind", "Txn", "Expect", "Plan", "plan_transaction"]


class Kind(enum.Enum):
    """What a command in flight was, to read its reply."""

    GREETING = "greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    RSET = "RSET"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    BDAT_LAST = "BDAT LAST"
    DOT = "end of data"
    QUIT = "QUIT"


@dataclass(slots=True, eq=False)
class Txn:
    """A transaction in flight (mutable; the engine's own record)."""

    transaction: Transaction
    bdat: bool
    allow_8bit: bool
    dsn_dropped: bool
    # Lock-step: commands not yet sent, each with its kind and recipient index.
    unsent: deque[tuple[Kind, bytes, int]] = field(default_factory=deque)
    mail_accepted: bool = False
    failure: Reply | None = None  # the reply that failed the transaction early
    local_reason: str | None = None
    results: list[RecipientResult] = field(default_factory=list)
    done: bool = False
    line_ends: LineEnds = field(default_factory=LineEnds)
    stuffer: DotStuffer = field(default_factory=DotStuffer)
    pending: bytearray = field(default_factory=bytearray)  # BDAT octets not yet sent


@dataclass(slots=True, eq=False)
class Expect:
    """A reply the server owes, in the order the commands were sent."""

    kind: Kind
    txn: Txn | None = None
    index: int = 0  # the recipient, for RCPT


@dataclass(frozen=True, slots=True)
class Plan:
    """The command lines of a transaction the server can take."""

    mail: bytes
    rcpts: tuple[bytes, ...]
    allow_8bit: bool  # the body may hold octets over 127
    dsn_dropped: bool  # DSN parameters asked for, DSN not offered


def plan_transaction(t: Transaction, ext: Extensions) -> Plan | str:
    """The MAIL and RCPT lines for ``t``, or the reason to refuse it locally."""
    kw = ext.keywords
    if t.size is not None and ext.size and t.size > ext.size:
        return "size"  # RFC 1870 section 6.1: would exceed the fixed maximum
    if t.needs_smtputf8 and "SMTPUTF8" not in kw:
        return "smtputf8"  # RFC 6531 section 3.2: MUST NOT send to a server without it
    if t.eight_bit and "8BITMIME" not in kw:
        return "8bitmime"  # RFC 6152 section 3: refused rather than converted
    params: list[str] = []
    if t.size is not None and ext.size is not None:
        params.append(f"SIZE={t.size}")  # RFC 1870 section 6
    if "8BITMIME" in kw and t.eight_bit is not False:
        params.append("BODY=8BITMIME")  # RFC 6152 section 2
    if t.needs_smtputf8:
        params.append("SMTPUTF8")  # RFC 6531 section 3.4
    dsn = "DSN" in kw
    if dsn:
        # RFC 3461 sections 4.3 (RET) and 4.4 (ENVID, as xtext).
        if t.ret:
            params.append(f"RET={t.ret}")
        if t.envid:
            params.append(f"ENVID={grammar.xtext_encode(t.envid)}")
    wants_dsn = bool(t.ret or t.envid) or any(r.notify or r.orcpt for r in t.recipients)
    mail = f"MAIL FROM:<{t.mail_from}>" + "".join(" " + p for p in params) + "\r\n"
    return Plan(
        mail.encode(),
        tuple(_rcpt_line(r, dsn) for r in t.recipients),
        # RFC 6531 section 3.1: an SMTPUTF8 server supports 8BITMIME too.
        allow_8bit=("8BITMIME" in kw and t.eight_bit is not False) or t.needs_smtputf8,
        dsn_dropped=wants_dsn and not dsn,
    )


def _rcpt_line(rcpt: Recipient, dsn: bool) -> bytes:
    line = f"RCPT TO:<{rcpt.address}>"
    if dsn:
        # RFC 3461 section 4.1 (NOTIFY) and 4.2 (ORCPT=addr-type;xtext).
        if rcpt.notify:
            line += " NOTIFY=" + ",".join(rcpt.notify)
        if rcpt.orcpt:
            line += f" ORCPT={rcpt.orcpt.addr_type};{grammar.xtext_encode(rcpt.orcpt.address)}"
    return line.encode() + b"\r\n"
