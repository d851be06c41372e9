"""The anyio server's transport cost, with the echo session, on asyncio and trio.

Over loopback, in one process (client and server share the event loop, so the figures
are a floor for the transport, not a capacity claim):

- sessions/s: connect, read the greeting, QUIT, see the close; ``--clients`` at once;
- round trips/s: one line out, its echo back, on ``--clients`` connections at once;
- TLS sessions/s: implicit-TLS connect, handshake, greeting, QUIT (RSA-2048 cert).

Last line: ``echo_round_trips_per_s=<number>`` (asyncio).

    python benchmarks/bench_anyio_server.py [--clients N] [--seconds S]
"""

from __future__ import annotations

import argparse
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from anyio.streams.tls import TLSStream

from nosend_runners.anyio_server import MailServer
from nosend_runners.serve.limits import LimitSettings
from nosend_runners.serve.settings import Listen, ServerSettings
from nosend_runners.testing.echo import echo_session_factory


async def _read_line(stream: anyio.abc.ByteStream, buffer: bytearray) -> bytes:
    while b"\r\n" not in buffer:
        buffer += await stream.receive()
    end = buffer.index(b"\r\n") + 2
    line = bytes(buffer[:end])
    del buffer[:end]
    return line


async def _sessions(port: int, seconds: float, tls: ssl.SSLContext | None) -> int:
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stream: anyio.abc.ByteStream = await anyio.connect_tcp("127.0.0.1", port)
        if tls is not None:
            stream = await TLSStream.wrap(
                stream, hostname="localhost", ssl_context=tls, standard_compatible=False
            )
        buffer = bytearray()
        await _read_line(stream, buffer)
        await stream.send(b"QUIT\r\n")
        await _read_line(stream, buffer)
        await stream.aclose()
        done += 1
    return done


async def _round_trips(port: int, seconds: float) -> int:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    buffer = bytearray()
    await _read_line(stream, buffer)
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await stream.send(b"the quick brown fox\r\n")
        await _read_line(stream, buffer)
        done += 1
    await stream.aclose()
    return done


async def _run_clients(clients: int, job: object, *args: object) -> int:
    results: list[int] = []

    async def one() -> None:
        results.append(await job(*args))  # type: ignore[operator]

    async with anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(one)
    return sum(results)


async def bench(clients: int, seconds: float, cert: Path, key: Path) -> dict[str, float]:
    settings = ServerSettings(
        listen=(Listen("smtp", "127.0.0.1", 0), Listen("smtps", "127.0.0.1", 0)),
        tls_cert=cert,
        tls_key=key,
        limits=LimitSettings(max_connections=10_000, max_per_address=10_000),
    )
    client_tls = ssl.create_default_context(cafile=str(cert))
    figures: dict[str, float] = {}
    async with anyio.create_task_group() as tg:
        server: MailServer = await tg.start(MailServer(settings, echo_session_factory).serve)
        ports = {s: p for s, _, p in server.addresses}
        n = await _run_clients(clients, _sessions, ports["smtp"], seconds, None)
        figures["sessions_per_s"] = n / seconds
        n = await _run_clients(clients, _round_trips, ports["smtp"], seconds)
        figures["round_trips_per_s"] = n / seconds
        n = await _run_clients(clients, _sessions, ports["smtps"], seconds, client_tls)
        figures["tls_sessions_per_s"] = n / seconds
        server.shutdown()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost"],
            check=True, capture_output=True,
        )  # fmt: skip
        print(f"python {sys.version.split()[0]}")
        print(f"{args.clients} concurrent clients, {args.seconds}s per figure, loopback")
        results = {}
        for backend in ("asyncio", "trio"):
            figures = anyio.run(bench, args.clients, args.seconds, cert, key, backend=backend)
            results[backend] = figures
            for name, value in figures.items():
                print(f"{backend:8} {name:22} {value:10.0f}")
    print(f"echo_round_trips_per_s={results['asyncio']['round_trips_per_s']:.0f}")


if __name__ == "__main__":
    main()
