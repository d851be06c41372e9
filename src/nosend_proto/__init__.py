"""Sans-IO SMTP and POP3 engines for servers and clients.

Every engine follows one contract (after h11): ``receive_data(bytes)`` takes what arrived
(``b""`` when the peer closed), ``next_event()`` returns the next event or ``NEED_DATA``,
and ``send(event)`` turns the application's answer into bytes to write. Engines do no I/O,
read no clock, start no thread and log nothing; memory per connection is bounded by
configured limits whatever the peer sends.

Errors: the server engines raise only ``LocalProtocolError``, for the application's
mistakes. A peer's mistake is never an exception: it comes out of ``next_event()`` as an
event carrying the reply to send (SMTP ``ProtocolViolation``/``DataRejected``; POP3 answers
with ``-ERR`` itself and ends with ``TooManyErrors``). ``RemoteProtocolError`` is for an
engine that cannot answer its peer and go on (a client that cannot parse a server's
reply); no server engine raises it. Everything else here is a frozen value.
"""

from nosend_proto._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from nosend_proto._sasl import (
    SERVER_MECHANISMS,
    Credentials,
    SaslChallenge,
    SaslClient,
    SaslFailure,
    SaslServer,
    SaslSuccess,
)
from nosend_proto._sentinels import NEED_DATA, Sentinel

__all__ = [
    "NEED_DATA",
    "Sentinel",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "SERVER_MECHANISMS",
    "Credentials",
    "SaslChallenge",
    "SaslClient",
    "SaslFailure",
    "SaslServer",
    "SaslSuccess",
]

# --- SMTP exports (owned by the SMTP engine) ---
# Events live in ``nosend_proto.smtp_events`` (NEED_DATA, StartTLS, ConnectionClosed and
# AuthAttempt also exist for POP3, so only SMTP-only names come here).
from nosend_proto import received, smtp_events, smtp_state  # noqa: E402
from nosend_proto.received import protocol_name, received_header  # noqa: E402
from nosend_proto.smtp_events import Reply  # noqa: E402
from nosend_proto.smtp_state import ServerConnection as SMTPServerConnection  # noqa: E402
from nosend_proto.smtp_state import SMTPServerConfig, SMTPState  # noqa: E402

__all__ += [
    "received",
    "smtp_events",
    "smtp_state",
    "protocol_name",
    "received_header",
    "Reply",
    "SMTPServerConfig",
    "SMTPServerConnection",
    "SMTPState",
]
# --- end SMTP exports ---

# --- POP3 exports (owned by the POP3 engine) ---
# Event and answer classes live in ``nosend_proto.pop3_events`` (names such as NEED_DATA,
# StartTLS and ConnectionClosed also exist for SMTP, so only POP3-only names come here).
from nosend_proto import pop3_events, pop3_state  # noqa: E402
from nosend_proto.pop3_events import MessageInfo, POP3ServerConfig  # noqa: E402
from nosend_proto.pop3_state import POP3State, WireSizeCounter, wire_size  # noqa: E402
from nosend_proto.pop3_state import ServerConnection as POP3ServerConnection  # noqa: E402

__all__ += [
    "pop3_events",
    "pop3_state",
    "MessageInfo",
    "POP3ServerConfig",
    "POP3ServerConnection",
    "POP3State",
    "WireSizeCounter",
    "wire_size",
]
# --- end POP3 exports ---
