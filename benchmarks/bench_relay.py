"""What relaying the queue costs on a slow link: one connection per cycle vs one per message.

A real ``nosend serve`` is the smarthost (submission, STARTTLS, AUTH); LinkProxy adds
``--delay`` seconds each way (0.3 s: a geostationary hop, 0.6 s round trip). For 1, 10
and 30 queued 2 KB messages it prints, for ``relay_queue`` (one TCP + TLS + AUTH
handshake for the queue, PIPELINING and CHUNKING) and for the msmtp-style alternative
(one connection, TLS handshake and AUTH per message, here ``relay_queue(only=[id])``
per message): connections, round trips, octets up/down and wall time. The last line is
``relay_round_trips_30=<number>``. Run:
``PYTHONPATH=$PWD/src:$PWD python benchmarks/bench_relay.py [--delay 0.3]`` (absolute
paths: the smarthost runs in its own directory).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.interop.conftest import build_server, make_tls_files
from tests.link.link_proxy import LinkProxy
from tests.link.relay_support import boat_config, enqueue, message, relay

from nosend_link.relay import TimeLimit

LIMIT = TimeLimit(base=60.0, min_rate=1000.0)


def _run(root: Path, smarthost_port: int, cert: Path, count: int, per_message: bool,
         delay: float) -> tuple[int, int, int, int, float]:
    with LinkProxy("127.0.0.1", smarthost_port, delay=delay) as proxy:
        boat = root / f"boat-{count}-{per_message}"
        boat.mkdir()
        config = boat_config(boat, proxy.port, ca_file=cert)
        ids = [enqueue(config, message(n, size=2_000)) for n in range(count)]
        started = time.monotonic()
        round_trips = 0
        if per_message:
            for qid in ids:
                round_trips += relay(config, only=[qid], message_timeout=LIMIT).round_trips
        else:
            round_trips = relay(config, message_timeout=LIMIT).round_trips
        elapsed = time.monotonic() - started
        counts = proxy.counters.snapshot()
    return counts["connections"], round_trips, counts["bytes_up"], counts["bytes_down"], elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.3, help="seconds each way")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    tls = make_tls_files(root)
    (root / "smarthost").mkdir()
    server = build_server(root / "smarthost", tls, ("submission",), trusted_networks="")
    server.start()
    last = 0
    try:
        print(f"link delay {args.delay:g} s each way; 2 KB messages")
        print(f"{'messages':>8} {'mode':<22} {'conns':>5} {'round trips':>11} "
              f"{'up':>9} {'down':>9} {'seconds':>8}")
        for count in (1, 10, 30):
            for per_message in (False, True):
                conns, trips, up, down, elapsed = _run(
                    root, server.port("submission"), tls.cert, count, per_message, args.delay)
                mode = "one per message" if per_message else "one per cycle"
                print(f"{count:>8} {mode:<22} {conns:>5} {trips:>11} {up:>9} {down:>9} "
                      f"{elapsed:>8.1f}")
                if count == 30 and not per_message:
                    last = trips
    finally:
        server.stop()
    print(f"relay_round_trips_30={last}")


if __name__ == "__main__":
    main()
