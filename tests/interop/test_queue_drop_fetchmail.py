"""A stock fetchmail in multidrop mode relays the outbound queue through the queue drop.

The POP3 side here is a deliberately tiny test double speaking just enough RFC 1939 over
a ``DropSession`` (USER/PASS/STAT/LIST/UIDL/RETR/TOP/DELE/RSET/NOOP/QUIT): what is under
test is the drop's content (Return-Path, X-Envelope-To, one copy per recipient), sizes
and deletion semantics, as fetchmail reads them. fetchmail hands each message to an MDA
that files it by the envelope recipient fetchmail found (``%T``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from nosend_store.queue import Envelope, OutboundQueue
from nosend_store.queue_drop import QueueDrop
from tests.conftest import require_tool

pytestmark = pytest.mark.interop


class TinyPop3:
    """Serves one connection from a QueueDrop; records the commands it saw."""

    def __init__(self, drop: QueueDrop) -> None:
        self.drop = drop
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.commands: list[str] = []
        self.sizes_sent: dict[int, int] = {}
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.sock.settimeout(20)
        conn, _ = self.sock.accept()
        conn.settimeout(20)
        f = conn.makefile("rwb")
        session = None

        def send(line: str) -> None:
            f.write(line.encode() + b"\r\n")
            f.flush()

        send("+OK tiny")
        try:
            while raw := f.readline():
                cmd, *args = raw.decode().split()
                cmd = cmd.upper()
                self.commands.append(cmd)
                if cmd == "CAPA":
                    f.write(b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n")
                    f.flush()
                elif cmd == "USER":
                    send("+OK")
                elif cmd == "PASS":
                    session = self.drop.pop3_session()
                    send("+OK")
                elif session is None:
                    send("-ERR not authenticated")
                elif cmd == "STAT":
                    v = session.visible()
                    send(f"+OK {len(v)} {sum(m.size for m in v)}")
                elif cmd in ("LIST", "UIDL"):
                    field = "size" if cmd == "LIST" else "uidl"
                    if args:
                        m = session.get(int(args[0]))
                        send(f"+OK {m.number} {getattr(m, field)}" if m else "-ERR no such")
                    else:
                        lines = [f"{m.number} {getattr(m, field)}" for m in session.visible()]
                        f.write(("+OK\r\n" + "".join(x + "\r\n" for x in lines) + ".\r\n").encode())
                        f.flush()
                elif cmd in ("RETR", "TOP"):
                    n = int(args[0])
                    data = b"".join(session.wire_chunks(n))
                    if cmd == "TOP":
                        head, _, body = data.partition(b"\r\n\r\n")
                        keep = body.split(b"\r\n")[: int(args[1])]
                        data = head + b"\r\n\r\n" + b"".join(x + b"\r\n" for x in keep)
                    else:
                        self.sizes_sent[n] = len(data)
                    send("+OK")
                    for line in data.split(b"\r\n")[:-1]:
                        f.write((b"." + line if line.startswith(b".") else line) + b"\r\n")
                    f.write(b".\r\n")
                    f.flush()
                elif cmd == "DELE":
                    send("+OK" if session.mark_deleted(int(args[0])) else "-ERR")
                elif cmd == "RSET":
                    session.reset()
                    send("+OK")
                elif cmd == "NOOP":
                    send("+OK")
                elif cmd == "QUIT":
                    session.commit()
                    session = None
                    send("+OK bye")
                    break
                else:
                    send("-ERR unknown")
        finally:
            if session is not None:
                session.close()  # dropped connection: nothing deleted
            conn.close()
            self.sock.close()


def run_fetchmail(tmp_path: Path, port: int, mda: str) -> subprocess.CompletedProcess[str]:
    fetchmail = require_tool("fetchmail")
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 with proto POP3 port {port}\n"
        "  no dns\n"
        '  envelope "X-Envelope-To"\n'
        "  localdomains example.org example.net\n"
        '  user "queue" there with password "secret" is * here\n'
        "  options no keep fetchall sslproto ''\n"
        f'  mda "{mda}"\n'
    )
    os.chmod(rc, 0o600)
    return subprocess.run(
        [fetchmail, "-N", "-v", "-f", str(rc), "--pidfile", str(tmp_path / "pid")],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "HOME": str(tmp_path)},
    )


MESSAGE = (
    b"From: alice@yacht.local\r\nTo: bob@example.org, carol@example.net\r\n"
    b"Subject: hi\r\nMessage-ID: <1@yacht.local>\r\n\r\nhello\r\n.leading dot\r\n"
)


def test_fetchmail_multidrop_delivers_each_recipient_and_empties_the_queue(
    tmp_path: Path,
) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    queue.enqueue(
        Envelope.simple("alice@yacht.local", ["bob@example.org", "carol@example.net"]),
        [MESSAGE],
    )
    out = tmp_path / "out"
    out.mkdir()
    server = TinyPop3(QueueDrop(queue))
    result = run_fetchmail(tmp_path, server.port, f"/bin/sh -c 'cat > {out}/%T'")
    server.thread.join(20)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(os.listdir(out)) == ["bob@example.org", "carol@example.net"]
    for rcpt in ("bob@example.org", "carol@example.net"):
        text = (out / rcpt).read_bytes()
        assert f"for <{rcpt}> (multi-drop)".encode() in text  # fetchmail used our envelope
        assert b"Return-Path: <alice@yacht.local>\n" in text
        assert text.endswith(b"\n\nhello\n.leading dot\n")  # dot-unstuffed, intact
    assert server.commands.count("DELE") == 2 and server.commands[-1] == "QUIT"
    assert queue.entries() == []


def test_copy_fetchmail_could_not_deliver_stays_queued_for_that_recipient(
    tmp_path: Path,
) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    qid = queue.enqueue(
        Envelope.simple("alice@yacht.local", ["bob@example.org", "carol@example.net"]),
        [MESSAGE],
    )
    out = tmp_path / "out"
    out.mkdir()
    server = TinyPop3(QueueDrop(queue))
    # The MDA refuses carol's copy with EX_TEMPFAIL: fetchmail must not delete it.
    mda = f"/bin/sh -c 'test %T = carol@example.net && exit 75; cat > {out}/%T'"
    result = run_fetchmail(tmp_path, server.port, mda)
    server.thread.join(20)
    assert os.listdir(out) == ["bob@example.org"], result.stdout
    entry = queue.get(qid)
    assert entry is not None
    assert [r.address for r in entry.pending] == ["carol@example.net"]
    assert [r.state for r in entry.recipients] == ["delivered", "pending"]
