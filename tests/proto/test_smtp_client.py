"""SMTP client engine: session set-up, transactions, bodies and round trips.

Most tests wire the client engine to our server engine in memory (``Link``) and count
round trips; the rest script the server's bytes to reach what our server never says.
"""

from __future__ import annotations

import re

import pytest

from nosend_proto import LocalProtocolError, RemoteProtocolError
from nosend_proto.smtp_client import ClientConnection, ClientState
from nosend_proto.smtp_client_events import (
    NEED_DATA,
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    Greeting,
    MessageResult,
    OriginalRecipient,
    Quit,
    Ready,
    Recipient,
    RecipientResult,
    SendBody,
    SessionFailed,
    SMTPClientConfig,
    Transaction,
)
from nosend_proto.smtp_events import Hello, MailFrom, RcptTo, Reply, SMTPEvent
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig
from tests.proto.smtp_client_support import CLIENT, Link, Mailer, chunks, client_events, crlf
from tests.proto.smtp_driver import HOST, default_app

FULL = SMTPServerConfig(hostname=HOST)  # PIPELINING, CHUNKING, SIZE, 8BITMIME, DSN, ...
NO_CHUNKING = SMTPServerConfig(hostname=HOST, chunking=False)
LOCK_STEP = SMTPServerConfig(hostname=HOST, pipelining=False, chunking=False)


def txn(*rcpts: str, sender: str = "skipper@boat.example", **kw: object) -> Transaction:
    return Transaction(sender, tuple(Recipient(r) for r in rcpts), **kw)  # type: ignore[arg-type]


def message(n: int) -> tuple[Transaction, list[bytes]]:
    body = b"Subject: message %d\r\n\r\nbody %d\r\n" % (n, n)
    return txn("alice@example.org", size=len(body)), [body]


# -- round trips ------------------------------------------------------------------------


def test_pipelining_and_chunking_send_every_message_in_one_round_trip() -> None:
    link = Link(server=FULL)
    results = Mailer(link, [message(n) for n in range(5)]).run()
    assert [r.accepted for r in results] == [True] * 5
    assert len(link.server.messages) == 5
    # EHLO, then all five messages and QUIT in one write (RFC 2920, RFC 3030).
    assert link.round_trips == 2
    write = link.writes[1]
    assert write.count(b"MAIL FROM:") == 5 and write.endswith(b"QUIT\r\n")
    # An earlier BDAT transaction is still in flight: RSET guards each later MAIL.
    assert write.count(b"RSET\r\n") == 4


def test_pipelining_without_chunking_costs_one_round_trip_per_message() -> None:
    link = Link(server=NO_CHUNKING)
    results = Mailer(link, [message(n) for n in range(3)]).run()
    assert all(r.accepted for r in results)
    # EHLO; MAIL+RCPT+DATA per message (the body and "." ride with the next group);
    # the last body, its "." and QUIT.
    assert link.round_trips == 1 + 3 + 1
    assert link.writes[2].startswith(b"Subject: message 0") and b"MAIL FROM:" in link.writes[2]
    assert b"RSET" not in b"".join(link.writes)  # DATA always ends the transaction


def test_lock_step_without_pipelining() -> None:
    link = Link(server=LOCK_STEP)
    body = b"hello\r\n"
    results = Mailer(link, [(txn("a@example.org", "b@example.org"), [body])]).run()
    assert results[0].accepted
    # EHLO, MAIL, RCPT, RCPT, DATA, end of data, QUIT: one command per round trip.
    assert link.round_trips == 7
    assert all(w.count(b"\r\n") == 1 for w in link.writes if not w.startswith(b"hello"))


def test_chunking_without_pipelining_falls_back_to_data() -> None:
    server = SMTPServerConfig(hostname=HOST, pipelining=False, chunking=True)
    link = Link(server=server)
    Mailer(link, [message(1)]).run()
    assert b"BDAT" not in b"".join(link.writes) and b"DATA\r\n" in link.writes
    assert len(link.server.messages) == 1


def test_big_body_goes_in_several_bdat_chunks() -> None:
    config = SMTPClientConfig(local_hostname="boat.example.net", bdat_chunk_size=1000)
    link = Link(config, FULL)
    body = b"".join(b"line %05d\r\n" % i for i in range(500))
    Mailer(link, [(txn("a@example.org"), chunks(body, [333]))]).run()
    assert link.server.messages == [body]
    heads = re.findall(rb"BDAT (\d+)( LAST)?\r\n", b"".join(link.writes))
    # Pieces of 333 are gathered into chunks of at least 1000 octets; the rest goes LAST.
    assert [int(n) for n, _ in heads] == [1332] * 4 + [len(body) - 4 * 1332]
    assert [last for _, last in heads] == [b""] * 4 + [b" LAST"]


# -- the body on the wire -----------------------------------------------------------------

AWKWARD = (
    b".starts with a dot\n..two dots\r\n.\r\nlone dot above\rbare CR\n\r\n"
    b"bare LF above\r.\n.\r.\n\rend without newline"
)
AWKWARD_CRLF = (
    b"..starts with a dot\r\n...two dots\r\n..\r\nlone dot above\r\nbare CR\r\n\r\n"
    b"bare LF above\r\n..\r\n..\r\n..\r\n\r\nend without newline\r\n"
)


@pytest.mark.parametrize("server", [FULL, NO_CHUNKING, LOCK_STEP], ids=["bdat", "data", "lock"])
@pytest.mark.parametrize("sizes", [[1], [2, 3], [7], [10_000]])
def test_bare_line_ends_become_crlf_and_dots_round_trip(
    server: SMTPServerConfig, sizes: list[int]
) -> None:
    link = Link(server=server)
    Mailer(link, [(txn("a@example.org"), chunks(AWKWARD, sizes))]).run()
    expected = AWKWARD_CRLF.replace(b"\r\n..", b"\r\n.")
    if expected.startswith(b".."):
        expected = expected[1:]
    assert link.server.messages == [expected]
    assert not link.server.rejected  # our server refuses bare CR/LF: none was sent
    if server is FULL:
        assert AWKWARD_CRLF not in b"".join(link.writes)  # BDAT: no stuffing
    else:
        assert AWKWARD_CRLF + b".\r\n" in b"".join(link.writes)


def test_empty_body_and_body_of_one_dot() -> None:
    for server in (FULL, NO_CHUNKING):
        link = Link(server=server)
        Mailer(link, [(txn("a@example.org"), []), (txn("a@example.org"), [b"."])]).run()
        assert link.server.messages == [b"", b".\r\n"]


def test_eight_bit_body_needs_8bitmime() -> None:
    seven = SMTPServerConfig(hostname=HOST, eightbitmime=False, smtputf8=False)
    link = Link(server=seven)
    body = "Grüße\r\n".encode()
    results = Mailer(link, [(txn("a@example.org", eight_bit=True), [body])]).run()
    # RFC 6152: refused locally rather than converted; nothing of it was sent.
    assert results[0].local_reason == "8bitmime" and not results[0].accepted
    assert b"MAIL" not in b"".join(link.writes)


def test_undeclared_eight_bit_octet_raises_before_it_is_sent() -> None:
    seven = SMTPServerConfig(hostname=HOST, eightbitmime=False, smtputf8=False)
    link = Link(server=seven)
    link.run(lambda e: None)
    link.send(txn("a@example.org"))
    [event] = client_events(link.client)
    assert isinstance(event, SendBody)
    assert link.client.send(BodyChunk(b"plain\r\n")) == b""  # held for a BDAT chunk
    with pytest.raises(LocalProtocolError):
        link.client.send(BodyChunk(b"caf\xe9\r\n"))
    with pytest.raises(LocalProtocolError):
        link.client.send(EndOfBody())  # the engine stays unusable


def test_unknown_eight_bit_declares_8bitmime_when_offered() -> None:
    link = Link(server=FULL)
    body = "Grüße\r\n".encode()
    Mailer(link, [(txn("a@example.org"), [body])]).run()
    mail = next(e for e in link.server.events if isinstance(e, MailFrom))
    assert mail.params.body == "8BITMIME"
    assert link.server.messages == [body]


def test_smtputf8_address_needs_smtputf8() -> None:
    link = Link(server=SMTPServerConfig(hostname=HOST, smtputf8=False))
    results = Mailer(link, [(txn("jörg@example.org"), [b"x\r\n"])]).run()
    assert results[0].local_reason == "smtputf8"
    link = Link(server=FULL)
    results = Mailer(link, [(txn("jörg@example.org"), [b"x\r\n"])]).run()
    assert results[0].accepted
    mail = next(e for e in link.server.events if isinstance(e, MailFrom))
    assert mail.params.smtputf8


# -- SIZE ---------------------------------------------------------------------------------


def test_message_over_the_servers_size_is_refused_before_a_byte_is_sent() -> None:
    link = Link(server=SMTPServerConfig(hostname=HOST, max_message_size=1000))
    big = b"x" * 2000 + b"\r\n"
    small = b"small\r\n"
    mailer = Mailer(
        link,
        [(txn("a@example.org", size=len(big)), [big]), (txn("a@example.org", size=7), [small])],
    )
    results = mailer.run()
    assert results[0].local_reason == "size" and results[0].reply is None
    assert results[1].accepted and link.server.messages == [small]
    wire = b"".join(link.writes)
    assert b"x" * 100 not in wire and wire.count(b"MAIL FROM") == 1
    mail = next(e for e in link.server.events if isinstance(e, MailFrom))
    assert mail.params.size == 7  # RFC 1870 section 6: declared


# -- recipients and refusals ----------------------------------------------------------------


def picky(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
    if isinstance(event, RcptTo):
        if event.forward_path.startswith("later"):
            return Reply(450, "Mailbox busy")
        if event.forward_path.startswith("nobody"):
            return Reply(550, "No such user")
    if isinstance(event, MailFrom) and event.reverse_path.startswith("spammer"):
        return Reply(550, "Go away")
    return default_app(conn, event)


@pytest.mark.parametrize("server", [FULL, NO_CHUNKING, LOCK_STEP], ids=["bdat", "data", "lock"])
def test_a_result_per_recipient(server: SMTPServerConfig) -> None:
    link = Link(server=server, app=picky)
    t = txn("alice@example.org", "later@example.org", "nobody@example.org")
    [result] = Mailer(link, [(t, [b"hi\r\n"])]).run()
    assert result.accepted
    accepted, temporary, permanent = result.recipients
    assert accepted.accepted and accepted.reply.enhanced == "2.1.5"
    assert temporary.temporary and temporary.reply.code == 450
    assert permanent.permanent and permanent.reply.code == 550
    assert link.server.messages == [b"hi\r\n"]
    assert [r.address for r in result.delivered] == ["alice@example.org"]
    assert [r.address for r in result.retry] == ["later@example.org"]


@pytest.mark.parametrize("server", [FULL, NO_CHUNKING, LOCK_STEP], ids=["bdat", "data", "lock"])
def test_every_recipient_refused_then_the_next_message_still_goes(
    server: SMTPServerConfig,
) -> None:
    link = Link(server=server, app=picky)
    refused = txn("nobody@example.org", "later@example.org")
    results = Mailer(link, [(refused, [b"lost\r\n"]), (txn("a@example.org"), [b"ok\r\n"])]).run()
    first = results[0]
    assert not first.accepted and first.delivered == ()
    assert [r.address for r in first.retry] == ["later@example.org"]  # the 450 only
    assert [r.reply.code for r in first.recipients] == [550, 450]
    assert results[1].accepted
    assert link.server.messages == [b"ok\r\n"]
    # MAIL stayed open on the server: RSET before the next MAIL, in the same write.
    assert b"RSET\r\nMAIL FROM" in b"".join(link.writes)
    if server is LOCK_STEP:
        # No DATA for a transaction without recipients.
        assert first.reply is None and first.local_reason == "no-recipients"
        assert link.writes.count(b"DATA\r\n") == 1
    else:
        # Pipelined: the server refuses DATA or BDAT itself (RFC 2920 section 3.1).
        assert first.reply is not None and first.reply.code == 554


@pytest.mark.parametrize("server", [FULL, NO_CHUNKING, LOCK_STEP], ids=["bdat", "data", "lock"])
def test_mail_refused(server: SMTPServerConfig) -> None:
    link = Link(server=server, app=picky)
    t = txn("a@example.org", sender="spammer@bad.example")
    results = Mailer(link, [(t, [b"spam\r\n"]), message(2)]).run()
    assert results[0].reply is not None and results[0].reply.code == 550
    assert not results[0].accepted and results[1].accepted
    assert results[0].retry == () and results[0].delivered == ()  # 5xx: bounce
    assert len(link.server.messages) == 1
    if server is LOCK_STEP:
        assert b"RCPT TO:<a@example.org>\r\n" not in link.writes[:3]


def test_dsn_parameters_only_when_offered() -> None:
    rcpt = Recipient(
        "a@example.org", notify=("SUCCESS", "FAILURE"), orcpt=OriginalRecipient("rfc822", "a@b.c")
    )
    t = Transaction("s@example.org", (rcpt,), ret="HDRS", envid="id+1 x")
    link = Link(server=FULL)
    [result] = Mailer(link, [(t, [b"x\r\n"])]).run()
    assert result.accepted and not result.dsn_dropped
    mail = next(e for e in link.server.events if isinstance(e, MailFrom))
    rcpt_event = next(e for e in link.server.events if isinstance(e, RcptTo))
    assert (mail.params.ret, mail.params.envid) == ("HDRS", "id+1 x")
    assert rcpt_event.params.notify == ("SUCCESS", "FAILURE")
    assert rcpt_event.params.orcpt == OriginalRecipient("rfc822", "a@b.c")
    link = Link(server=SMTPServerConfig(hostname=HOST, dsn=False))
    [result] = Mailer(link, [(t, [b"x\r\n"])]).run()
    assert result.accepted and result.dsn_dropped
    assert b"NOTIFY" not in b"".join(link.writes) and b"RET=" not in b"".join(link.writes)


# -- EHLO, HELO ----------------------------------------------------------------------------


def no_ehlo(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
    if isinstance(event, Hello) and event.extended:
        return Reply(502, "EHLO not implemented")
    return default_app(conn, event)


def test_helo_fallback_after_5xx_to_ehlo() -> None:
    link = Link(app=no_ehlo)
    mailer = Mailer(link, [message(1)])
    mailer.run()
    ready = next(e for e in mailer.events if isinstance(e, Ready))
    assert ready.helo and ready.extensions.keywords == frozenset()
    assert link.writes[:2] == [b"EHLO boat.example.net\r\n", b"HELO boat.example.net\r\n"]
    # No extensions: lock-step DATA, no parameters at all (RFC 5321 section 4.1.1.11).
    assert b"MAIL FROM:<skipper@boat.example>\r\n" in link.writes
    assert len(link.server.messages) == 1


def scripted(config: SMTPClientConfig = CLIENT) -> ClientConnection:
    return ClientConnection(config)


EHLO_REPLY = (
    "250-mx.example.org greets you\n250-PIPELINING\n250-SIZE 1000\n250-CHUNKING\n"
    "250-8BITMIME\n250-AUTH=LOGIN\n250-AUTH PLAIN LOGIN\n250 ENHANCEDSTATUSCODES\n"
)


def test_transcript_greeting_ehlo_and_a_pipelined_transaction() -> None:
    conn = scripted()
    assert conn.next_event() is NEED_DATA and conn.data_to_send() == b""
    conn.receive_data(crlf("220-mx.example.org ESMTP\n220 second line\n"))
    [greeting] = client_events(conn)
    assert isinstance(greeting, Greeting)
    assert greeting.reply.text == "mx.example.org ESMTP\nsecond line"
    assert conn.data_to_send() == b"EHLO boat.example.net\r\n"
    conn.receive_data(crlf(EHLO_REPLY))
    [ready] = client_events(conn)
    assert isinstance(ready, Ready)
    ext = ready.extensions
    assert ext.size == 1000 and ext.auth == ("LOGIN", "PLAIN") and "pipelining" in ext
    out = conn.send(txn("b@example.org", "c@example.org", size=12))
    assert out == crlf(
        "MAIL FROM:<skipper@boat.example> SIZE=12 BODY=8BITMIME\n"
        "RCPT TO:<b@example.org>\nRCPT TO:<c@example.org>\n"
    )
    assert conn.replies_owed == 3 and conn.state is ClientState.BODY
    assert isinstance(conn.next_event(), SendBody)
    assert conn.send(BodyChunk(b"hello\n")) == b""
    assert conn.send(EndOfBody()) == b"BDAT 7 LAST\r\nhello\r\n"
    assert conn.send(Quit()) == b"QUIT\r\n"
    conn.receive_data(crlf("250 2.1.0 ok\n250 2.1.5 ok\n452-4.2.2 mailbox\n452 4.2.2 full\n"))
    conn.receive_data(crlf("250 2.0.0 queued as X\n221 2.0.0 bye\n"))
    events = client_events(conn)
    assert [type(e) for e in events] == [
        RecipientResult,
        RecipientResult,
        MessageResult,
        ConnectionClosed,
    ]
    second = events[1]
    assert isinstance(second, RecipientResult)
    assert second.reply == Reply(452, "mailbox\nfull", "4.2.2") and second.temporary
    result = events[2]
    assert isinstance(result, MessageResult) and result.accepted
    assert result.reply == Reply(250, "queued as X", "2.0.0")
    assert conn.state is ClientState.CLOSED


def test_refused_greeting_ends_with_quit() -> None:
    conn = scripted()
    conn.receive_data(crlf("554 no service for you\n"))
    [failed] = client_events(conn)
    assert isinstance(failed, SessionFailed) and failed.reason == "greeting"
    assert conn.data_to_send() == b"QUIT\r\n"
    with pytest.raises(LocalProtocolError):
        conn.send(txn("a@example.org"))
    conn.receive_data(crlf("221 bye\n"))
    assert isinstance(client_events(conn)[-1], ConnectionClosed)


def test_421_in_the_middle_answers_every_transaction_in_flight() -> None:
    conn = scripted()
    conn.receive_data(crlf("220 hi\n" + EHLO_REPLY))
    client_events(conn)
    conn.send(txn("b@example.org"))
    client_events(conn)
    conn.send(BodyChunk(b"x\r\n"))
    conn.send(EndOfBody())
    conn.send(txn("c@example.org"))
    conn.receive_data(crlf("250 ok\n421 4.3.0 shutting down\n"))
    events = client_events(conn)
    results = [e for e in events if isinstance(e, MessageResult)]
    assert len(results) == 2 and all(r.temporary for r in results)
    assert results[0].reply is not None and results[0].reply.code == 421
    assert isinstance(events[-1], ConnectionClosed) and conn.state is ClientState.CLOSED


def test_server_closing_loses_the_transaction_in_flight() -> None:
    conn = scripted()
    conn.receive_data(crlf("220 hi\n" + EHLO_REPLY))
    client_events(conn)
    conn.send(txn("b@example.org"))
    client_events(conn)
    conn.send(EndOfBody())
    conn.receive_data(crlf("250 ok\n250 ok\n"))
    conn.receive_data(b"")
    events = client_events(conn)
    result = next(e for e in events if isinstance(e, MessageResult))
    assert result.reply is None and result.local_reason == "connection-lost"
    assert result.temporary and len(result.recipients) == 1
    # Accepted recipient, no final reply: nothing delivered, everything retried.
    assert result.delivered == () and result.retry == result.transaction.recipients
    assert isinstance(events[-1], ConnectionClosed)


@pytest.mark.parametrize(
    "data",
    [
        b"hello there\r\n",  # not a reply line
        b"220-one\r\n250 two\r\n",  # the code changes inside a reply
        b"220 " + b"x" * 3000 + b"\r\n",  # over max_reply_line
        b"220 " + b"x" * 3000,  # ... known before the line ends: no need to wait for it
        b"220-x\r\n" * 300 + b"220 x\r\n",  # over max_reply_lines
        b"199 what\r\n",  # RFC 5321 section 4.2: no such code
    ],
)
def test_peer_violations_raise_and_keep_raising(data: bytes) -> None:
    conn = scripted()
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError):
        client_events(conn)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_unsolicited_reply_is_a_violation() -> None:
    conn = scripted()
    conn.receive_data(crlf("220 hi\n250-x\n250 SIZE\n250 extra\n"))
    with pytest.raises(RemoteProtocolError):
        client_events(conn)


def test_application_misuse_raises_local_errors() -> None:
    conn = scripted()
    with pytest.raises(LocalProtocolError):
        conn.send(txn("a@example.org"))  # before Ready
    conn.receive_data(crlf("220 hi\n" + EHLO_REPLY))
    client_events(conn)
    with pytest.raises(LocalProtocolError):
        conn.send(BodyChunk(b"x"))  # no SendBody yet
    with pytest.raises(LocalProtocolError):
        conn.start_tls_done()
    conn.send(txn("a@example.org"))
    with pytest.raises(LocalProtocolError):
        conn.send(txn("a@example.org"))  # a body is being sent
    with pytest.raises(LocalProtocolError):
        conn.send(Quit())
    with pytest.raises(LocalProtocolError):
        Transaction("a@example.org\r\nRCPT TO:<x@y.z>", (Recipient("b@c.d"),))
    with pytest.raises(LocalProtocolError):
        Recipient("b@c.d>\r\nDATA")
    with pytest.raises(LocalProtocolError):
        Recipient("b@c.d", notify=("NEVER", "SUCCESS"))


def test_long_lines_pass_unchanged() -> None:
    # RFC 5321 section 4.5.3.1.6 limits lines to 1000 octets; the engine neither folds
    # nor refuses them (the server decides): here a server that takes any length.
    line = b"x" * 5000 + b"\r\n"
    for server in (FULL, NO_CHUNKING):
        config = SMTPServerConfig(hostname=HOST, max_text_line=0, chunking=server.chunking)
        link = Link(server=config)
        Mailer(link, [(txn("a@example.org"), chunks(line, [999]))]).run()
        assert link.server.messages == [line]
    # Our default server refuses it after reading it: a permanent failure, reported.
    link = Link(server=FULL)
    [result] = Mailer(link, [(txn("a@example.org"), [line])]).run()
    assert result.reply is not None and result.reply.code == 550 and not result.accepted


def test_needs_reply_tells_when_the_application_must_wait() -> None:
    conn = scripted()
    assert conn.needs_reply and conn.replies_owed == 1  # the greeting
    conn.receive_data(crlf("220 hi\n" + EHLO_REPLY))
    client_events(conn)
    assert not conn.needs_reply and conn.replies_owed == 0 and conn.state is ClientState.READY
    conn.send(txn("a@example.org"))
    client_events(conn)
    conn.send(EndOfBody())
    # Pipelined: three replies owed, but the application may send the next message.
    assert conn.replies_owed == 3 and not conn.needs_reply
    conn.send(Quit())
    assert conn.replies_owed == 4 and conn.needs_reply


def test_lock_step_client_waits_after_each_command() -> None:
    config = SMTPClientConfig(local_hostname="boat.example.net", pipelining=False)
    link = Link(config, FULL)
    Mailer(link, [message(1)]).run()
    # Offered, but not allowed by the configuration: one command per round trip, DATA.
    assert link.round_trips == 6 and b"DATA\r\n" in link.writes


def test_ehlo_and_helo_both_refused_end_the_session() -> None:
    conn = scripted()
    conn.receive_data(crlf("220 hi\n500 what\n"))
    assert isinstance(client_events(conn)[0], Greeting)
    assert conn.data_to_send() == b"EHLO boat.example.net\r\nHELO boat.example.net\r\n"
    conn.receive_data(crlf("550 go away\n221 bye\n"))
    events = client_events(conn)
    failed = events[0]
    assert isinstance(failed, SessionFailed) and failed.reason == "hello"
    assert failed.reply is not None and failed.reply.code == 550
    assert conn.data_to_send() == b"QUIT\r\n" and isinstance(events[-1], ConnectionClosed)


@pytest.mark.parametrize("data", [b"421 4.3.2 busy, try later\r\n", b""])
def test_no_greeting(data: bytes) -> None:
    conn = scripted()
    if data:
        conn.receive_data(data)
    conn.receive_data(b"")
    events = client_events(conn)
    closed = events[-1]
    assert isinstance(closed, ConnectionClosed) and conn.state is ClientState.CLOSED
    assert (closed.reply is None) == (not data)
    assert conn.data_to_send() == b""  # nothing is written to a server that is leaving


@pytest.mark.parametrize("last", ["STARTTLS", "EHLO"])
def test_421_to_ehlo_or_starttls_closes_without_a_ready(last: str) -> None:
    # Found by the client fuzz test: a 421 that answered STARTTLS went through the
    # STARTTLS handling first (refused -> Ready), so the application was told to send
    # mail on a connection that was already closed.
    conn = scripted()
    conn.receive_data(crlf("220 mx ESMTP\n"))
    if last == "STARTTLS":
        conn.receive_data(crlf("250-mx\n250-PIPELINING\n250 STARTTLS\n"))
    conn.receive_data(crlf("421 4.3.2 shutting down\n"))
    events = client_events(conn)
    assert not any(isinstance(e, Ready | SessionFailed) for e in events), events
    closed = events[-1]
    assert isinstance(closed, ConnectionClosed) and conn.state is ClientState.CLOSED
    assert closed.reply is not None and closed.reply.code == 421
