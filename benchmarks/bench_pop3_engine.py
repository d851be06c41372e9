"""POP3 server engine RETR throughput: 1000 messages of 100 KB through one connection.

One logged-in ``ServerConnection`` receives ``RETR 1`` … ``RETR 1000`` pipelined in one
buffer; each Retrieve is answered with the stored message in 64 KB ``MessageChunk``s and
``MessageEnd``, and every byte the engine returns is counted (what a runner would write).
Stored content is 40 % text (one line in 50 starts with a dot) and 60 % base64 attachment,
run twice: with LF line ends (the Maildir file as stored) and with CRLF (the store's
``wire_chunks`` form). MB is 10^6 octets of
stored message content per second of engine time on one core.

Figures are per second of this process's CPU time (one core; best of ``--rounds``), as
the machine may be shared; the wall-clock figure is printed too. Also printed: the
encoder alone, ``wire_size`` alone, and the engine's extra memory (tracemalloc peak)
while one RETR streams a 10 MB message. Last line: ``retr_mb_s=<number>`` — the slower of
the two line-end variants (target: at least 300).

    python benchmarks/bench_pop3_engine.py [--count N] [--size BYTES] [--rounds R]
"""

from __future__ import annotations

import argparse
import base64
import random
import time
import tracemalloc

from nosend_proto import MessageEncoder
from nosend_proto.pop3_events import (
    NEED_DATA,
    Greeting,
    LoginAccepted,
    MessageChunk,
    MessageEnd,
    MessageInfo,
    POP3ServerConfig,
    Retrieve,
)
from nosend_proto.pop3_state import ServerConnection, wire_size

CHUNK = 64 * 1024


WORDS = (
    b"the of and to in is you that it he was for on are as with his they at be this from"
    b" have or by one had not but what all were when we there can an your which their said"
    b" if do will each about how up out them then she many some so these would other into"
    b" has more her two like him see time could no make than first been its who now people"
).split()


def make_message(size: int, newline: bytes) -> bytes:
    """A plain-text part (one line in 50 starts with a dot) and a base64 attachment."""
    rng = random.Random(1939)
    lines = [b"From: bench@yacht", b"To: crew@yacht", b"Subject: benchmark", b""]
    total = 0
    while total < size * 0.4:
        line = b" ".join(rng.choice(WORDS) for _ in range(12)) + b"."
        if rng.random() < 0.02:
            line = b"." + line  # must be stuffed
        lines.append(line)
        total += len(line) + 1
    lines.extend(base64.encodebytes(rng.randbytes(int((size - total) * 0.74))).split(b"\n"))
    return newline.join(lines).rstrip(newline) + newline


def chunks_of(message: bytes) -> list[bytes]:
    return [message[i : i + CHUNK] for i in range(0, len(message), CHUNK)]


def run_engine(message: bytes, count: int) -> tuple[float, float, int]:
    """CPU seconds, wall seconds and octets written to RETR ``count`` copies of ``message``."""
    chunks = chunks_of(message)
    info = [MessageInfo(wire_size(message), f"m{i}") for i in range(count)]
    conn = ServerConnection(POP3ServerConfig("bench.example"), nonce="bench")
    conn.send(Greeting())
    conn.receive_data(b"APOP bob 0123456789abcdef0123456789abcdef\r\n")
    conn.next_event()
    conn.send(LoginAccepted(info))
    commands = b"".join(f"RETR {i + 1}\r\n".encode() for i in range(count))
    written = 0
    start, start_wall = time.process_time(), time.perf_counter()
    conn.receive_data(commands)
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            break
        assert isinstance(event, Retrieve)
        for chunk in chunks:
            written += len(conn.send(MessageChunk(chunk)))
        written += len(conn.send(MessageEnd()))
    return time.process_time() - start, time.perf_counter() - start_wall, written


def run_encoder(message: bytes, count: int) -> float:
    chunks = chunks_of(message)
    start = time.process_time()
    for _ in range(count):
        encoder = MessageEncoder()
        for chunk in chunks:
            encoder.feed(chunk)
        encoder.finish()
    return time.process_time() - start


def run_wire_size(message: bytes, count: int) -> float:
    chunks = chunks_of(message)
    start = time.process_time()
    for _ in range(count):
        wire_size(chunks)
    return time.process_time() - start


def extra_memory(message: bytes, copies: int) -> int:
    """tracemalloc peak while one RETR streams ``copies`` x ``message`` (one big message)."""
    chunks = chunks_of(message) * copies
    conn = ServerConnection(POP3ServerConfig("bench.example"), nonce="bench")
    conn.send(Greeting())
    conn.receive_data(b"APOP bob 0123456789abcdef0123456789abcdef\r\n")
    conn.next_event()
    conn.send(LoginAccepted([MessageInfo(wire_size(chunks), "big")]))
    conn.receive_data(b"RETR 1\r\n")
    conn.next_event()
    tracemalloc.start()
    for chunk in chunks:
        conn.send(MessageChunk(chunk))  # the runner writes and drops each result
    conn.send(MessageEnd())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100 * 1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    results = {}
    for name, newline in (("LF", b"\n"), ("CRLF", b"\r\n")):
        message = make_message(args.size, newline)
        content = len(message) * args.count
        runs = [run_engine(message, args.count) for _ in range(args.rounds)]
        cpu = min(r[0] for r in runs)
        wall = min(r[1] for r in runs)
        written = runs[0][2] // args.count
        encoder = content / min(run_encoder(message, args.count) for _ in range(args.rounds))
        sizing = content / min(run_wire_size(message, args.count) for _ in range(args.rounds))
        results[name] = content / cpu / 1e6
        print(
            f"{name:4} stored: {args.count} x {len(message)} octets ({written} written per"
            f" RETR): engine {results[name]:7.1f} MB/s per CPU second"
            f" ({content / wall / 1e6:.1f} by the wall clock); encoder alone"
            f" {encoder / 1e6:.1f} MB/s; wire_size {sizing / 1e6:.1f} MB/s"
        )
    message = make_message(args.size, b"\n")
    peak = extra_memory(message, 100)
    print(f"extra_memory_bytes={peak} while one RETR streams {100 * len(message)} octets")
    print(f"retr_mb_s={min(results.values()):.1f}")


if __name__ == "__main__":
    main()
