"""Throughput of the sans-IO SMTP server engine (no sockets: engine cost only).

1. DATA: a 10 MB message (72-octet lines, a dot-stuffed line every 10 lines) fed in
   64 KB chunks; prints MB/s of wire octets per second of this process's CPU time (one
   core; best of 7 runs), the same by the wall clock, and the engine's extra memory
   (tracemalloc peak while feeding, the pre-cut input chunks excluded).
2. A pipelined session of 1000 small messages; prints transactions per second of CPU
   time (best of 5 runs: one wall-clock run swung by 3x on the shared machine).
3. A hostile body of nothing but dot-stuffed lines; prints MB/s (the worst case).
4. Small sessions: one whole connection as a non-pipelining client drives it (greeting,
   EHLO, MAIL, RCPT, DATA, a 2 KB body of 26 lines in one read, QUIT; one read per
   command), every reply ``conn.send(conn.default_reply(event))`` followed by the
   ``should_flush`` a runner asks; prints sessions/s and microseconds per session of this
   process's CPU time (best of 7 runs). This is the engine's share of ``nosend serve``'s
   cost per small message.

The last line is ``data_mb_s=<number>``. Run: ``python benchmarks/bench_smtp_engine.py``.
"""

from __future__ import annotations

import time
import tracemalloc

from nosend_proto.smtp_events import NEED_DATA, Bdat, ConnectionClosed, DataChunk, EndOfData, Reply
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState

CHUNK = 64 * 1024
MESSAGE_SIZE = 10 * 1024 * 1024
CONFIG = SMTPServerConfig(hostname="mx.example.org", max_message_size=0)


def make_wire() -> bytes:
    line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklm\r\n"
    dotted = b"." + line[1:]  # becomes ".." on the wire
    block = line * 9 + dotted
    body = block * (MESSAGE_SIZE // len(block) + 1)
    body = body[: body.rindex(b"\r\n", 0, MESSAGE_SIZE) + 2]
    return (b"\r\n" + body).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"


def open_data(conn: ServerConnection) -> None:
    conn.send(Reply(220, "mx.example.org ESMTP"))
    conn.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n")
    conn.receive_data(b"DATA\r\n")
    while conn.state is not SMTPState.DATA:
        event = conn.next_event()
        assert event is not NEED_DATA
        conn.send(conn.default_reply(event))  # type: ignore[arg-type]


def feed_data(conn: ServerConnection, chunks: list[bytes]) -> int:
    received = 0
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, DataChunk):
                received += len(event.data)
            elif isinstance(event, EndOfData):
                conn.send(Reply(250, "OK"))
            else:
                raise AssertionError(f"unexpected {event!r}")
    return received


def bench_data() -> tuple[float, float, int, int]:
    wire = make_wire()
    chunks = [wire[i : i + CHUNK] for i in range(0, len(wire), CHUNK)]
    best = best_wall = float("inf")
    for _ in range(7):
        conn = ServerConnection(CONFIG, nonce="bench")
        open_data(conn)
        start, start_wall = time.process_time(), time.perf_counter()
        received = feed_data(conn, chunks)
        best = min(best, time.process_time() - start)
        best_wall = min(best_wall, time.perf_counter() - start_wall)
        assert conn.state is SMTPState.READY
    conn = ServerConnection(CONFIG, nonce="bench")
    open_data(conn)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    feed_data(conn, chunks)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return len(wire) / best / 1e6, len(wire) / best_wall / 1e6, peak, received


def bench_dense_dots() -> float:
    """A hostile body: nothing but stuffed-dot lines (worst case for unstuffing)."""
    wire = b"\r\n..x" * (MESSAGE_SIZE // 5) + b"\r\n.\r\n"
    chunks = [wire[i : i + CHUNK] for i in range(0, len(wire), CHUNK)]
    conn = ServerConnection(CONFIG, nonce="bench")
    open_data(conn)
    start = time.process_time()
    feed_data(conn, chunks)
    return len(wire) / (time.process_time() - start) / 1e6


def bench_transactions(n: int = 1000) -> float:
    """Transactions per CPU second of one pipelined session of ``n`` (best of 5 runs)."""
    one = (
        b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        b"Subject: hello\r\n\r\nA small message.\r\n.\r\n"
    )
    session = b"EHLO c.example\r\n" + one * n + b"QUIT\r\n"
    chunks = [session[i : i + CHUNK] for i in range(0, len(session), CHUNK)]
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        done, flushes = run_pipelined(chunks)
        best = min(best, time.process_time() - start)
        assert done == n and flushes >= n, (done, flushes)  # 354 is a flush point
    return n / best


def run_pipelined(chunks: list[bytes]) -> tuple[int, int]:
    """Drive one pipelined session; returns (messages accepted, flush points seen)."""
    conn = ServerConnection(CONFIG, nonce="bench")
    conn.send(Reply(220, "mx.example.org ESMTP"))
    done = flushes = 0
    for chunk in chunks:
        conn.receive_data(chunk)
        while conn.state is not SMTPState.CLOSED:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, DataChunk | Bdat):
                continue
            if isinstance(event, EndOfData):
                done += 1
            conn.send(conn.default_reply(event))  # type: ignore[arg-type]
            flushes += conn.should_flush  # a runner asks this after every reply
    return done, flushes


def small_session_wire(size: int = 2048, lines: int = 26) -> list[bytes]:
    """The reads of one small session: each command alone, the body whole with its end."""
    head = b"From: <alice@example.net>\r\nTo: <bob@example.org>\r\nSubject: hello\r\n\r\n"
    text_lines = lines - head.count(b"\n")
    width = (size - len(head)) // text_lines - 2
    body = head + b"".join(b"x" * width + b"\r\n" for _ in range(text_lines))
    body += b"y" * (size - len(body) - 2) + b"\r\n" if len(body) < size - 2 else b""
    return [
        b"EHLO client.example.net\r\n",
        b"MAIL FROM:<alice@example.net>\r\n",
        b"RCPT TO:<bob@example.org>\r\n",
        b"DATA\r\n",
        body + b".\r\n",
        b"QUIT\r\n",
    ]


def run_small_session(wire: list[bytes], greeting: Reply) -> int:
    """One whole connection; returns the reply octets (so the work cannot be skipped)."""
    conn = ServerConnection(CONFIG, nonce="bench")
    out = len(conn.send(greeting))
    for chunk in wire:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, DataChunk):
                continue
            out += len(conn.send(conn.default_reply(event)))  # type: ignore[arg-type]
            conn.should_flush  # noqa: B018 - a runner asks this after every reply
    assert conn.state is SMTPState.CLOSED
    return out


def bench_small_sessions(n: int = 2000) -> float:
    """CPU microseconds per whole small session (best of 7 runs of ``n``)."""
    wire = small_session_wire()
    assert len(wire[4]) == 2048 + 3 and wire[4].count(b"\n") == 27, len(wire[4])
    greeting = Reply(220, "mx.example.org ESMTP")
    best = float("inf")
    for _ in range(7):
        start = time.process_time()
        for _ in range(n):
            run_small_session(wire, greeting)
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def main() -> None:
    mb_s, wall_mb_s, peak, received = bench_data()
    tx_s = bench_transactions()
    dense_mb_s = bench_dense_dots()
    session_us = bench_small_sessions()
    print(f"message: {received} octets unstuffed, fed in {CHUNK // 1024} KB chunks")
    print(f"extra_memory_bytes={peak} (limit {2 * CHUNK}: twice the chunk size)")
    print(f"transactions_per_s={tx_s:.0f}")
    print(f"hostile_all_dot_lines_mb_s={dense_mb_s:.1f}")
    print(f"small_sessions_per_s={1e6 / session_us:.0f} (2 KB body, one read per command)")
    print(f"small_session_us={session_us:.1f} (CPU per whole session)")
    print(f"wall_clock_data_mb_s={wall_mb_s:.1f} (depends on other load on the machine)")
    print(f"data_mb_s={mb_s:.1f}")


if __name__ == "__main__":
    main()
