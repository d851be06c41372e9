"""SIGTERM and Ctrl-C during a cycle: the cycle is cancelled, down runs to the end even
if the signal comes again, the cycle is recorded, and the exit code says which signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from nosend_link.cycle_lock import UpMarker
from nosend_link.ledger import Ledger
from nosend_link.signals import Signalled, run_until_signalled
from tests.link.link_scripts import banner_down, banner_up, free_port, gone

_CYCLE = """
import json, sys, anyio
from nosend_link.cycle import ExchangeCycle
from nosend_link.plan import Endpoint, LinkPlan, Waiting
from nosend_link.progress import LinkState
from nosend_link.signals import run_until_signalled
state, port, up, down, backend = sys.argv[1:6]
plan = LinkPlan("sat", up=tuple(json.loads(up)), down=tuple(json.loads(down)),
                probe=Endpoint("127.0.0.1", int(port)))

def show(event):
    if isinstance(event, LinkState):
        print(event.state, flush=True)

async def exchange(online):
    online.tally.wire(up=4321)
    await anyio.sleep_forever()

cycle = ExchangeCycle([plan], state, exchange, progress=show, probe_interval=0.05)

async def main():
    done = await run_until_signalled(lambda: cycle.run(Waiting(accounts=("a",))))
    print("signals", *done.signals, flush=True)
    return done.exit_code

sys.exit(anyio.run(main, backend=backend))
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_the_cycle_and_down_runs_even_if_it_comes_again(
    tmp_path: Path, backend: str, sig: signal.Signals
) -> None:
    port = free_port()
    pidfile, log = tmp_path / "server.pid", tmp_path / "link.log"
    up = banner_up(port, pidfile, log)
    # down lasts until the test has sent its signals: they always land while it runs.
    hung_up = tmp_path / "hung-up"
    down = banner_down(pidfile, log, until=hung_up)
    child = subprocess.Popen(
        [sys.executable, "-c", _CYCLE, str(tmp_path / "state"), str(port), json.dumps(up),
         json.dumps(down), backend],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None
    lines = []
    server = 0
    try:
        for line in child.stdout:
            lines.append(line.strip())
            if line == "online\n":
                server = int(pidfile.read_text())
                child.send_signal(sig)
            elif line == "hanging up\n":
                child.send_signal(sig)  # impatient: again, while down runs
                child.send_signal(signal.SIGTERM)
                hung_up.touch()
        status = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert lines[:5] == ["dialling", "probing", "online", "hanging up", "down"]
    # The kernel merges a signal sent again before it was handled: at least the first
    # and one of the later ones are noted, and none of them cut the hang-up short.
    received = lines[-1].split()
    assert received[0] == "signals" and received[1] == str(int(sig)) and len(received) >= 3
    assert status == 128 + sig
    assert log.read_text().split() == ["up", "down"] and gone(server)
    assert UpMarker(tmp_path / "state").read() == ()
    (record,) = Ledger(tmp_path / "state" / "cycles.jsonl").records()
    assert (record.result, record.bytes_up) == ("interrupted", 4321)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_without_a_signal_the_value_comes_back(anyio_backend: str) -> None:
    async def work() -> int:
        await anyio.sleep(0)
        return 7

    done = await run_until_signalled(work)
    assert done == Signalled(7, ()) and not done.interrupted and done.exit_code is None
