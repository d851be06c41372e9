"""getmail6 (the Debian package) retrieves from ``nosend serve`` into a local Maildir.

Over POP3S with the test certificate as its only trust anchor, and over plain POP3 from
the LAN when ``lan_plaintext_auth = yes``; with ``read_all = false`` it remembers UIDLs
in its oldmail file, so a second run fetches nothing new.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import SAMPLE_MESSAGES, NosendServer, ServerFactory

pytestmark = pytest.mark.interop


def run_getmail(
    server: NosendServer, work: Path, *, delete: bool, ssl: bool = True
) -> tuple[int, list[bytes], str]:
    """One getmail run for alice; returns (exit code, newly delivered messages, output)."""
    getmail = require_tool("getmail")
    local = work / "Local"
    for sub in ("tmp", "new", "cur"):
        (local / sub).mkdir(parents=True, exist_ok=True)
    before = {p.name for p in (local / "new").iterdir()}
    assert server.tls is not None
    ca_certs = work / "ca.pem"
    shutil.copyfile(server.tls.cert, ca_certs)
    retriever = (
        "type = SimplePOP3SSLRetriever\n"
        f"port = {server.port('pop3s')}\n"
        f"ca_certs = {ca_certs}\n"
        "ssl_cert_hostname = localhost\n"
        if ssl
        else f"type = SimplePOP3Retriever\nport = {server.port('pop3')}\n"
    )
    (work / "getmailrc").write_text(
        "[retriever]\n" + retriever + "server = 127.0.0.1\n"
        "username = alice\n"
        f"password = {server.users['alice']}\n"
        "timeout = 15\n"
        "\n[destination]\n"
        "type = Maildir\n"
        f"path = {local}/\n"
        "\n[options]\n"
        "verbose = 2\n"
        "read_all = false\n"
        f"delete = {'true' if delete else 'false'}\n"
        "delivered_to = false\n"
        "received = false\n"
    )
    user = _unprivileged()
    if user is not None:
        for path in (work, *work.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)
    result = subprocess.run(
        [getmail, "--getmaildir", str(work), "--rcfile", "getmailrc"],
        capture_output=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "HOME": str(work)},
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
    )
    new = sorted(p for p in (local / "new").iterdir() if p.name not in before)
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    return result.returncode, [p.read_bytes() for p in new], output


def _unprivileged() -> pwd.struct_passwd | None:
    """getmail refuses to deliver as root: under root it runs as ``nobody``."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder getmail can use even when it runs as ``nobody`` (tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="nosend-getmail-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def without_return_path(message: bytes) -> bytes:
    """getmail writes a Return-Path: line first (from the envelope it cannot know)."""
    return message[message.index(b"From: ") :]


@pytest.fixture
def pop3_server(nosend_factory: ServerFactory) -> NosendServer:
    return nosend_factory(services=("pop3", "pop3s"), lan_plaintext_auth="yes")


def test_pop3s_keeps_mail_and_remembers_what_it_fetched(
    pop3_server: NosendServer, work: Path
) -> None:
    for message in SAMPLE_MESSAGES:
        pop3_server.deliver_directly("alice", message)
    code, fetched, output = run_getmail(pop3_server, work, delete=False)
    assert code == 0, output
    assert sorted(map(without_return_path, fetched)) == sorted(SAMPLE_MESSAGES), output
    assert len(pop3_server.messages("alice")) == len(SAMPLE_MESSAGES)

    code, fetched, output = run_getmail(pop3_server, work, delete=False)
    assert code == 0, output
    assert fetched == []


def test_plain_pop3_from_the_lan_with_delete(pop3_server: NosendServer, work: Path) -> None:
    for message in SAMPLE_MESSAGES[:2]:
        pop3_server.deliver_directly("alice", message)
    code, fetched, output = run_getmail(pop3_server, work, delete=True, ssl=False)
    assert code == 0, output
    assert sorted(map(without_return_path, fetched)) == sorted(SAMPLE_MESSAGES[:2]), output
    assert pop3_server.messages("alice") == []
