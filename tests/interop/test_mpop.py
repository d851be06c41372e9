"""mpop (the Debian package) retrieves from ``nosend serve`` into a local Maildir.

mpop trusts exactly the test certificate (``tls_trust_file``), uses STLS on the plain
port (``tls_starttls on``) or implicit TLS on POP3S, and keeps its UIDL list in a
private file, so a second run with ``keep on`` must fetch nothing new.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import SAMPLE_MESSAGES, NosendServer, ServerFactory

pytestmark = pytest.mark.interop


def run_mpop(
    server: NosendServer,
    work: Path,
    *,
    keep: bool,
    implicit_tls: bool = False,
    password: str | None = None,
) -> tuple[int, list[bytes], str]:
    """One mpop run for alice; returns (exit code, newly delivered messages, output)."""
    mpop = require_tool("mpop")
    local = work / "Local"
    for sub in ("tmp", "new", "cur"):
        (local / sub).mkdir(parents=True, exist_ok=True)
    before = {p.name for p in (local / "new").iterdir()}
    assert server.tls is not None
    conf = work / "mpoprc"
    conf.write_text(
        "defaults\n"
        "tls on\n"
        f"tls_starttls {'off' if implicit_tls else 'on'}\n"
        f"tls_trust_file {server.tls.cert}\n"
        "auth user\n"
        f"uidls_file {work / 'uidls'}\n"
        f"delivery maildir {local}\n"
        f"keep {'on' if keep else 'off'}\n"
        "account alice\n"
        "host localhost\n"
        f"port {server.port('pop3s' if implicit_tls else 'pop3')}\n"
        "user alice\n"
        f"password {password or server.users['alice']}\n"
    )
    conf.chmod(0o600)
    result = subprocess.run(
        [mpop, "-C", str(conf), "--quiet", "alice"],
        capture_output=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "HOME": str(work)},
    )
    new = sorted(p for p in (local / "new").iterdir() if p.name not in before)
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    return result.returncode, [p.read_bytes() for p in new], output


def assert_same_messages(fetched: list[bytes], expected: list[bytes], output: str) -> None:
    # mpop adds nothing to a message delivered to a Maildir except a Received: line at
    # most; compare from the first sample header on, byte for byte.
    got = sorted(m[m.index(b"From: ") :] for m in fetched)
    assert got == sorted(expected), output


@pytest.fixture
def pop3_server(nosend_factory: ServerFactory) -> NosendServer:
    return nosend_factory(services=("pop3", "pop3s"))


def test_stls_keep_then_uidl_fetches_only_new_mail(
    pop3_server: NosendServer, tmp_path: Path
) -> None:
    for message in SAMPLE_MESSAGES:
        pop3_server.deliver_directly("alice", message)

    code, fetched, output = run_mpop(pop3_server, tmp_path, keep=True)
    assert code == 0, output
    assert_same_messages(fetched, list(SAMPLE_MESSAGES), output)
    assert len(pop3_server.messages("alice")) == len(SAMPLE_MESSAGES)

    code, fetched, output = run_mpop(pop3_server, tmp_path, keep=True)
    assert code == 0, output
    assert fetched == []

    extra = b"From: a@b.test\nTo: alice@nosend.test\nSubject: later\n\nnew one\n"
    pop3_server.deliver_directly("alice", extra)
    code, fetched, output = run_mpop(pop3_server, tmp_path, keep=True)
    assert code == 0, output
    assert_same_messages(fetched, [extra], output)


def test_fetch_without_keep_deletes_on_the_server(
    pop3_server: NosendServer, tmp_path: Path
) -> None:
    for message in SAMPLE_MESSAGES:
        pop3_server.deliver_directly("alice", message)
    code, fetched, output = run_mpop(pop3_server, tmp_path, keep=False)
    assert code == 0, output
    assert_same_messages(fetched, list(SAMPLE_MESSAGES), output)
    assert pop3_server.messages("alice") == []


def test_implicit_tls_pop3s(pop3_server: NosendServer, tmp_path: Path) -> None:
    pop3_server.deliver_directly("alice", SAMPLE_MESSAGES[2])
    code, fetched, output = run_mpop(pop3_server, tmp_path, keep=True, implicit_tls=True)
    assert code == 0, output
    assert_same_messages(fetched, [SAMPLE_MESSAGES[2]], output)


def test_wrong_password_fetches_nothing(pop3_server: NosendServer, tmp_path: Path) -> None:
    pop3_server.deliver_directly("alice", SAMPLE_MESSAGES[0])
    code, fetched, output = run_mpop(pop3_server, tmp_path, keep=False, password="wrong-one")
    assert code != 0, output
    assert "authentication" in output.lower() or "-ERR" in output, output
    assert fetched == []
    assert len(pop3_server.messages("alice")) == 1
