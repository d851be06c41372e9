"""mail.cfg figures: parse+validate a large file, resolve addresses, verify passwords, edit.

Run: python benchmarks/bench_config.py
Prints one line per figure and ends with ``config_parse_ms=<number>``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from nosend_store.config import parse_config, write_atomically
from nosend_store.config_edit import edit_config
from nosend_store.passwords import SCHEMES, hash_password, verify_password

MAILBOXES = 2000
ALIASES = 2000
HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"


def big_config() -> str:
    parts = ["# benchmark\n[server]\nhostname = mail.example.org\ndata_dir = /tmp/x\n"]
    parts.append("[domains]\nexample.org\nexample.net\n")
    for i in range(MAILBOXES):
        parts.append(f"[mailbox m{i}]   # mailbox {i}\npassword = {HASH}\n\n")
    parts.append("[aliases]\n")
    for i in range(ALIASES):
        parts.append(f"a{i}@example.org = m{i}, m{(i + 1) % MAILBOXES}, x{i}@outside.net\n")
    parts.append("@example.net = m0\n")
    return "".join(parts)


def best_of(n: int, fn: object) -> float:
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    text = big_config()
    parse = best_of(5, lambda: parse_config(text, "bench.cfg"))
    print(f"parse+validate {MAILBOXES} mailboxes, {ALIASES} aliases: {parse * 1000:.1f} ms")

    config = parse_config(text, "bench.cfg")
    addresses = [f"a{i}@example.org" for i in range(0, ALIASES, 7)]
    addresses += [f"m{i}+tag@example.org" for i in range(0, MAILBOXES, 7)]
    addresses += ["someone@example.net", "x@elsewhere.org", "nobody@example.org"]
    rounds = 20
    start = time.perf_counter()
    for _ in range(rounds):
        for address in addresses:
            config.resolve(address)
    per_second = rounds * len(addresses) / (time.perf_counter() - start)
    print(f"resolve: {per_second:,.0f} addresses/s")

    for scheme in SCHEMES:
        stored = hash_password("benchmark password", scheme)
        cost = best_of(5, lambda stored=stored: verify_password("benchmark password", stored))
        print(f"verify_password {scheme}: {cost * 1000:.1f} ms per login")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mail.cfg"
        write_atomically(path, text)
        counter = iter(range(1000))
        edit = best_of(
            5, lambda: edit_config(path, lambda d: d.add_domain(f"d{next(counter)}.example"))
        )
        print(
            f"edit (add a domain to the large file, validate, fsync, rename): {edit * 1000:.1f} ms"
        )
        edit = best_of(
            5,
            lambda: edit_config(path, lambda d: d.add_mailbox(f"new{next(counter)}", HASH)),
        )
        print(f"edit (add a mailbox to the large file): {edit * 1000:.1f} ms")

    print(f"config_parse_ms={parse * 1000:.1f}")


if __name__ == "__main__":
    main()
