"""Fixtures for runner tests: free ports, a test certificate, both anyio backends,
an in-process server and a small line client.

Every server here listens on 127.0.0.1 on a port the kernel picked and is stopped by the
test that started it.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSStream

from nosend_runners.anyio_server import MailServer
from nosend_runners.serve.settings import Listen, ServerSettings
from nosend_runners.session.boundary import SessionFunc, Timeouts
from nosend_runners.testing.echo import echo_session_factory
from tests.conftest import require_tool
from tests.ports import free_port


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    return free_port()


@dataclass(frozen=True)
class CertFiles:
    """A self-signed certificate for ``localhost``/127.0.0.1 made at test time."""

    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this certificate."""
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    openssl = require_tool("openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return CertFiles(cert, key)


def fast_timeouts(**overrides: float) -> Timeouts:
    """Timeouts small enough for tests."""
    return replace(
        Timeouts(command=5, data_block=5, pop3_idle=5, send=5, tls_handshake=5, shutdown_grace=5),
        **overrides,
    )


def echo_settings(*services: str, **overrides: object) -> ServerSettings:
    """Settings listening on free ports for ``services`` (default: smtp and pop3)."""
    listen = tuple(Listen(s, "127.0.0.1", 0) for s in (services or ("smtp", "pop3")))
    base = ServerSettings(hostname="test.invalid", listen=listen, timeouts=fast_timeouts())
    return replace(base, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def running_server(
    settings: ServerSettings,
    factory: Callable[[str], SessionFunc] = echo_session_factory,
    **kwargs: object,
) -> AsyncIterator[MailServer]:
    """Start a ``MailServer`` in this event loop; shut it down gracefully on exit."""
    async with anyio.create_task_group() as tg:
        server: MailServer = await tg.start(
            MailServer(settings, factory, **kwargs).serve  # type: ignore[arg-type]
        )
        try:
            yield server
        finally:
            # Bounded: serve() returns within timeouts.shutdown_grace after this.
            server.shutdown()


def port_of(server: MailServer, service: str) -> int:
    """The port ``server`` listens on for ``service``."""
    return next(p for s, _, p in server.addresses if s == service)


class LineClient:
    """A test client: send lines, read CRLF-terminated replies, upgrade to TLS."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int) -> LineClient:
        return cls(await anyio.connect_tcp("127.0.0.1", port))

    async def line(self, timeout: float = 5) -> bytes:
        """The next line without CRLF; ``b""`` if the server closed first."""
        with anyio.fail_after(timeout):
            while b"\r\n" not in self.buffer:
                try:
                    data = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return b""
                self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    async def closed(self, timeout: float = 5) -> bool:
        """Whether the server closes the connection (after any remaining bytes)."""
        with anyio.fail_after(timeout):
            while True:
                try:
                    await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return True

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def command(self, line: bytes) -> bytes:
        await self.send(line + b"\r\n")
        return await self.line()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        self.stream = await TLSStream.wrap(
            self.stream, hostname="localhost", ssl_context=context, standard_compatible=False
        )

    async def aclose(self) -> None:
        await self.stream.aclose()


class SyncClient:
    """A blocking line client for servers running in another process."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.buffer = b""

    @classmethod
    def connect(cls, port: int, timeout: float = 10) -> SyncClient:
        """Connect to 127.0.0.1:``port``, retrying while the server starts."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                return cls(sock)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def line(self) -> bytes:
        """The next line without CRLF; ``b""`` when the server closed."""
        while b"\r\n" not in self.buffer:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return b""
            if not data:
                return b""
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.line()

    def closed(self) -> bool:
        """Whether the server closes the connection."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def start_tls(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def close(self) -> None:
        self.sock.close()


def wait_for_port(port: int, timeout: float = 10) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``."""
    SyncClient.connect(port, timeout).close()


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process this test started, by its own pid, and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def write_config(directory: Path, *extra: str, cert: CertFiles | None = None) -> Path:
    """A valid ``mail.cfg`` in ``directory`` with ``extra`` lines added to ``[server]``."""
    from nosend_store.config import create_default_config

    path = directory / "mail.cfg"
    create_default_config(path, data_dir=directory / "data", password="test-password-1")
    text = path.read_text()
    server_lines = list(extra)
    if cert is not None:
        server_lines += [f"tls_cert = {cert.cert}", f"tls_key = {cert.key}"]
        text = text.replace("\ntls_cert =\ntls_key =\n", "\n")
    for line in server_lines:
        key = line.split("=", 1)[0].strip()
        text = "\n".join(
            ln for ln in text.split("\n") if not ln.startswith(f"{key} =") and ln != f"{key} ="
        )
    text = text.replace("[server]\n", "[server]\n" + "".join(f"{x}\n" for x in server_lines), 1)
    path.write_text(text)
    return path
