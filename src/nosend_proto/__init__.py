"""Sans-IO SMTP and POP3 engines for servers and clients.

Every engine follows one contract (after h11): ``receive_data(bytes)`` takes what arrived
(``b""`` when the peer closed), ``next_event()`` returns the next event or ``NEED_DATA``,
and ``send(event)`` turns the application's answer into bytes to write. Engines do no I/O,
read no clock, start no thread and log nothing; memory per connection is bounded by
configured limits whatever the peer sends. Read the state machines first: SMTP's is one
table in ``_smtp_machine`` (its states are :class:`SMTPState`), POP3's is the
``COMMANDS``/``ANSWERS`` tables of :mod:`nosend_proto.pop3_state`.

Errors: the server engines raise only ``LocalProtocolError``, for the application's
mistakes. A peer's mistake is never an exception: it comes out of ``next_event()`` as an
event carrying the reply to send (SMTP ``ProtocolViolation``/``DataRejected``; POP3 answers
with ``-ERR`` itself and ends with ``TooManyErrors``). ``RemoteProtocolError`` is for an
engine that cannot answer its peer and go on (a client that cannot parse a server's
reply); no server engine raises it. Everything else here is a frozen value.

The public surface, importable from here (``from nosend_proto import
SMTPServerConnection, MailFrom, Reply``): the connections, their configurations and
states, the events and answers, the errors, the SASL framing, the trace header, and two
helpers a runner may need (``ReceiveBuffer``/``OVERLONG`` for a line protocol of its own,
``MessageEncoder``/``wire_size`` for POP3 message bytes). The connections are
``SMTPServerConnection`` and ``POP3ServerConnection`` here; in their modules both are
``ServerConnection``. The client engines likewise: ``SMTPClientConnection`` and
``POP3ClientConnection`` (each ``ClientConnection`` in its module), with their
configurations; their commands and events stay in ``smtp_client_events`` and
``pop3_client_events``, whose names overlap the servers' events.

Four event names exist in both protocols with different meanings: ``StartTLS``,
``AuthAttempt``, ``Quit`` and ``ConnectionClosed``. They are not exported here (a prefixed
alias would show another name in every repr and traceback); import them from their
module, ``nosend_proto.smtp_events`` or ``nosend_proto.pop3_events``, which also hold every
other event of their protocol. ``NEED_DATA`` is one object shared by both.

Modules whose names start with ``_`` are private: their contents may change at any time.
"""

from nosend_proto._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from nosend_proto._receivebuffer import OVERLONG, ReceiveBuffer
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

#: The event names both protocols use for different classes, so exported only by their
#: modules (see the package docstring).
SHARED_EVENT_NAMES: frozenset[str] = frozenset(
    {"StartTLS", "AuthAttempt", "Quit", "ConnectionClosed"}
)

__all__ = [
    "NEED_DATA",
    "Sentinel",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "SHARED_EVENT_NAMES",
    "ReceiveBuffer",
    "OVERLONG",
    # SASL framing (RFC 4422) shared by SMTP AUTH and POP3 AUTH
    "SERVER_MECHANISMS",
    "Credentials",
    "SaslChallenge",
    "SaslClient",
    "SaslFailure",
    "SaslServer",
    "SaslSuccess",
]

# --- SMTP exports (owned by the SMTP engine) ---
# StartTLS, AuthAttempt, Quit and ConnectionClosed stay in ``nosend_proto.smtp_events``.
from nosend_proto import received, smtp_events, smtp_state  # noqa: E402
from nosend_proto.received import protocol_name, received_header  # noqa: E402
from nosend_proto.smtp_events import (  # noqa: E402
    AuthChallenge,
    Bdat,
    BdatChunkEnd,
    DataChunk,
    DataRejected,
    DataStart,
    EndOfData,
    Hello,
    Help,
    MailFrom,
    MailParams,
    Noop,
    OriginalRecipient,
    ProtocolViolation,
    RcptParams,
    RcptTo,
    Reply,
    Reset,
    SMTPEvent,
    Verify,
)
from nosend_proto.smtp_state import BARE_NEWLINE_POLICIES, SMTPServerConfig, SMTPState  # noqa: E402
from nosend_proto.smtp_state import ServerConnection as SMTPServerConnection  # noqa: E402

__all__ += [
    "received",
    "smtp_events",
    "smtp_state",
    "protocol_name",
    "received_header",
    "SMTPServerConnection",
    "SMTPServerConfig",
    "SMTPState",
    "BARE_NEWLINE_POLICIES",
    "Reply",
    "MailParams",
    "RcptParams",
    "OriginalRecipient",
    "SMTPEvent",
    "Hello",
    "MailFrom",
    "RcptTo",
    "DataStart",
    "Bdat",
    "DataChunk",
    "BdatChunkEnd",
    "EndOfData",
    "DataRejected",
    "Reset",
    "Verify",
    "Noop",
    "Help",
    "AuthChallenge",
    "ProtocolViolation",
]
# --- end SMTP exports ---

# --- POP3 exports (owned by the POP3 engine) ---
# StartTLS, AuthAttempt, Quit and ConnectionClosed stay in ``nosend_proto.pop3_events``.
from nosend_proto import pop3_events, pop3_state  # noqa: E402
from nosend_proto._pop3_stuffing import MessageEncoder  # noqa: E402
from nosend_proto.pop3_events import (  # noqa: E402
    NEED_FLUSH,
    RESPONSE_CODES,
    Greeting,
    GreetingRefused,
    LoginAccepted,
    LoginRejected,
    MessageChunk,
    MessageEnd,
    MessageInfo,
    MessageUnavailable,
    POP3Answer,
    POP3Event,
    POP3ServerConfig,
    Retrieve,
    TLSReady,
    TLSRefused,
    TooManyErrors,
    Top,
    UpdateApplied,
    UpdateFailed,
)
from nosend_proto.pop3_state import POP3State, WireSizeCounter, wire_size  # noqa: E402
from nosend_proto.pop3_state import ServerConnection as POP3ServerConnection  # noqa: E402

__all__ += [
    "pop3_events",
    "pop3_state",
    "POP3ServerConnection",
    "POP3ServerConfig",
    "POP3State",
    "MessageInfo",
    "NEED_FLUSH",
    "RESPONSE_CODES",
    "POP3Event",
    "POP3Answer",
    "Retrieve",
    "Top",
    "TooManyErrors",
    "Greeting",
    "GreetingRefused",
    "LoginAccepted",
    "LoginRejected",
    "MessageChunk",
    "MessageEnd",
    "MessageUnavailable",
    "UpdateApplied",
    "UpdateFailed",
    "TLSReady",
    "TLSRefused",
    "MessageEncoder",
    "WireSizeCounter",
    "wire_size",
]
# --- end POP3 exports ---

# --- client exports (the SMTP and POP3 client engines) ---
# Their commands and events live in ``nosend_proto.smtp_client_events`` and
# ``nosend_proto.pop3_client_events``: many names (Greeting, Quit, ConnectionClosed, Top...)
# mean something else on the server side, so only the connections and configurations come
# here, prefixed like the servers'.
from nosend_proto import pop3_client, pop3_client_events, smtp_client, smtp_client_events  # noqa: E402,I001
from nosend_proto._sasl import CLIENT_MECHANISMS  # noqa: E402
from nosend_proto.pop3_client import ClientConnection as POP3ClientConnection  # noqa: E402
from nosend_proto.pop3_client import ClientState as POP3ClientState  # noqa: E402
from nosend_proto.pop3_client_events import Capabilities as POP3Capabilities  # noqa: E402
from nosend_proto.pop3_client_events import POP3ClientConfig  # noqa: E402
from nosend_proto.smtp_client import ClientConnection as SMTPClientConnection  # noqa: E402
from nosend_proto.smtp_client import ClientState as SMTPClientState  # noqa: E402
from nosend_proto.smtp_client_events import SMTPClientConfig  # noqa: E402

__all__ += [
    "smtp_client",
    "smtp_client_events",
    "pop3_client",
    "pop3_client_events",
    "CLIENT_MECHANISMS",
    "SMTPClientConnection",
    "SMTPClientState",
    "SMTPClientConfig",
    "POP3ClientConnection",
    "POP3ClientState",
    "POP3ClientConfig",
    "POP3Capabilities",
]
# --- end client exports ---
