"""Property tests of the SMTP client engine (hypothesis).

* arbitrary server bytes, cut at arbitrary points: only ``RemoteProtocolError`` escapes
  (the application below never misuses the engine), and the engine's buffer stays
  within its configured bounds;
* any body, in any chunking, reaches our server engine byte-exact after CRLF
  normalisation, over BDAT, pipelined DATA and lock-step DATA;
* against a server that answers every command at random, each transaction gets exactly
  one result, and the client reports as accepted exactly the messages the server
  acknowledged (a queue relying on it never drops or duplicates mail).
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from nosend_proto import RemoteProtocolError
from nosend_proto.smtp_client import ClientConnection, ClientState
from nosend_proto.smtp_client_events import (
    NEED_DATA,
    Authenticate,
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    Quit,
    Ready,
    Recipient,
    SendBody,
    SMTPClientConfig,
    TLSHandshakeNeeded,
    Transaction,
)
from nosend_proto.smtp_events import (
    DataStart,
    EndOfData,
    MailFrom,
    RcptTo,
    Reply,
    SMTPEvent,
)
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig
from tests.fuzz.profiles import fuzz_settings
from tests.proto.smtp_client_support import Link, Mailer, chunks
from tests.proto.smtp_driver import HOST, default_app

FAST = fuzz_settings(150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG = SMTPClientConfig(
    local_hostname="boat.example.net", max_reply_line=600, max_reply_lines=20, bdat_chunk_size=50
)

REPLY_LINES = st.sampled_from(
    [
        b"220 mx ESMTP\r\n",
        b"250-mx\r\n",
        b"250-PIPELINING\r\n",
        b"250-CHUNKING\r\n",
        b"250-STARTTLS\r\n",
        b"250-AUTH PLAIN XOAUTH2\r\n",
        b"250-SIZE 10\r\n",
        b"250 8BITMIME\r\n",
        b"250 2.1.0 ok\r\n",
        b"354 go\r\n",
        b"334 \r\n",
        b"334 eyJzIjoxfQ==\r\n",
        b"235 ok\r\n",
        b"421 bye\r\n",
        b"450 later\r\n",
        b"550 5.1.1 no\r\n",
        b"220 go ahead\r\n",
        b"221 bye\r\n",
        b"500 what\r\n",
    ]
)
EHLO_KEYWORDS = st.lists(
    st.sampled_from(["PIPELINING", "CHUNKING", "STARTTLS", "AUTH PLAIN XOAUTH2", "SIZE 10"]),
    unique=True,
).map(lambda kws: b"".join(b"250-%s\r\n" % k.encode() for k in kws) + b"250 8BITMIME\r\n")
# Mostly a plausible session (a greeting, an EHLO reply, then replies in any order), so
# the deeper states are reached; sometimes plain noise anywhere.
SERVER_BYTES = st.tuples(
    st.sampled_from([b"220 mx ESMTP\r\n", b"220 mx ESMTP\r\n", b"554 no\r\n", b""]),
    EHLO_KEYWORDS,
    st.lists(st.one_of(REPLY_LINES, REPLY_LINES, st.binary(max_size=12)), max_size=30),
).map(lambda t: t[0] + t[1] + b"".join(t[2]))


def act(conn: ClientConnection, event: object, body: bytes) -> None:
    """A well-behaved application: whatever the server says, use the engine correctly."""
    if isinstance(event, TLSHandshakeNeeded):
        conn.start_tls_done()
    elif isinstance(event, Ready):
        if "AUTH" in event.extensions and not conn.authenticated:
            conn.send(Authenticate("u", "token", ("PLAIN", "XOAUTH2")))
        else:
            conn.send(Transaction("a@b.example", (Recipient("c@d.example"),), size=len(body)))
    elif isinstance(event, SendBody):
        conn.send(BodyChunk(body))
        conn.send(EndOfBody())
    if conn.state is ClientState.READY and conn.replies_owed == 0:
        conn.send(Quit())


@FAST
@given(SERVER_BYTES, st.lists(st.integers(1, 50), min_size=1, max_size=8), st.binary(max_size=30))
def test_arbitrary_server_bytes_only_raise_remote_errors(
    data: bytes, cuts: list[int], body: bytes
) -> None:
    conn = ClientConnection(CONFIG)
    body = body if body.isascii() else b"ascii body"
    bound = CONFIG.max_reply_line * CONFIG.max_reply_lines
    try:
        for piece in [*chunks(data, cuts), b""]:
            if conn.state is ClientState.CLOSED:
                break
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or isinstance(event, ConnectionClosed):
                    break
                if conn.state is ClientState.TLS_PENDING and not isinstance(
                    event, TLSHandshakeNeeded
                ):
                    continue
                act(conn, event, body)
                if conn.state is ClientState.TLS_PENDING:
                    break
            conn.data_to_send()
            # Memory: whatever is buffered stays within one reply's bound plus one read.
            assert conn._reader.pending() <= bound + 12288 + len(piece)
            if conn.state is ClientState.TLS_PENDING:
                break
    except RemoteProtocolError:
        pass


def normalise(body: bytes) -> bytes:
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    return out + b"\r\n" if out and not out.endswith(b"\r\n") else out


BODY = st.binary(max_size=400) | st.lists(
    st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"x", b"\r\n.\r\n", b"\xe9", b" "]),
    max_size=60,
).map(b"".join)
SERVERS = st.sampled_from(
    [
        SMTPServerConfig(hostname=HOST, max_text_line=0),
        SMTPServerConfig(hostname=HOST, max_text_line=0, chunking=False),
        SMTPServerConfig(hostname=HOST, max_text_line=0, chunking=False, pipelining=False),
    ]
)


@FAST
@given(st.lists(BODY, min_size=1, max_size=3), st.lists(st.integers(1, 64), min_size=1), SERVERS)
def test_any_body_arrives_byte_exact_after_crlf_normalisation(
    bodies: list[bytes], cuts: list[int], server: SMTPServerConfig
) -> None:
    config = SMTPClientConfig(local_hostname="boat.example.net", bdat_chunk_size=37)
    link = Link(config, server)
    messages = [
        (Transaction("a@b.example", (Recipient("c@d.example"),)), chunks(body, cuts))
        for body in bodies
    ]
    results = Mailer(link, messages).run()
    assert [r.accepted for r in results] == [True] * len(bodies)
    assert link.server.messages == [normalise(body) for body in bodies]
    assert not link.server.rejected


MAIL_CODES = [250, 250, 250, 451, 550, 421]
RCPT_CODES = [250, 250, 250, 450, 550, 421]
DATA_CODES = [354, 354, 354, 451, 554, 421]
END_CODES = [250, 250, 250, 452, 554, 421]


@FAST
@given(st.data(), SERVERS, st.integers(1, 4), st.integers(1, 3))
def test_each_transaction_gets_one_result_and_accepted_means_acknowledged(
    data: st.DataObject, server: SMTPServerConfig, n_messages: int, n_rcpts: int
) -> None:
    acknowledged: list[bytes] = []

    def random_server(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        codes = None
        if isinstance(event, MailFrom):
            codes = MAIL_CODES
        elif isinstance(event, RcptTo):
            codes = RCPT_CODES
        elif isinstance(event, DataStart):
            codes = DATA_CODES
        elif isinstance(event, EndOfData):
            codes = END_CODES
        if codes is None:
            return default_app(conn, event)
        code = data.draw(st.sampled_from(codes))
        if isinstance(event, EndOfData) and code == 250:
            acknowledged.append(link.server.messages[-1])  # the body just completed
        return Reply(code, "random")

    link = Link(SMTPClientConfig(local_hostname="boat.example.net"), server, random_server)
    rcpts = tuple(Recipient(f"r{i}@d.example") for i in range(n_rcpts))
    messages = [
        (Transaction(f"s{i}@b.example", rcpts), [b"message %d\r\n" % i]) for i in range(n_messages)
    ]
    mailer = Mailer(link, messages)
    results = mailer.run()
    assert sum(isinstance(e, ConnectionClosed) for e in mailer.events) == 1
    # Exactly one result for each transaction handed to the engine, in order.
    handed = n_messages - len(mailer._queue)
    assert [r.transaction.mail_from for r in results] == [f"s{i}@b.example" for i in range(handed)]
    # Accepted by the client exactly when acknowledged by the server (mail is sacred).
    accepted = [b"message %d\r\n" % int(r.transaction.mail_from[1]) for r in results if r.accepted]
    assert accepted == acknowledged
    # Every recipient of every result is exactly one of delivered, retried or failed,
    # and only an acknowledged message has delivered recipients.
    for r in results:
        assert not set(map(id, r.delivered)) & set(map(id, r.retry))
        assert bool(r.delivered) == r.accepted
