"""``benchmarks/bench_soak.py`` in a short run: it starts, loads, checks and reports.

The soak itself is a benchmark (run by hand for 10 minutes, figures in the issue); this
only keeps it working: 15 seconds, 50 idle connections, and its verdict lines. Nothing
here is timed; the figure asserted is the count of acknowledged messages not found.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


def test_soak_runs_short_and_loses_nothing(tmp_path: Path) -> None:
    require_tool("smtp-source")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_soak.py"), "--seconds", "15",
         "--idle", "50", "--interval", "1", "--reload-every", "5", "--dir", str(tmp_path)],
        capture_output=True, timeout=300, env={**os.environ}, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, out + result.stderr.decode(errors="replace")
    lines = out.rstrip("\n").splitlines()
    assert re.fullmatch(r"rss_growth_mb=-?\d+\.\d", lines[-2]), lines[-2:]
    assert lines[-1] == "lost_messages=0", out[-3000:]
    # The load really ran: messages were acknowledged, retrieved and deleted, reloaded.
    acked = re.search(r"^acknowledged \(smtplib, unique markers\): (\d+)$", out, re.M)
    assert acked is not None and int(acked.group(1)) > 0, out[-3000:]
    assert re.search(r"^pop3_sessions: [1-9]", out, re.M), out[-3000:]
    assert re.search(r"^reloads: ([1-9]\d*) sent, \1 logged$", out, re.M), out[-3000:]
    assert "duplicated_messages=0" in lines, out[-3000:]
    assert "crash lines in its log: 0" in out, out[-3000:]
