"""swaks (the Debian package) delivers through ``nosend serve``.

Plain SMTP with and without PIPELINING, several recipients and an alias, STARTTLS with
certificate verification against the test certificate, AUTH PLAIN and LOGIN on the
submission port, implicit TLS on SMTPS, and the refusals a real client must see (wrong
password, relay from an untrusted network). Every delivery is checked in the Maildir.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import DOMAIN, NosendServer, ServerFactory

pytestmark = pytest.mark.interop

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
SMTP = ("smtp", "submission", "smtps")

# swaks exit codes (swaks(1), EXIT CODES).
OK = 0
NO_RCPT = 24
AUTH_FAILED = 28


def swaks(server: NosendServer, *args: str, service: str = "smtp") -> tuple[int, str]:
    """Run swaks against ``service``; returns (exit code, transcript)."""
    program = require_tool("swaks")
    assert server.tls is not None
    result = subprocess.run(
        [
            program,
            "--server", "127.0.0.1", "--port", str(server.port(service)),
            "--helo", "client.test",
            "--tls-ca-path", str(server.tls.cert),
            "--tls-sni", "localhost",
            "--timeout", "15",
            *args,
        ],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={"PATH": os.environ["PATH"], "HOME": str(server.root)},
    )  # fmt: skip
    return result.returncode, result.stdout.decode(errors="replace") + result.stderr.decode(
        errors="replace"
    )


@pytest.fixture
def server(nosend_factory: ServerFactory) -> NosendServer:
    return nosend_factory(services=SMTP)


def only_message(server: NosendServer, mailbox: str) -> bytes:
    messages = server.wait_for_messages(mailbox, 1)
    assert len(messages) == 1, messages
    return messages[0]


def test_plain_delivery_lands_in_the_maildir(server: NosendServer) -> None:
    code, out = swaks(
        server,
        "--to", ALICE, "--from", "friend@remote.example",
        "--header", "Subject: plain delivery",
        "--body", "Hello Alice,\n.leading dot\n..two dots\nbye\n",
    )  # fmt: skip
    assert code == OK, out
    message = only_message(server, "alice")
    # Trace fields first (RFC 5321 section 4.4: Return-Path at final delivery, then
    # Received), then the client's message, with LF line ends.
    assert message.startswith(
        b"Return-Path: <friend@remote.example>\nReceived: from client.test"
    ), message
    assert b"for <alice@nosend.test>" in message
    assert b"\nSubject: plain delivery\n" in message
    # swaks ends its body with blank lines of its own.
    body = b"\n\nHello Alice,\n.leading dot\n..two dots\nbye"
    assert message.rstrip(b"\n").endswith(body), message
    assert b"\r" not in message
    assert server.messages("bob") == []


def test_pipelining_with_several_recipients_and_an_alias(server: NosendServer) -> None:
    code, out = swaks(
        server,
        "--pipeline",
        "--to", f"{ALICE},{BOB},crew@{DOMAIN},Alice+sails@{DOMAIN}",
        "--from", "friend@remote.example",
        "--header", "Subject: pipelined",
    )  # fmt: skip
    assert code == OK, out
    assert "PIPELINING" in out
    # One copy per mailbox, however many addresses led there.
    for mailbox in ("alice", "bob"):
        assert b"Subject: pipelined" in only_message(server, mailbox)


def test_pipelined_transaction_with_one_bad_recipient(server: NosendServer) -> None:
    code, out = swaks(
        server,
        "--pipeline",
        "--to", f"nobody@{DOMAIN},{BOB}",
        "--from", "friend@remote.example",
        "--header", "Subject: partly",
    )  # fmt: skip
    assert code == OK, out
    assert "550 5.1.1" in out
    assert b"Subject: partly" in only_message(server, "bob")


def test_starttls_and_auth_plain_on_submission(server: NosendServer) -> None:
    code, out = swaks(
        server,
        "--tls", "--tls-verify",
        "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", server.users["alice"],
        "--to", BOB, "--from", ALICE,
        "--header", "Subject: submitted",
        "--add-header", "X-Check: yes",
        service="submission",
    )  # fmt: skip
    assert code == OK, out
    assert "235 " in out
    message = only_message(server, "bob")
    assert b"Subject: submitted" in message
    assert b"with ESMTPSA" in message or b"ESMTPS" in message  # RFC 3848 protocol word
    assert server.users["alice"].encode() not in message


def test_starttls_auth_login_with_pipelining(server: NosendServer) -> None:
    code, out = swaks(
        server,
        "--tls", "--tls-verify", "--pipeline",
        "--auth", "LOGIN", "--auth-user", ALICE, "--auth-password", server.users["alice"],
        "--to", f"{BOB},{ALICE}", "--from", ALICE,
        "--header", "Subject: login",
        service="submission",
    )  # fmt: skip
    assert code == OK, out
    for mailbox in ("alice", "bob"):
        assert b"Subject: login" in only_message(server, mailbox)


def test_implicit_tls_smtps(server: NosendServer) -> None:
    code, out = swaks(
        server,
        "--tls-on-connect", "--tls-verify",
        "--auth", "PLAIN", "--auth-user", "bob", "--auth-password", server.users["bob"],
        "--to", ALICE, "--from", BOB,
        "--header", "Subject: over smtps",
        service="smtps",
    )  # fmt: skip
    assert code == OK, out
    assert b"Subject: over smtps" in only_message(server, "alice")


def test_submission_adds_date_and_message_id_when_missing(server: NosendServer) -> None:
    code, out = swaks(
        server,
        "--tls", "--tls-verify",
        "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", server.users["alice"],
        "--to", BOB, "--from", ALICE,
        # Replace swaks' whole default message: no Date:, no Message-Id:.
        "--data", "From: alice@nosend.test\nTo: bob@nosend.test\nSubject: bare\n\nhi\n",
        service="submission",
    )  # fmt: skip
    assert code == OK, out
    message = only_message(server, "bob")
    headers = message.split(b"\n\n", 1)[0].lower()
    assert b"\ndate: " in headers and b"\nmessage-id: <" in headers, message


def test_wrong_password_is_refused(server: NosendServer) -> None:
    code, out = swaks(
        server,
        "--tls", "--tls-verify",
        "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "not-it",
        "--to", BOB, "--from", ALICE,
        service="submission",
    )  # fmt: skip
    assert code == AUTH_FAILED, out
    assert "535 5.7.8" in out
    assert server.messages("bob") == []


def test_relay_from_an_untrusted_network_is_refused(nosend_factory: ServerFactory) -> None:
    server = nosend_factory(services=SMTP, trusted_networks="198.51.100.0/24")
    code, out = swaks(server, "--to", "victim@remote.example", "--from", "spammer@remote.example")
    assert code == NO_RCPT, out
    assert "550 5.7.1" in out
    assert server.queue_files() == []


def test_a_one_megabyte_body_arrives_whole(server: NosendServer, tmp_path: Path) -> None:
    lines = [f"line {i:06d} " + "abcdefghij" * 9 for i in range(10_000)]
    lines[500] = "." + lines[500]  # a dot to stuff in the middle
    body = "\n".join(lines) + "\n"
    (tmp_path / "body.txt").write_text(body)
    code, out = swaks(
        server,
        "--to", ALICE, "--from", "friend@remote.example",
        "--header", "Subject: big",
        "--body", f"@{tmp_path / 'body.txt'}",
        "--silent", "2",
    )  # fmt: skip
    assert code == OK, out
    message = only_message(server, "alice")
    assert message.rstrip(b"\n").endswith(b"\n\n" + body.encode().rstrip(b"\n"))
    assert len(message) > 1_000_000


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_round_trip_swaks_in_fetchmail_out(
    nosend_factory: ServerFactory, backend: str, tmp_path: Path
) -> None:
    """The whole server on either event loop: submitted over STARTTLS+AUTH, fetched over
    STLS, deleted at QUIT."""
    from tests.interop.test_fetchmail import run_fetchmail  # noqa: PLC0415

    server = nosend_factory(services=("submission", "pop3"), backend=backend)
    assert f"--backend {backend}" in " ".join(server.proc.args if server.proc else [])
    code, out = swaks(
        server,
        "--tls", "--tls-verify", "--pipeline",
        "--auth", "PLAIN", "--auth-user", "bob", "--auth-password", server.users["bob"],
        "--to", ALICE, "--from", BOB,
        "--header", f"Subject: round trip on {backend}",
        "--body", "one\n.two\n..three\n",
        service="submission",
    )  # fmt: skip
    assert code == OK, out
    assert len(server.wait_for_messages("alice", 1)) == 1
    work = tmp_path / "fetch"
    work.mkdir()
    code, fetched, output = run_fetchmail(server, work, keep=False)
    assert code == 0, output
    assert len(fetched) == 1
    assert f"Subject: round trip on {backend}".encode() in fetched[0]
    assert b"\n\none\n.two\n..three\n" in fetched[0]
    assert server.messages("alice") == []
