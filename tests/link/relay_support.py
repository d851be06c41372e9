"""What the relay tests share: the boat's mail.cfg, its queue, a smarthost, a scripted one.

The boat is the nosend whose queue is relayed (domain ``boat.example``, mailbox
``skipper``, one ``[account upstream]``); the smarthost is a real ``nosend serve`` from
``tests/interop/conftest.py`` (domain ``nosend.test``, mailboxes alice and bob,
submission with STARTTLS and AUTH), or :class:`ScriptedSMTP` when a test needs answers
nosend would never give.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import anyio

from nosend_link.relay import RelayReport, TimeLimit, relay_queue
from nosend_link.transfer_events import TransferEvent
from nosend_runners.client.connection import LinkMeter
from nosend_store.config import Config, load_config
from nosend_store.queue import Envelope, OutboundQueue, QueueEntry
from tests.runners.session_support import fast_hash

SKIPPER = "skipper@boat.example"


def boat_config(root: Path, port: int, *account_lines: str, user: str | None = "alice",
                password: str = "alice-Secret-1", tls: str = "starttls",
                ca_file: Path | None = None) -> Config:
    """Write and load the boat's mail.cfg with ``[account upstream]`` on ``port``."""
    lines = [
        "[server]",
        "hostname = boat.example",
        f"data_dir = {root / 'data'}",
        *(f"{s}_listen =" for s in ("smtp", "submission", "smtps", "pop3", "pop3s")),
        "",
        "[domains]",
        "boat.example",
        "",
        "[mailbox skipper]",
        f"password = {fast_hash('skipper-pw')}",
        "",
        "[account upstream]",
        "type = smtp",
        "host = 127.0.0.1",
        f"port = {port}",
        f"tls = {tls}",
    ]
    if ca_file is not None:
        lines.append(f"ca_file = {ca_file}")
    if user is not None:
        lines += [f"user = {user}",
                  "secret = {PLAIN.B64}" + base64.b64encode(password.encode()).decode()]
    lines += [*account_lines, ""]
    path = root / "mail.cfg"
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return load_config(path)


def queue_of(config: Config) -> OutboundQueue:
    """The boat's queue (created on first use, as the server creates it)."""
    return OutboundQueue(config.server.queue_dir, hostname=config.server.hostname)


def enqueue(config: Config, body: bytes, recipients: Iterable[str] = ("alice@nosend.test",),
            sender: str = SKIPPER) -> str:
    """Queue one message as the boat's server would; its id."""
    return queue_of(config).enqueue(Envelope.simple(sender, list(recipients)), [body])


def message(n: int, size: int = 0) -> bytes:
    """A small test message numbered ``n``, padded to about ``size`` octets."""
    head = f"From: {SKIPPER}\nTo: alice@nosend.test\nSubject: note {n}\n\nbody of {n}\n"
    pad = b""
    while len(head) + len(pad) < size:
        pad += b"padding line to make the message bigger, %08d\n" % len(pad)
    return head.encode() + pad


def entries(config: Config) -> list[QueueEntry]:
    """What is still queued."""
    return queue_of(config).entries()


def relay(config: Config, *, events: list[TransferEvent] | None = None,
          meter: LinkMeter | None = None, backend: str = "asyncio",
          **kwargs: object) -> RelayReport:
    """Run one relay cycle for ``[account upstream]`` to completion."""
    progress: Callable[[TransferEvent], None] | None = (
        events.append if events is not None else None)

    async def main() -> RelayReport:
        return await relay_queue(config, config.accounts["upstream"], progress=progress,
                                 meter=meter, **kwargs)  # type: ignore[arg-type]

    return anyio.run(main, backend=backend)


FAST = TimeLimit(base=5.0, min_rate=100_000.0)


# ---------------------------------------------------------------------------------------


Script = Callable[[str], str | None]


class ScriptedSMTP:
    """A minimal SMTP server on 127.0.0.1 whose RCPT answers a test chooses.

    ``rcpt(address)`` returns the reply line for that RCPT (``"250 ok"``, ``"451 ..."``,
    ``"550 ..."``). It offers PIPELINING, SIZE ``size`` and 8BITMIME, no CHUNKING, no
    TLS, no AUTH; bodies are kept in ``received`` as (recipients, body) pairs. A body
    holding ``stall_subject`` is never answered (to test time limits); ``pipelining=False``
    leaves PIPELINING out of EHLO (a lock-step server). ``mail`` is the answer to every
    MAIL FROM; after a refused one, RCPT gets 503 as real servers answer.
    """

    def __init__(self, rcpt: Script | None = None, size: int = 10_000_000,
                 stall_subject: bytes | None = None, pipelining: bool = True,
                 mail: str = "250 2.1.0 ok") -> None:
        self.rcpt = rcpt or (lambda address: "250 2.1.5 ok")
        self.mail = mail
        self.pipelining = pipelining
        self.size = size
        self.stall_subject = stall_subject
        self.received: list[tuple[list[str], bytes]] = []
        self.connections = 0
        self.stalled = threading.Event()  # set once a body is held without an answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop listening (shutdown first: a thread blocked in accept() would otherwise
        keep the socket listening after close())."""
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()

    def __enter__(self) -> ScriptedSMTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            self._dialogue(conn, reader)
        except OSError:
            pass
        finally:
            reader.close()
            conn.close()

    def _dialogue(self, conn: socket.socket, reader: BinaryIO) -> None:
        read = reader.readline
        conn.sendall(b"220 scripted.test ESMTP\r\n")
        rcpts: list[str] = []
        accepted: list[str] = []
        mail_ok = False
        while True:
            line = read()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                pipelining = b"250-PIPELINING\r\n" if self.pipelining else b""
                conn.sendall(b"250-scripted.test\r\n" + pipelining + b"250-8BITMIME\r\n"
                             b"250 SIZE %d\r\n" % self.size)
            elif verb == b"MAIL":
                rcpts, accepted = [], []
                mail_ok = self.mail.startswith("2")
                conn.sendall(self.mail.encode() + b"\r\n")
            elif verb == b"RCPT" and not mail_ok:
                conn.sendall(b"503 5.5.1 need MAIL first\r\n")
            elif verb == b"RCPT":
                address = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                rcpts.append(address)
                reply = self.rcpt(address) or "250 2.1.5 ok"
                if reply.startswith("2"):
                    accepted.append(address)
                conn.sendall(reply.encode() + b"\r\n")
            elif verb == b"DATA":
                if not accepted:
                    conn.sendall(b"554 5.5.1 no valid recipients\r\n")
                    continue
                conn.sendall(b"354 go ahead\r\n")
                body = b""
                while (data := read()) not in (b".\r\n", b""):
                    body += data
                if not data:
                    return
                if self.stall_subject is not None and self.stall_subject in body:
                    self.stalled.set()
                    self._stop.wait(60)  # never answers: the client's time limit must act
                    return
                self.received.append((accepted, body))
                conn.sendall(b"250 2.0.0 queued\r\n")
            elif verb == b"RSET" or verb == b"NOOP":
                conn.sendall(b"250 2.0.0 ok\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 2.0.0 bye\r\n")
                return
            else:
                conn.sendall(b"502 5.5.2 unknown\r\n")
