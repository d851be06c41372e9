"""fetchmail (the Debian package) retrieves from ``nosend serve`` over POP3.

fetchmail checks the test certificate (``sslcertck`` with ``sslcertfile``), forces STLS
on the plain port or speaks implicit TLS on the POP3S port, hands each message to an MDA
that writes one file per message, and remembers UIDLs in its idfile when it keeps mail.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import (
    SAMPLE_MESSAGES,
    NosendServer,
    ServerFactory,
)

pytestmark = pytest.mark.interop

# fetchmail exit codes (fetchmail(1), EXIT CODES).
FETCHED = 0
NO_MAIL = 1


def run_fetchmail(
    server: NosendServer, work: Path, *, keep: bool, implicit_tls: bool = False
) -> tuple[int, list[bytes], str]:
    """One fetchmail run for alice; returns (exit code, delivered messages, output)."""
    fetchmail = require_tool("fetchmail")
    out = work / "delivered"
    out.mkdir(exist_ok=True)
    before = set(os.listdir(out))
    service = "pop3s" if implicit_tls else "pop3"
    rc = work / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll localhost protocol pop3 port {server.port(service)}"
        f"{' uidl' if keep else ''}\n"
        f'  user "alice" there with password "{server.users["alice"]}" is "root" here\n'
        f"  {'ssl' if implicit_tls else 'sslproto tls1.2+'}\n"
        f'  sslcertck sslcertfile "{server.tls.cert if server.tls else ""}"\n'
        f"  {'keep' if keep else 'nokeep'}\n"
        # One file per message; fetchmail runs the MDA through /bin/sh.
        f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n"
    )
    rc.chmod(0o600)
    # --pidfile: as root fetchmail would lock /var/run/fetchmail.pid, shared by every
    # concurrent run on the machine.
    result = subprocess.run(
        [
            fetchmail,
            "-f",
            str(rc),
            "-i",
            str(work / "fetchids"),
            "--pidfile",
            str(work / "fetchmail.pid"),
            "--nosyslog",
            "-v",
        ],
        capture_output=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "HOME": str(work), "FETCHMAILHOME": str(work)},
    )
    new = sorted(set(os.listdir(out)) - before)
    delivered = [(out / name).read_bytes() for name in new]
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    return result.returncode, delivered, output


def body_of(message: bytes) -> bytes:
    """The part of a sample message after its Subject line (fetchmail prepends headers)."""
    return message[message.index(b"Subject:") :]


def assert_same_messages(fetched: list[bytes], expected: list[bytes], output: str) -> None:
    assert len(fetched) == len(expected), output
    got = sorted(body_of(m) for m in fetched)
    assert got == sorted(body_of(m) for m in expected), output


@pytest.fixture
def pop3_server(nosend_factory: ServerFactory) -> NosendServer:
    return nosend_factory(services=("pop3", "pop3s"))


def test_stls_keep_then_uidl_fetches_only_new_mail(
    pop3_server: NosendServer, tmp_path: Path
) -> None:
    for message in SAMPLE_MESSAGES:
        pop3_server.deliver_directly("alice", message)

    code, fetched, output = run_fetchmail(pop3_server, tmp_path, keep=True)
    assert code == FETCHED, output
    assert_same_messages(fetched, list(SAMPLE_MESSAGES), output)
    assert "STLS" in output  # the plain port was upgraded before the password went out
    assert len(pop3_server.messages("alice")) == len(SAMPLE_MESSAGES)  # kept

    code, fetched, output = run_fetchmail(pop3_server, tmp_path, keep=True)
    assert code == NO_MAIL, output
    assert fetched == []

    extra = b"From: a@b.test\nTo: alice@nosend.test\nSubject: later\n\nnew one\n"
    pop3_server.deliver_directly("alice", extra)
    code, fetched, output = run_fetchmail(pop3_server, tmp_path, keep=True)
    assert code == FETCHED, output
    assert_same_messages(fetched, [extra], output)


def test_fetch_without_keep_deletes_on_the_server(
    pop3_server: NosendServer, tmp_path: Path
) -> None:
    for message in SAMPLE_MESSAGES[:3]:
        pop3_server.deliver_directly("alice", message)
    pop3_server.deliver_directly("bob", SAMPLE_MESSAGES[0])

    code, fetched, output = run_fetchmail(pop3_server, tmp_path, keep=False)
    assert code == FETCHED, output
    assert_same_messages(fetched, list(SAMPLE_MESSAGES[:3]), output)
    assert pop3_server.messages("alice") == []
    assert len(pop3_server.messages("bob")) == 1  # another mailbox is untouched

    code, fetched, output = run_fetchmail(pop3_server, tmp_path, keep=False)
    assert code == NO_MAIL, output


def test_implicit_tls_pop3s(pop3_server: NosendServer, tmp_path: Path) -> None:
    pop3_server.deliver_directly("alice", SAMPLE_MESSAGES[1])
    code, fetched, output = run_fetchmail(pop3_server, tmp_path, keep=True, implicit_tls=True)
    assert code == FETCHED, output
    assert_same_messages(fetched, [SAMPLE_MESSAGES[1]], output)


def test_wrong_password_is_an_authentication_failure(
    nosend_factory: ServerFactory, tmp_path: Path
) -> None:
    server = nosend_factory(services=("pop3", "pop3s"))
    server.deliver_directly("alice", SAMPLE_MESSAGES[0])
    server.users = {"alice": "not-the-password"}  # what the client will send
    code, fetched, output = run_fetchmail(server, tmp_path, keep=True)
    assert code == 3, output  # fetchmail: 3 = authentication failed
    assert fetched == []
    assert len(server.messages("alice")) == 1
