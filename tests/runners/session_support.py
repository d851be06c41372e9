"""Shared helpers for the session, harness and end-to-end tests: a small ``mail.cfg``
with cheap password hashes, peers, and store look-ups."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nosend_runners.session.boundary import PeerInfo
from nosend_store.config import Config, load_config
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import OutboundQueue, QueueEntry

DOMAIN = "example.test"
PASSWORDS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2", "carol": "carol-Secret-3"}
#: carol also has a shared secret for APOP and CRAM-MD5.
CAROL_SECRET = "carol-apop-secret"

#: Peers as a session sees them.
LOOPBACK = PeerInfo("127.0.0.1", 40001)
TRUSTED = PeerInfo("10.1.2.3", 40002)  # in trusted_networks below
STRANGER = PeerInfo("192.0.2.99", 40003)  # TEST-NET-1: not trusted, not loopback


def fast_hash(password: str) -> str:
    """A valid Dovecot-style ``{PBKDF2}`` hash with few rounds, so tests stay fast."""
    salt, rounds = "saltsaltsaltsalt", 10
    digest = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), rounds, 20)
    return f"{{PBKDF2}}$1${salt}${rounds}${digest.hex()}"


def config_text(data_dir: Path, *server_lines: str, ports: dict[str, int] | None = None) -> str:
    """The text of a test ``mail.cfg``; ``server_lines`` are added to ``[server]``."""
    ports = ports or {}

    def listen(service: str) -> str:
        port = ports.get(service)
        return f"{service}_listen = 127.0.0.1:{port}" if port else f"{service}_listen ="

    secret = "{PLAIN.B64}" + base64.b64encode(CAROL_SECRET.encode()).decode()
    server = "\n".join(
        [
            "hostname = mx.example.test",
            f"data_dir = {data_dir}",
            listen("smtp"),
            listen("submission"),
            listen("smtps"),
            listen("pop3"),
            listen("pop3s"),
            "trusted_networks = 10.0.0.0/8",
            "max_message_size = 100K",
            "max_recipients = 5",
            *server_lines,
        ]
    )
    return f"""\
[server]
{server}

[domains]
{DOMAIN}
second.test

[mailbox alice]
password = {fast_hash(PASSWORDS["alice"])}

[mailbox bob]
password = {fast_hash(PASSWORDS["bob"])}

[mailbox carol]
password = {fast_hash(PASSWORDS["carol"])}
shared_secret = {secret}

[aliases]
team@{DOMAIN} = alice, bob
sales@{DOMAIN} = alice, partner@remote.test
postmaster@{DOMAIN} = carol
"""


def make_config(tmp_path: Path, *server_lines: str, ports: dict[str, int] | None = None) -> Config:
    """Write the test ``mail.cfg`` under ``tmp_path`` and load it."""
    path = tmp_path / "mail.cfg"
    path.write_text(config_text(tmp_path / "data", *server_lines, ports=ports))
    path.chmod(0o600)
    return load_config(path)


def mailbox(config: Config, name: str) -> MaildirMailbox:
    """The Maildir of ``name`` (created if missing)."""
    return MaildirMailbox(config.maildir_path(name))


def messages(config: Config, name: str) -> list[bytes]:
    """Every message in ``name``'s Maildir (disk form, LF line ends), oldest first."""
    box = mailbox(config, name)
    out = []
    for msg in box.list_messages():
        with box.open_message(msg.key) as f:
            out.append(f.read())
    return out


def queued(config: Config) -> list[tuple[QueueEntry, bytes]]:
    """Every queued message with its content."""
    queue = OutboundQueue(config.server.queue_dir)
    out = []
    for entry in queue.entries():
        path = Path(queue.path) / "active" / entry.id / "message"
        out.append((entry, path.read_bytes()))
    return out


def deliver(config: Config, name: str, text: bytes) -> str:
    """Put a message into ``name``'s Maildir; return its key."""
    return mailbox(config, name).deliver([text])


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def captured_log(name: str = "nosend") -> Iterator[list[str]]:
    """Collect every log line under ``name`` (all levels) while the block runs."""
    logger = logging.getLogger(name)
    handler = _ListHandler()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
