"""End to end over real sockets with Python's smtplib and poplib.

Two ways to run the server, each on both anyio backends (asyncio and trio):

- in process: ``MailServer`` with the real session factory in the test's event loop,
  the blocking clients in a worker thread;
- as a user would: ``nosend serve --config mail.cfg --backend ...`` in a subprocess on
  free 127.0.0.1 ports, stopped by its own pid.
"""

from __future__ import annotations

import email
import poplib
import smtplib
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import pytest

from nosend_runners.anyio_server import MailServer
from nosend_runners.serve.settings import Listen, ServerSettings
from nosend_runners.session.services import session_factory
from nosend_store.config import Config
from tests.runners.conftest import (
    CertFiles,
    fast_timeouts,
    free_port,
    port_of,
    running_server,
    stop_process,
    wait_for_port,
)
from tests.runners.session_support import (
    PASSWORDS,
    captured_log,
    config_text,
    make_config,
    messages,
    queued,
)

T = TypeVar("T")

MESSAGE = (
    "From: Someone <someone@remote.example>\r\n"
    "To: alice@example.test\r\n"
    "Subject: over the wire\r\n"
    "Message-ID: <e2e-1@remote.example>\r\n"
    "\r\n"
    "Hello Alice.\r\n"
    ".A line starting with a dot.\r\n"
)


def settings_for(config: Config, tls: CertFiles | None = None) -> ServerSettings:
    listen = tuple(Listen(service, "127.0.0.1", 0) for service in ("smtp", "submission", "pop3"))
    settings = ServerSettings(hostname="mx.example.test", listen=listen, timeouts=fast_timeouts())
    if tls is not None:
        settings = replace(settings, tls_cert=tls.cert, tls_key=tls.key)
    return settings


@asynccontextmanager
async def mail_server(config: Config, tls: CertFiles | None = None) -> AsyncIterator[MailServer]:
    async with running_server(settings_for(config, tls), session_factory, config=config) as s:
        yield s


async def in_thread(fn: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(fn)


def send_and_fetch(smtp_port: int, pop3_port: int) -> tuple[list[bytes], int]:
    """smtplib delivers to alice and the team alias; poplib reads and deletes it."""
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        refused = smtp.sendmail(
            "someone@remote.example", ["alice@example.test", "team@example.test"], MESSAGE
        )
        assert refused == {}
    pop = poplib.POP3("127.0.0.1", pop3_port, timeout=10)
    try:
        pop.user("alice")
        pop.pass_(PASSWORDS["alice"])
        count, size = pop.stat()
        assert count == 1
        uid = pop.uidl(1).split()[2]
        _, lines, octets = pop.retr(1)
        assert octets == size
        pop.dele(1)
        pop.quit()
    except BaseException:
        pop.close()
        raise
    assert uid
    return lines, octets


@pytest.mark.anyio
async def test_smtplib_to_poplib_in_process(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with mail_server(config) as server:
        smtp, pop3 = port_of(server, "smtp"), port_of(server, "pop3")
        lines, _ = await in_thread(lambda: send_and_fetch(smtp, pop3))
    parsed = email.message_from_bytes(b"\r\n".join(lines))
    assert parsed["Subject"] == "over the wire"
    assert parsed["Received"].startswith("from ") and "by mx.example.test" in parsed["Received"]
    assert lines[-1] == b".A line starting with a dot."
    assert messages(config, "alice") == []  # deleted at QUIT
    assert len(messages(config, "bob")) == 1  # one copy through the alias


def relay_refused(smtp_port: int) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            smtp.sendmail("a@example.test", ["victim@remote.example"], MESSAGE)
        code, text = info.value.recipients["victim@remote.example"]
        assert code == 550 and b"5.7.1" in text
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            smtp.sendmail("a@example.test", ["nobody@example.test"], MESSAGE)
        code, text = info.value.recipients["nobody@example.test"]
        assert code == 550 and b"5.1.1" in text


def submit(submission_port: int, starttls: ssl.SSLContext | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", submission_port, timeout=10) as smtp:
        if starttls is not None:
            smtp.starttls(context=starttls)
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            smtp.sendmail("alice@example.test", ["far@remote.example"], "Subject: x\r\n\r\nx\r\n")
        assert info.value.smtp_code == 530
        smtp.login("alice", PASSWORDS["alice"])
        smtp.sendmail(
            "alice@example.test", ["far@remote.example"], "Subject: out\r\n\r\nto the world\r\n"
        )


@pytest.mark.anyio
async def test_relay_refused_and_submission_queues(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with captured_log() as log:
        async with mail_server(config) as server:
            await in_thread(lambda: relay_refused(port_of(server, "smtp")))
            await in_thread(lambda: submit(port_of(server, "submission")))
    [(entry, content)] = queued(config)
    assert entry.sender == "alice@example.test"
    assert [r.address for r in entry.recipients] == ["far@remote.example"]
    head = content.split(b"\n\n")[0]
    assert b"with ESMTPA" in head and b"\nDate: " in head and b"\nMessage-ID: " in head
    text = "\n".join(log)
    assert "event=auth" in text and "user=alice" in text and "event=accepted" in text
    assert "event=rcpt_rejected" in text
    assert PASSWORDS["alice"] not in text
    # smtplib tried CRAM-MD5 first (alice has no shared secret): not a counted failure.
    assert "failures=" not in text


def deliver_over_tls(smtp_port: int, context: ssl.SSLContext) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.starttls(context=context)
        smtp.sendmail("x@remote.example", ["alice@example.test"], MESSAGE)


@pytest.mark.anyio
async def test_starttls_and_stls_with_a_real_certificate(
    tmp_path: Path, tls_cert: CertFiles
) -> None:
    config = make_config(tmp_path)
    context = tls_cert.client_context()

    def fetch(pop3_port: int) -> int:
        pop = poplib.POP3("127.0.0.1", pop3_port, timeout=10)
        pop.stls(context)
        pop.user("alice")
        pop.pass_(PASSWORDS["alice"])
        count = pop.stat()[0]
        pop.quit()
        return count

    async with mail_server(config, tls_cert) as server:
        await in_thread(lambda: submit(port_of(server, "submission"), context))
        await in_thread(lambda: deliver_over_tls(port_of(server, "smtp"), context))
        assert await in_thread(lambda: fetch(port_of(server, "pop3"))) == 1
    [(_, content)] = queued(config)
    assert b"with ESMTPSA (TLSv1." in content
    [alice] = messages(config, "alice")
    assert b"with ESMTPS (TLSv1." in alice


@pytest.mark.anyio
async def test_second_pop3_login_is_in_use(tmp_path: Path) -> None:
    config = make_config(tmp_path)

    def two_logins(port: int) -> str:
        first = poplib.POP3("127.0.0.1", port, timeout=10)
        first.user("bob")
        first.pass_(PASSWORDS["bob"])
        second = poplib.POP3("127.0.0.1", port, timeout=10)
        second.user("bob")
        try:
            second.pass_(PASSWORDS["bob"])
        except poplib.error_proto as exc:
            message = str(exc)
        else:  # pragma: no cover - the assertion below reports it
            message = "logged in twice"
        second.quit()
        first.quit()
        return message

    async with mail_server(config) as server:
        message = await in_thread(lambda: two_logins(port_of(server, "pop3")))
    assert "[IN-USE]" in message


# -- nosend serve as a subprocess ---------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Config, dict]]:
    """``nosend serve`` on free ports with the test mail.cfg; yields (config, ports)."""
    ports = {"smtp": free_port(), "submission": free_port(), "pop3": free_port()}
    path = tmp_path / "mail.cfg"
    path.write_text(config_text(tmp_path / "data", ports=ports))
    path.chmod(0o600)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nosend", "serve", "--config", str(path)]
        + ["--backend", str(request.param)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for port in ports.values():
            wait_for_port(port)
        from nosend_store.config import load_config

        yield load_config(path), ports
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()


def test_nosend_serve_end_to_end(served: tuple[Config, dict]) -> None:
    config, ports = served
    lines, octets = send_and_fetch(ports["smtp"], ports["pop3"])
    assert lines[-1] == b".A line starting with a dot." and octets > len(MESSAGE)
    relay_refused(ports["smtp"])
    submit(ports["submission"])
    assert messages(config, "alice") == []
    assert len(messages(config, "bob")) == 1
    [(entry, _)] = queued(config)
    assert [r.address for r in entry.recipients] == ["far@remote.example"]


# -- nosend inetd on a pipe pair --------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_nosend_inetd_smtp_then_pop3(tmp_path: Path, backend: str) -> None:
    """``nosend inetd smtp`` and ``nosend inetd pop3`` speak on stdin/stdout (the way
    socat EXEC:...,pipes runs them), one session each."""
    path = tmp_path / "mail.cfg"
    path.write_text(config_text(tmp_path / "data", "auth_requires_tls = no"))
    path.chmod(0o600)

    def inetd(service: str, script: bytes) -> bytes:
        done = subprocess.run(
            [sys.executable, "-m", "nosend", "inetd", service, "--config", str(path)]
            + ["--backend", backend],
            input=script,
            capture_output=True,
            timeout=20,
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout

    out = inetd(
        "smtp",
        b"EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
        + MESSAGE.replace("\r\n.", "\r\n..").encode()  # dot-stuffed (RFC 5321 4.5.2)
        + b".\r\nQUIT\r\n",
    )
    codes = [line[:3] for line in out.split(b"\r\n") if line[:1] != b"" and line[3:4] == b" "]
    assert codes == [b"220", b"250", b"250", b"250", b"354", b"250", b"221"]
    out = inetd("pop3", f"USER bob\r\nPASS {PASSWORDS['bob']}\r\nRETR 1\r\nQUIT\r\n".encode())
    assert b"+OK maildrop has 1 message" in out
    assert b"\r\nSubject: over the wire\r\n" in out and b"\r\n..A line starting" in out
    assert out.endswith(b".\r\n+OK mx.example.test POP3 server signing off (1 message left)\r\n")


def test_default_configuration_works_out_of_the_box(tmp_path: Path) -> None:
    """The mail.cfg a first run writes (one domain, one mailbox, loopback listeners, no
    certificate): a local client submits with AUTH and reads its mail by POP3."""
    from tests.runners.conftest import write_config

    ports = {"smtp": free_port(), "submission": free_port(), "pop3": free_port()}
    path = write_config(tmp_path, *(f"{s}_listen = 127.0.0.1:{p}" for s, p in ports.items()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nosend", "serve", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for port in ports.values():
            wait_for_port(port)
        with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=10) as smtp:
            smtp.login("user", "test-password-1")
            smtp.sendmail("user@localhost", ["user@localhost"], "Subject: me\r\n\r\nhi\r\n")
        pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=10)
        pop.user("user@localhost")
        pop.pass_("test-password-1")
        _, lines, _ = pop.retr(1)
        pop.quit()
    finally:
        stop_process(proc)
    parsed = email.message_from_bytes(b"\r\n".join(lines))
    assert parsed["Subject"] == "me" and parsed["Message-ID"] and parsed["Date"]
    assert parsed["Return-Path"] == "<user@localhost>"
