"""SMTP server engine: commands, sequencing and syntax, as RFC 5321 transcripts."""
# ruff: noqa: E501 -- transcript tables read best with one exchange per line

from __future__ import annotations

import pytest

from nosend_proto import LocalProtocolError
from nosend_proto.smtp_events import (
    NEED_DATA,
    Hello,
    MailFrom,
    MailParams,
    OriginalRecipient,
    ProtocolViolation,
    RcptParams,
    RcptTo,
    Reply,
    SMTPEvent,
    Verify,
)
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState
from tests.proto.smtp_driver import HOST, Harness, run_transcript

EHLO_REPLY = """\
S: 250-mx.example.org
S: 250-PIPELINING
S: 250-SIZE 36700160
S: 250-8BITMIME
S: 250-SMTPUTF8
S: 250-ENHANCEDSTATUSCODES
S: 250-CHUNKING
S: 250 DSN"""


def test_ehlo_lists_extensions_and_a_full_transaction() -> None:
    run_transcript(
        Harness(),
        f"""
        S: 220 mx.example.org ESMTP
        C: EHLO client.example.net
        {EHLO_REPLY}
        C: MAIL FROM:<alice@example.net>
        S: 250 2.1.0 OK
        C: RCPT TO:<bob@example.org>
        S: 250 2.1.5 OK
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: hello
        C: .
        S: 250 2.0.0 OK
        C: QUIT
        S: 221 2.0.0 mx.example.org Service closing transmission channel
        """,
    )


def test_helo_offers_nothing_and_refuses_esmtp_parameters() -> None:
    h = Harness()
    run_transcript(
        h,
        """
        S: 220 mx.example.org ESMTP
        C: HELO client.example.net
        S: 250 mx.example.org
        C: MAIL FROM:<alice@example.net> SIZE=10
        S: 555 5.5.4 Parameters not recognized after HELO: 'SIZE=10'
        C: MAIL FROM:<alice@example.net>
        S: 250 2.1.0 OK
        """,
    )
    assert h.conn.extended is False
    assert h.conn.received_protocol == "SMTP"


# RFC 2034 section 3: replies to HELO/EHLO carry no enhanced status code, errors included.
@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("EHLO", "501 Syntax: EHLO hostname"),
        ("HELO", "501 Syntax: HELO hostname"),
        ("EHLO two words", "501 Syntax: EHLO hostname"),
        ("EHLO bad..name", "501 Invalid domain name 'bad..name'"),
        ("EHLO [300.1.1.1]", "501 Invalid domain name '[300.1.1.1]'"),
    ],
)
def test_hello_syntax_errors_name_the_offending_part(command: str, reply: str) -> None:
    run_transcript(
        Harness(),
        f"""
        S: 220 mx.example.org ESMTP
        C: {command}
        S: {reply}
        """,
    )


@pytest.mark.parametrize(
    "name", ["client.example.net", "[192.0.2.1]", "[IPv6:2001:db8::1]", "my_pc.lan", "localhost"]
)
def test_hello_accepts_domains_and_address_literals(name: str) -> None:
    h = Harness()
    h.greet()
    assert h.feed(f"HELO {name}\r\n".encode()) == b"250 mx.example.org\r\n"
    assert h.events == [Hello(name, False)]
    assert h.conn.helo_name == name


def test_commands_before_hello_are_out_of_sequence() -> None:
    run_transcript(
        Harness(),
        """
        S: 220 mx.example.org ESMTP
        C: MAIL FROM:<a@example.net>
        S: 503 5.5.1 Send HELO or EHLO first
        C: RCPT TO:<b@example.org>
        S: 503 5.5.1 Need MAIL before RCPT
        C: DATA
        S: 503 5.5.1 Need MAIL before DATA
        C: AUTH PLAIN
        S: 503 5.5.1 Send EHLO first
        C: NOOP
        S: 250 2.0.0 OK
        C: RSET
        S: 250 2.0.0 OK
        C: MAIL FROM:<a@example.net>
        S: 503 5.5.1 Send HELO or EHLO first
        """,
    )


def test_sequence_errors_inside_a_transaction() -> None:
    run_transcript(
        Harness(),
        f"""
        S: 220 mx.example.org ESMTP
        C: EHLO client.example.net
        {EHLO_REPLY}
        C: RCPT TO:<b@example.org>
        S: 503 5.5.1 Need MAIL before RCPT
        C: MAIL FROM:<a@example.net>
        S: 250 2.1.0 OK
        C: DATA
        S: 503 5.5.1 Need RCPT before DATA
        C: MAIL FROM:<a@example.net>
        S: 503 5.5.1 Nested MAIL command
        C: RSET
        S: 250 2.0.0 OK
        C: RCPT TO:<b@example.org>
        S: 503 5.5.1 Need MAIL before RCPT
        """,
    )


def test_all_recipients_refused_gives_554_no_valid_recipients() -> None:
    def app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        if isinstance(event, RcptTo):
            return Reply(550, "No such user", "5.1.1")
        return conn.default_reply(event)

    run_transcript(
        Harness(app=app),
        """
        S: 220 mx.example.org ESMTP
        C: EHLO client.example.net
        C: MAIL FROM:<a@example.net>
        C: RCPT TO:<nobody@example.org>
        C: DATA
        S: 250-mx.example.org
        S: 250-PIPELINING
        S: 250-SIZE 36700160
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250 DSN
        S: 250 2.1.0 OK
        S: 550 5.1.1 No such user
        S: 554 5.5.1 No valid recipients
        """,
    )


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("MAIL alice@example.net", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL FROM:alice@example.net", "501 5.1.7 Bad sender address syntax 'alice@example.net'"),
        ("MAIL FROM:<alice@>", "501 5.1.7 Bad sender address syntax '<alice@>'"),
        ("MAIL FROM:<alice>", "501 5.1.7 Bad sender address syntax '<alice>'"),
        ("MAIL FROM:<a..b@example.net>", "501 5.1.7 Bad sender address syntax '<a..b@example.net>'"),
        ("MAIL FROM:<postmaster>", "501 5.1.7 Bad sender address syntax '<postmaster>'"),
        ("MAIL FROM:<a@example.net> FOO=bar", "555 5.5.4 Unsupported parameter 'FOO=bar'"),
        ("MAIL FROM:<a@example.net> SIZE=ten", "501 5.5.4 Bad value in 'SIZE=ten'"),
        ("MAIL FROM:<a@example.net> SIZE", "501 5.5.4 Bad value in 'SIZE'"),
        ("MAIL FROM:<a@example.net> SIZE=1 SIZE=2", "501 5.5.4 Duplicate parameter 'SIZE'"),
        ("MAIL FROM:<a@example.net> BODY=BINARYMIME", "555 5.5.4 Unsupported parameter 'BODY=BINARYMIME'"),
        ("MAIL FROM:<a@example.net> BODY=9BIT", "501 5.5.4 Bad value in 'BODY=9BIT'"),
        ("MAIL FROM:<a@example.net> RET=ALL", "501 5.5.4 Bad value in 'RET=ALL'"),
        ("MAIL FROM:<a@example.net> ENVID=a+2", "501 5.5.4 Bad value in 'ENVID=a+2'"),
        # Regression: hexchars decoded to CR LF, which would reach a DSN's
        # Original-Envelope-Id field (RFC 3461 section 4.4: printable only).
        ("MAIL FROM:<a@example.net> ENVID=a+0D+0AX:y", "501 5.5.4 Bad value in 'ENVID=a+0D+0AX:y'"),
        ("MAIL FROM:<a@example.net> ENVID=a+00", "501 5.5.4 Bad value in 'ENVID=a+00'"),
        ("MAIL FROM:<a@example.net> SMTPUTF8=yes", "501 5.5.4 Bad value in 'SMTPUTF8=yes'"),
        ("MAIL FROM:<a@example.net> AUTH=<>", "555 5.5.4 Unsupported parameter 'AUTH=<>'"),
        ("MAIL FROM:<a@example.net> =x", "501 5.5.4 Bad parameter syntax '=x'"),
        ("MAIL FROM:<a@example.net> SIZE=99999999999", "552 5.3.4 Message size exceeds fixed maximum message size"),
        # Regression: this was 553, but RFC 6531 section 3.5 gives MAIL 550 (RCPT 553).
        ("MAIL FROM:<jös@example.net>", "550 5.6.7 Non-ASCII address 'j?s@example.net' needs SMTPUTF8"),
    ],
)  # fmt: skip
def test_mail_errors_name_the_offending_part(command: str, reply: str) -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO client.example.net\r\n")
    assert h.feed(command.encode() + b"\r\n").decode() == reply + "\r\n"
    assert h.conn.state is SMTPState.READY


@pytest.mark.parametrize(
    ("command", "path", "params"),
    [
        ("MAIL FROM:<>", "", MailParams()),
        ("MAIL FROM:<alice@example.net>", "alice@example.net", MailParams()),
        ("mail from: <alice@example.net>", "alice@example.net", MailParams()),
        ('MAIL FROM:<"john doe"@example.net>', '"john doe"@example.net', MailParams()),
        ('MAIL FROM:<"a\\"b>"@example.net>', '"a\\"b>"@example.net', MailParams()),
        ("MAIL FROM:<@relay.example,@hop.example:alice@example.net>", "alice@example.net", MailParams()),
        ("MAIL FROM:<alice@[192.0.2.7]>", "alice@[192.0.2.7]", MailParams()),
        (
            "MAIL FROM:<a@example.net> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2B314",
            "a@example.net",
            MailParams(size=1000, body="8BITMIME", ret="HDRS", envid="QQ+314"),
        ),
        ("MAIL FROM:<jös@exämple.net> SMTPUTF8", "jös@exämple.net", MailParams(smtputf8=True)),
        ("MAIL FROM:<a@example.net> body=7bit", "a@example.net", MailParams(body="7BIT")),
    ],
)  # fmt: skip
def test_mail_paths_and_parameters(command: str, path: str, params: MailParams) -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO client.example.net\r\n")
    assert h.feed(command.encode() + b"\r\n") == b"250 2.1.0 OK\r\n"
    assert h.events[-1] == MailFrom(path, params)
    assert h.conn.state is SMTPState.MAIL
    assert h.conn.mail_params == params


@pytest.mark.parametrize(
    ("command", "path", "params"),
    [
        ("RCPT TO:<postmaster>", "postmaster", RcptParams()),
        ("RCPT TO:<PostMaster>", "PostMaster", RcptParams()),
        ("RCPT TO:<Postmaster@example.org>", "Postmaster@example.org", RcptParams()),
        ("RCPT TO:<@hop.example:bob@example.org>", "bob@example.org", RcptParams()),
        ("RCPT TO:<bob@example.org> NOTIFY=NEVER", "bob@example.org", RcptParams(notify=("NEVER",))),
        (
            "RCPT TO:<bob@example.org> NOTIFY=success,delay ORCPT=rfc822;Bob+40Example.org",
            "bob@example.org",
            RcptParams(("SUCCESS", "DELAY"), OriginalRecipient("rfc822", "Bob@Example.org")),
        ),
    ],
)  # fmt: skip
def test_rcpt_paths_and_dsn_parameters(command: str, path: str, params: RcptParams) -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO client.example.net\r\nMAIL FROM:<>\r\n")
    assert h.feed(command.encode() + b"\r\n") == b"250 2.1.5 OK\r\n"
    assert h.events[-1] == RcptTo(path, params)
    assert h.conn.recipients == 1


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("RCPT bob@example.org", "501 5.5.4 Syntax: RCPT TO:<address>"),
        ("RCPT TO:<>", "501 5.1.3 Bad recipient address syntax '<>'"),
        ("RCPT TO:<bob@example.org", "501 5.1.3 Bad recipient address syntax '<bob@example.org'"),
        ("RCPT TO:<bob@example.org> NOTIFY=NEVER,SUCCESS", "501 5.5.4 Bad value in 'NOTIFY=NEVER,SUCCESS'"),
        ("RCPT TO:<bob@example.org> NOTIFY=SUCCESS,SUCCESS", "501 5.5.4 Bad value in 'NOTIFY=SUCCESS,SUCCESS'"),
        ("RCPT TO:<bob@example.org> ORCPT=bob@example.org", "501 5.5.4 Bad value in 'ORCPT=bob@example.org'"),
        # Regression: RFC 3461 section 4.2, the original recipient is printable.
        ("RCPT TO:<bob@example.org> ORCPT=rfc822;b+0A@example.org", "501 5.5.4 Bad value in 'ORCPT=rfc822;b+0A@example.org'"),
        ("RCPT TO:<bob@example.org> SIZE=1", "555 5.5.4 Unsupported parameter 'SIZE=1'"),
        ("RCPT TO:<bøb@example.org>", "553 5.6.7 Non-ASCII address 'b?b@example.org' needs SMTPUTF8"),
    ],
)  # fmt: skip
def test_rcpt_errors_name_the_offending_part(command: str, reply: str) -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO client.example.net\r\nMAIL FROM:<>\r\n")
    assert h.feed(command.encode() + b"\r\n").decode() == reply + "\r\n"
    assert h.conn.state is SMTPState.MAIL


def test_too_many_recipients_get_452_without_counting_as_errors() -> None:
    h = Harness(SMTPServerConfig(hostname=HOST, max_recipients=2, max_errors=1))
    run_transcript(
        h,
        """
        S: 220 mx.example.org ESMTP
        C: HELO client.example.net
        C: MAIL FROM:<a@example.net>
        C: RCPT TO:<b1@example.org>
        C: RCPT TO:<b2@example.org>
        C: RCPT TO:<b3@example.org>
        C: RCPT TO:<b4@example.org>
        S: 250 mx.example.org
        S: 250 2.1.0 OK
        S: 250 2.1.5 OK
        S: 250 2.1.5 OK
        S: 452 4.5.3 Too many recipients
        S: 452 4.5.3 Too many recipients
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        """,
    )
    assert h.conn.errors == 0


def test_rset_noop_vrfy_help_quit() -> None:
    h = Harness()
    run_transcript(
        h,
        """
        S: 220 mx.example.org ESMTP
        C: HELO client.example.net
        S: 250 mx.example.org
        C: MAIL FROM:<a@example.net>
        S: 250 2.1.0 OK
        C: RSET
        S: 250 2.0.0 OK
        C: RSET now
        S: 501 5.5.4 Syntax: RSET
        C: NOOP whatever
        S: 250 2.0.0 OK
        C: VRFY bob
        S: 252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery
        C: VRFY
        S: 501 5.5.4 Syntax: VRFY address
        C: EXPN staff
        S: 502 5.5.1 Command not implemented: 'EXPN'
        C: HELP
        S: 214 2.0.0 See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)
        C: XYZZY plugh
        S: 500 5.5.1 Command unrecognized: 'XYZZY'
        C: QUIT now
        S: 501 5.5.4 Syntax: QUIT
        C: quit
        S: 221 2.0.0 mx.example.org Service closing transmission channel
        """,
    )
    assert Verify("bob") in h.events
    assert h.conn.state is SMTPState.CLOSED
    assert h.conn.next_event().__class__.__name__ == "ConnectionClosed"


def test_vrfy_reply_is_the_applications_choice() -> None:
    def app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        if isinstance(event, Verify):
            return Reply(250, "Bob <bob@example.org>")
        return conn.default_reply(event)

    run_transcript(
        Harness(app=app),
        """
        S: 220 mx.example.org ESMTP
        C: VRFY bob
        S: 250 2.0.0 Bob <bob@example.org>
        """,
    )


def test_ehlo_in_a_transaction_resets_it() -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO a.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n")
    assert h.conn.state is SMTPState.RCPT
    h.feed(b"EHLO a.example\r\n")
    assert h.conn.state is SMTPState.READY
    assert h.conn.mail_params is None and h.conn.recipients == 0


def test_554_greeting_serves_only_quit() -> None:
    run_transcript(
        Harness(),
        """
        S: 554 mx.example.org no service for you
        C: EHLO client.example.net
        S: 503 5.5.1 No service here, send QUIT
        C: MAIL FROM:<a@example.net>
        S: 503 5.5.1 No service here, send QUIT
        C: QUIT
        S: 221 2.0.0 mx.example.org Service closing transmission channel
        """,
    )


def test_overlong_command_line_is_refused_without_buffering() -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO client.example.net\r\n")
    # 512 octets with CRLF is the limit (RFC 5321 section 4.5.3.1.4).
    exact = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(exact) == 512
    assert h.feed(exact) == b"250 2.0.0 OK\r\n"
    assert h.feed(b"NOOP " + b"x" * 506 + b"\r\n") == b"500 5.5.2 Line too long\r\n"
    # An endless line is dropped as it arrives, then answered once it ends.
    for _ in range(100):
        assert h.feed(b"y" * 10000) == b""
        assert len(h.conn._buf) <= h.conn._buf.max_line + 10000
    assert h.feed(b"\r\nNOOP\r\n") == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"


def test_mail_line_may_use_the_parameter_allowance() -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO client.example.net\r\n")
    envid = "x" * 100
    route = ",".join(f"@relay{i}.example" for i in range(20))
    line = f"MAIL FROM:<{route}:{'a' * 64}@example.net> RET=HDRS ENVID={envid} SIZE=1000\r\n"
    assert len(line) > 512
    assert h.feed(line.encode()) == b"250 2.1.0 OK\r\n"


def test_too_many_errors_close_with_421() -> None:
    h = Harness(SMTPServerConfig(hostname=HOST, max_errors=3))
    run_transcript(
        h,
        """
        S: 220 mx.example.org ESMTP
        C: BAD1
        S: 500 5.5.1 Command unrecognized: 'BAD1'
        C: BAD2
        C: BAD3
        C: NOOP
        S: 500 5.5.1 Command unrecognized: 'BAD2'
        S: 421 4.7.0 mx.example.org Too many errors, closing
        """,
    )
    assert h.conn.state is SMTPState.CLOSED
    closing = h.events[-1]
    assert isinstance(closing, ProtocolViolation) and closing.close


@pytest.mark.parametrize(
    ("raw", "reply"),
    [
        (b"NOOP \x00\r\n", b"500 5.5.2 Control character in command\r\n"),
        (b"NOOP \xff\r\n", b"500 5.5.2 Invalid UTF-8 in command\r\n"),
        (b"NO\rOP\r\n", b"500 5.5.2 Control character in command\r\n"),
    ],
)
def test_undecodable_commands(raw: bytes, reply: bytes) -> None:
    h = Harness()
    h.greet()
    assert h.feed(raw) == reply


def test_peer_close_processes_buffered_commands_then_closes() -> None:
    h = Harness()
    h.greet()
    h.conn.receive_data(b"HELO a.example\r\nNOOP\r\nincomplete")
    h.conn.receive_data(b"")
    assert h.pump() == b"250 mx.example.org\r\n250 2.0.0 OK\r\n"
    assert type(h.events[-1]).__name__ == "ConnectionClosed"
    assert h.conn.state is SMTPState.CLOSED


def test_application_misuse_raises_local_protocol_error() -> None:
    conn = ServerConnection(SMTPServerConfig(hostname=HOST), nonce="n")
    with pytest.raises(LocalProtocolError):
        conn.next_event()  # greeting first
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "not a greeting"))
    conn.send(Reply(220, "hi"))
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "nobody asked"))
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\nNOOP\r\n")
    assert isinstance(conn.next_event(), ProtocolViolation)
    with pytest.raises(LocalProtocolError):
        conn.next_event()  # reply to the violation first
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "a violation needs an error"))
    conn.send(Reply(503, "sequence"))
    conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(354, "not for NOOP"))
    conn.send(Reply(250, "ok"))
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"QUIT\r\n")
    conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "QUIT needs 221"))
    with pytest.raises(LocalProtocolError):
        Reply(600, "no such code")
    with pytest.raises(LocalProtocolError):
        Reply(250, "x", "5.0.0")  # class must match
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(221, "x" * 600))  # RFC 5321 section 4.5.3.1.5


def test_smtputf8_without_8bitmime_is_a_configuration_error() -> None:
    # Regression: EHLO offered SMTPUTF8 without 8BITMIME, which RFC 6531 section 3.1
    # (item 8) forbids.
    with pytest.raises(LocalProtocolError):
        SMTPServerConfig(hostname=HOST, eightbitmime=False)
    conn = ServerConnection(
        SMTPServerConfig(hostname=HOST, eightbitmime=False, smtputf8=False), nonce="n"
    )
    assert "8BITMIME" not in conn.extensions() and "SMTPUTF8" not in conn.extensions()


def test_hostname_must_be_ascii_for_the_ehlo_reply() -> None:
    # Regression: a U-label hostname went into the EHLO reply, where RFC 6531 section
    # 3.7.1 requires LDH labels or A-labels.
    with pytest.raises(LocalProtocolError):
        SMTPServerConfig(hostname="mäil.example")
    assert SMTPServerConfig(hostname="xn--mil-ela.example").hostname == "xn--mil-ela.example"


def test_421_may_be_sent_at_any_time_and_closes() -> None:
    h = Harness()
    h.greet()
    h.feed(b"HELO a.example\r\n")
    assert h.conn.send(Reply(421, "shutting down")) == b"421 4.0.0 shutting down\r\n"
    assert h.conn.state is SMTPState.CLOSED


def test_multiline_replies_and_application_enhanced_codes() -> None:
    h = Harness()
    h.greet()
    h.conn.receive_data(b"HELO a.example\r\nMAIL FROM:<a@example.net>\r\n")
    h.conn.send(h.conn.default_reply(h.conn.next_event()))  # type: ignore[arg-type]
    assert isinstance(h.conn.next_event(), MailFrom)
    out = h.conn.send(Reply(550, "Sender rejected\nsee https://example.org/policy", "5.7.1"))
    assert out == (b"550-5.7.1 Sender rejected\r\n550 5.7.1 see https://example.org/policy\r\n")
    assert h.conn.state is SMTPState.READY


def test_enhanced_codes_can_be_turned_off() -> None:
    h = Harness(SMTPServerConfig(hostname=HOST, enhanced_status_codes=False))
    h.greet()
    out = h.feed(b"EHLO a.example\r\nNOOP\r\n")
    assert b"ENHANCEDSTATUSCODES" not in out
    assert out.endswith(b"\r\n250 OK\r\n")


def test_config_validates_limits() -> None:
    with pytest.raises(LocalProtocolError):
        SMTPServerConfig(hostname=HOST, max_command_line=100)
    with pytest.raises(LocalProtocolError):
        SMTPServerConfig(hostname=HOST, auth_mechanisms=("GSSAPI",))
    with pytest.raises(LocalProtocolError):
        SMTPServerConfig(hostname=HOST, bare_newlines="allow")
    with pytest.raises(LocalProtocolError):
        SMTPServerConfig(hostname="two words")


def test_auth_not_configured_is_not_implemented() -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO a.example\r\n")
    assert h.feed(b"AUTH PLAIN\r\n") == b"502 5.5.1 AUTH not available\r\n"


def test_events_with_a_reply_can_be_sent_as_they_are() -> None:
    conn = ServerConnection(SMTPServerConfig(hostname=HOST), nonce="n")
    conn.send(Reply(220, "hi"))
    conn.receive_data(b"FROB\r\n")
    event = conn.next_event()
    assert isinstance(event, ProtocolViolation)
    assert conn.send(event) == b"500 5.5.1 Command unrecognized: 'FROB'\r\n"


def test_smtputf8_transaction_and_utf8_helo() -> None:
    h = Harness()
    h.greet()
    assert h.feed("EHLO bücher.example\r\n".encode()).startswith(b"250-mx.example.org\r\n")
    h.feed("MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n".encode())
    assert h.conn.received_protocol == "UTF8SMTP"
    assert h.feed("RCPT TO:<zoë@example.org>\r\n".encode()) == b"250 2.1.5 OK\r\n"
    assert h.events[-1] == RcptTo("zoë@example.org", RcptParams())


def test_utf8_helo_refused_when_smtputf8_is_off() -> None:
    h = Harness(SMTPServerConfig(hostname=HOST, smtputf8=False))
    h.greet()
    assert h.feed("EHLO bücher.example\r\n".encode()) == (
        b"501 Invalid domain name 'b?cher.example'\r\n"
    )
    h.feed(b"EHLO a.example\r\n")
    assert h.feed(b"MAIL FROM:<a@example.net> SMTPUTF8\r\n") == (
        b"555 5.5.4 Unsupported parameter 'SMTPUTF8'\r\n"
    )


def test_size_is_advertised_bare_without_a_limit() -> None:
    h = Harness(SMTPServerConfig(hostname=HOST, max_message_size=0, pipelining=False))
    h.greet()
    out = h.feed(b"EHLO a.example\r\n")
    assert b"250-SIZE\r\n" in out and b"PIPELINING" not in out
    assert h.feed(b"MAIL FROM:<a@example.net> SIZE=999999999999\r\n") == b"250 2.1.0 OK\r\n"


def test_empty_hello_reply_text_names_the_server() -> None:
    def app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        return Reply(250) if isinstance(event, Hello) else conn.default_reply(event)

    h = Harness(SMTPServerConfig(hostname=HOST, pipelining=False), app=app)
    h.greet()
    assert h.feed(b"HELO a.example\r\n") == b"250 mx.example.org\r\n"
    assert h.feed(b"EHLO a.example\r\n").startswith(b"250-mx.example.org\r\n250-SIZE ")


def test_pipelined_commands_after_a_lone_line() -> None:
    h = Harness()
    h.greet()
    out = h.feed(b"EHLO c\r\n")
    assert out.endswith(b"250 DSN\r\n")
    out = h.feed(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    assert out == b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"


def test_absent_parameters_equal_freshly_built_ones() -> None:
    h = Harness()
    h.greet()
    h.feed(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n")
    mail = next(e for e in h.events if isinstance(e, MailFrom))
    rcpt = next(e for e in h.events if isinstance(e, RcptTo))
    assert mail.params == MailParams() and rcpt.params == RcptParams()
    assert h.conn.mail_params == MailParams()
