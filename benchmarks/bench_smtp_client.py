"""Round trips, octets and engine speed of the sans-IO SMTP client engine.

1. Ten 2 KB messages to one recipient each, then QUIT, against our server engine in
   memory, in each mode the server may allow: PIPELINING + CHUNKING, PIPELINING only,
   lock-step. Prints the round trips after EHLO, the octets each way, and what that
   would take on an Iridium-like link (2400 bit/s, 2.5 s line turnaround; a guide, see
   /work/shared/LINKS.md): the octets by the link speed plus the round trips (EHLO
   included) by the turnaround.
2. Body encoding: a 10 MB body with LF line ends and a leading dot every 10 lines, sent
   in 64 KB chunks as DATA (CRLF normalisation and dot-stuffing) and as BDAT; prints MB/s
   of this process's CPU time (best of 5).

The last line is ``pipelined_round_trips=<number>``. Run:
``PYTHONPATH=src:. python benchmarks/bench_smtp_client.py``.
"""

from __future__ import annotations

import time

from tests.proto.smtp_client_support import Link, Mailer

from nosend_proto.smtp_client import ClientConnection
from nosend_proto.smtp_client_events import (
    NEED_DATA,
    BodyChunk,
    EndOfBody,
    Recipient,
    SendBody,
    SMTPClientConfig,
    Transaction,
)
from nosend_proto.smtp_state import SMTPServerConfig

HOST = "mx.example.org"
CLIENT = SMTPClientConfig(local_hostname="boat.example.net")
MODES = {
    "pipelining+chunking": SMTPServerConfig(hostname=HOST),
    "pipelining only": SMTPServerConfig(hostname=HOST, chunking=False),
    "lock-step": SMTPServerConfig(hostname=HOST, pipelining=False, chunking=False),
}
TURNAROUND_S = 2.5
LINK_BPS = 2400


def bench_round_trips() -> dict[str, int]:
    body = b"Subject: hello\n\n" + b"A line of an ordinary small message, 60 octets long.\n" * 38
    found = {}
    for name, server in MODES.items():
        link = Link(CLIENT, server)
        messages = [
            (Transaction("skipper@boat.example", (Recipient("a@example.org"),)), [body])
            for _ in range(10)
        ]
        results = Mailer(link, messages).run()
        assert all(r.accepted for r in results)
        up = sum(len(w) for w in link.writes)
        down = sum(len(r) for r in link.replies)
        trips = link.round_trips - 1  # the EHLO
        seconds = link.round_trips * TURNAROUND_S + (up + down) * 8 / LINK_BPS
        print(
            f"{name:20s} round_trips_after_ehlo={trips:3d} octets_up={up} "
            f"octets_down={down} slow_link_estimate_s={seconds:.0f}"
        )
        found[name] = trips
    return found


def bench_encoding(bdat: bool) -> float:
    line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklm\n"
    block = line * 9 + b"." + line
    body = block * (10 * 1024 * 1024 // len(block))
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    ehlo = b"250-mx\r\n250-PIPELINING\r\n" + (b"250 CHUNKING\r\n" if bdat else b"250 8BITMIME\r\n")
    best = float("inf")
    for _ in range(5):
        conn = ClientConnection(CLIENT)
        conn.receive_data(b"220 mx\r\n" + ehlo)
        while conn.next_event() is not NEED_DATA:
            pass
        conn.send(Transaction("a@b.example", (Recipient("c@d.example"),), eight_bit=False))
        if not bdat:
            conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
        while not isinstance(conn.next_event(), SendBody):
            pass
        start = time.process_time()
        for chunk in chunks:
            conn.send(BodyChunk(chunk))
        conn.send(EndOfBody())
        best = min(best, time.process_time() - start)
    return len(body) / best / 1e6


def main() -> None:
    trips = bench_round_trips()
    print(f"data_encode_mb_s={bench_encoding(bdat=False):.1f} (CRLF + dot-stuffing)")
    print(f"bdat_encode_mb_s={bench_encoding(bdat=True):.1f} (CRLF only)")
    print(f"pipelined_round_trips={trips['pipelining+chunking']}")


if __name__ == "__main__":
    main()
