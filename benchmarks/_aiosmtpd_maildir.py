"""The baseline a Python user would write instead of nosend: aiosmtpd delivering durably
into a Maildir.

Run as its own process (so its RSS is measured alone)::

    python benchmarks/_aiosmtpd_maildir.py --port PORT --maildir DIR [--size-limit BYTES]

The handler does what a careful aiosmtpd user does for mail that must not be lost: the
whole message (aiosmtpd buffers it) is written with LF line ends into ``tmp/``, fsynced,
renamed into ``new/`` and the directory fsynced, in the default thread pool so that other
sessions keep running; only then is 250 answered. Prints ``listening PORT`` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import time

from aiosmtpd.smtp import SMTP, Envelope, Session

_counter = itertools.count()


def deliver(maildir: str, content: bytes) -> None:
    """Durable Maildir delivery: tmp/ write + fsync, rename into new/, fsync new/."""
    name = f"{time.time_ns()}.P{os.getpid()}Q{next(_counter)}.{socket.gethostname()}"
    tmp = os.path.join(maildir, "tmp", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(content.replace(b"\r\n", b"\n"))
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(maildir, "new", name))
    dfd = os.open(os.path.join(maildir, "new"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class MaildirHandler:
    """aiosmtpd handler: accept every recipient, deliver each message durably."""

    def __init__(self, maildir: str) -> None:
        self.maildir = maildir
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, deliver, self.maildir, content)
        return "250 2.0.0 OK delivered"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--size-limit", type=int, default=200 * 1024 * 1024)
    args = parser.parse_args()
    handler = MaildirHandler(args.maildir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=args.size_limit, hostname="aiosmtpd.bench"),
        host="127.0.0.1",
        port=args.port,
        backlog=1024,
    )
    print(f"listening {args.port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
