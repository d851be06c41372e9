"""Who a message fetched from a multi-drop mailbox is for, and whether it is looping.

Owns: reading the envelope recipients a provider wrote into the header of a message
fetched from a mailbox that collects mail for a whole domain, and the loop marker that
stops a message which nosend fetched, forwarded and fetched again from going round for
ever. Must not: fetch, deliver or resolve addresses to mailboxes (the caller passes a
``is_local`` test).

The order, like fetchmail's ``envelope`` option but with several headers tried in turn:

1. the envelope headers providers write: ``Delivered-To``, ``X-Original-To``,
   ``Envelope-To``, ``X-Envelope-To`` -- the first of these names that holds any address
   in a local domain wins, and all its local addresses are used;
2. else the ``To`` and ``Cc`` addresses in local domains (a guess: Bcc recipients and
   list mail are missed, which is why the envelope headers come first);
3. else none, and the caller delivers to the account's fallback mailbox.

Loops: each delivery of fetched mail adds ``X-Nosend-Loop: <hostname>``. A message that
already carries :data:`MAX_LOOPS` of ours is not delivered to its recipients again; the
caller hands it to the fallback mailbox with a log line, so nothing is lost.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
from collections.abc import Callable, Iterable

__all__ = ["ENVELOPE_HEADERS", "LOOP_HEADER", "MAX_LOOPS", "recipients_from_header",
           "loop_count", "loop_header"]

ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
LOOP_HEADER = "X-Nosend-Loop"
#: A few passes are legitimate (a crew member redirects a fetched mail to another
#: account the yacht also fetches); an endless one is not.
MAX_LOOPS = 3


def _parse(header: bytes) -> email.message.Message:
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header)


def _addresses(values: Iterable[str]) -> list[str]:
    found = []
    for _, address in email.utils.getaddresses([str(v) for v in values]):
        address = address.strip()
        if "@" in address and address not in found:
            found.append(address)
    return found


def recipients_from_header(header: bytes, is_local: Callable[[str], bool]) -> list[str]:
    """The local recipients named in ``header`` (the message's header block), by the
    order in the module docstring; empty when there are none."""
    message = _parse(header)
    for name in ENVELOPE_HEADERS:
        local = [a for a in _addresses(message.get_all(name, [])) if is_local(a)]
        if local:
            return local
    visible = message.get_all("To", []) + message.get_all("Cc", [])
    return [a for a in _addresses(visible) if is_local(a)]


def loop_count(header: bytes, hostname: str) -> int:
    """How many of our own loop markers ``header`` carries."""
    values = _parse(header).get_all(LOOP_HEADER, [])
    return sum(1 for v in values if str(v).strip().lower() == hostname.lower())


def loop_header(hostname: str) -> bytes:
    """The marker line to put at the top of a fetched message before delivering it."""
    return f"{LOOP_HEADER}: {hostname}\r\n".encode("ascii", "replace")
