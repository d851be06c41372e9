"""``benchmarks/bench_transport.py`` still runs: a tiny cycle, every contender checked.

The benchmark's figures are not asserted (no timed assertions); what is asserted is that
it exits 0, that each contender really moved its messages (the benchmark prints ``NO``
in its ``ok`` column and a diagnosis when one did not), and that it ends with the
``cycle_vs_fetchmail=<number>`` line the README promises. It needs Postfix (started as
root) and fetchmail, like the benchmark.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]


def test_bench_transport_runs_a_tiny_cycle_and_prints_the_ratio() -> None:
    require_tool("postfix")
    require_tool("fetchmail")
    require_tool("openssl")
    if os.geteuid() != 0:
        pytest.skip("Postfix's master must be started as root")
    paths = [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_transport.py"),
         "--messages", "3", "--delay", "0.01", "--size", "2000"],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"cycle_vs_fetchmail=\d+\.\d+", lines[-1]), done.stdout
    table = {line.split("  ")[0]: line for line in lines if line.startswith(
        ("nosend exchange", "Postfix flush", "fetchmail", "Postfix + fetchmail"))}
    assert len(table) == 4, done.stdout
    assert all(line.endswith(" yes") for line in table.values()), done.stdout
