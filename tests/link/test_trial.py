"""``try_link`` (``nosend link test``): down runs whatever happens once up started, the
marker covers a test killed mid-way, and a dialled test is billed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from nosend_link.cycle_lock import CycleBusy, CycleLock, UpMarker
from nosend_link.ledger import Ledger
from nosend_link.plan import Endpoint, LinkPlan
from nosend_link.trial import TEST_RESULT, try_link
from tests.link.link_scripts import banner_down, banner_up, free_port, gone, hang, read_pid, touch

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_up_probe_down_and_the_bill(tmp_path: Path) -> None:
    port, pidfile, log = free_port(), tmp_path / "banner.pid", tmp_path / "log"
    plan = LinkPlan("sat", up=banner_up(port, pidfile, log), down=banner_down(pidfile, log),
                    cost_per_minute=Decimal(60), probe=Endpoint("127.0.0.1", port))
    trial = await try_link(plan, tmp_path / "state")
    assert trial.ok and trial.up is not None and trial.down is not None
    assert trial.probe is not None and trial.probe.banner == "220 test.invalid ESMTP ready"
    assert log.read_text() == "up\ndown\n"
    (record,) = Ledger(tmp_path / "state" / "cycles.jsonl").records()
    assert record.result == TEST_RESULT and record.cost == plan.cost(record.online_seconds, 0)
    assert UpMarker(tmp_path / "state").read() == ()


async def test_cancelled_while_up_hangs_still_runs_down(tmp_path: Path) -> None:
    child_pid, down_log = tmp_path / "child.pid", tmp_path / "down.log"
    plan = LinkPlan("modem", up=hang(child_pid), down=touch(down_log), up_timeout=3600)
    async with anyio.create_task_group() as tg:
        tg.start_soon(try_link, plan, tmp_path / "state")
        pid = await anyio.to_thread.run_sync(read_pid, child_pid)
        tg.cancel_scope.cancel()
    assert down_log.read_text() == "ran\n"
    assert gone(pid)  # up's whole process group went with it
    assert UpMarker(tmp_path / "state").read() == ()
    (record,) = Ledger(tmp_path / "state" / "cycles.jsonl").records()
    assert record.error == "interrupted"


async def test_a_failed_down_leaves_the_marker_for_the_next_cycle(tmp_path: Path) -> None:
    plan = LinkPlan("modem", up=touch(tmp_path / "up"), down=touch(tmp_path / "down", 1))
    trial = await try_link(plan, tmp_path / "state")
    assert not trial.ok and trial.notes
    (entry,) = UpMarker(tmp_path / "state").read()
    assert entry.link == "modem" and entry.down == plan.down


async def test_an_always_up_link_is_only_probed_and_not_billed(tmp_path: Path) -> None:
    plan = LinkPlan("lan", probe=Endpoint("127.0.0.1", free_port()), up_timeout=1)
    trial = await try_link(plan, tmp_path / "state", probe_interval=0.1)
    assert trial.up is None and trial.down is None
    assert trial.probe is not None and not trial.probe.ok and not trial.ok
    assert list(Ledger(tmp_path / "state" / "cycles.jsonl").records()) == []


async def test_busy_while_a_cycle_holds_the_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    plan = LinkPlan("modem", up=touch(tmp_path / "up"))
    with CycleLock(state), pytest.raises(CycleBusy):
        await try_link(plan, state)
    assert not (tmp_path / "up").exists()
