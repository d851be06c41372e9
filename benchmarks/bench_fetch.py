"""Fetching a remote POP3 mailbox over a slow link: nosend's fetch against fetchmail.

A ``nosend serve`` holds N messages for alice; the fetcher reaches it through
``tests/link/link_proxy.py`` with ``--delay`` seconds added each way (0.3 s is a
geostationary hop), STLS verified against the test certificate, and deletes what it
fetched. Printed per fetcher and N: wall time, turnarounds the proxy saw, bytes each way.
nosend pipelines (RETRs in one write, DELEs and QUIT in another), so its turnarounds do
not grow with N; fetchmail works in lock step. fetchmail is skipped when not installed.

    PYTHONPATH=src python benchmarks/bench_fetch.py [--delay 0.3] [--counts 5,25]

Ends with ``fetch_turnarounds_<N>=<n>`` for the largest N (nosend).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.interop.conftest import build_server, make_tls_files  # noqa: E402
from tests.link.fetch_helpers import local_site  # noqa: E402
from tests.link.link_proxy import LinkProxy  # noqa: E402


def _message(i: int) -> bytes:
    body = b"".join(b"line %04d of a 4 KB message, some words to fill it up\n" % j
                    for j in range(70))
    return b"From: shore@isp.test\nTo: alice@nosend.test\nSubject: m%d\n\n" % i + body


def _fetchmail(port: int, cert: Path, password: str, work: Path) -> tuple[int, int]:
    fetchmail = shutil.which("fetchmail")
    assert fetchmail is not None
    out = work / "delivered"
    out.mkdir(exist_ok=True)
    rc = work / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll localhost protocol pop3 port {port} uidl\n"
        f'  user "alice" there with password "{password}" is "root" here\n'
        f'  sslproto tls1.2+ sslcertck sslcertfile "{cert}"\n  nokeep\n'
        f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [fetchmail, "-f", str(rc), "-i", str(work / "ids"), "--pidfile",
         str(work / "pid"), "--nosyslog"],
        capture_output=True, timeout=600,
        env={"PATH": os.environ["PATH"], "HOME": str(work), "FETCHMAILHOME": str(work)},
    )  # fmt: skip
    return result.returncode, len(os.listdir(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.3, help="seconds added each way")
    parser.add_argument("--counts", default="5,25", help="message counts to try")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    tls = make_tls_files(root)
    (root / "provider").mkdir()
    server = build_server(root / "provider", tls, ("pop3",))
    server.start()
    last = 0
    try:
        print(f"delay {args.delay:g} s each way; {'fetcher':<10} {'N':>4} {'seconds':>8} "
              f"{'turns':>6} {'up':>8} {'down':>9}")
        for count in counts:
            for fetcher in ("nosend", "fetchmail"):
                if fetcher == "fetchmail" and shutil.which("fetchmail") is None:
                    print("fetchmail not installed: skipped")
                    continue
                for i in range(count):
                    server.deliver_directly("alice", _message(i))
                work = root / f"{fetcher}-{count}"
                work.mkdir()
                with LinkProxy("127.0.0.1", server.port("pop3"), delay=args.delay) as proxy:
                    started = time.monotonic()
                    if fetcher == "nosend":
                        site = local_site(work, "127.0.0.1", proxy.port, "alice",
                                          server.users["alice"], tls="starttls",
                                          ca_file=str(tls.cert))
                        report = site.fetch()
                        ok, got = report.ok, report.fetched
                    else:
                        code, got = _fetchmail(proxy.port, tls.cert, server.users["alice"],
                                               work)
                        ok = code == 0
                    elapsed = time.monotonic() - started
                    counters = proxy.counters.snapshot()
                if not ok or got != count or server.messages("alice"):
                    print(f"{fetcher}: fetched {got} of {count}, ok={ok}")
                print(f"{'':>22}{fetcher:<10} {count:>4} {elapsed:8.2f} "
                      f"{counters['turnarounds']:>6} {counters['bytes_up']:>8} "
                      f"{counters['bytes_down']:>9}")
                if fetcher == "nosend":
                    last = counters["turnarounds"]
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"fetch_turnarounds_{counts[-1]}={last}")


if __name__ == "__main__":
    main()
