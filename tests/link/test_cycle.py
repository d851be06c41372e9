"""The exchange cycle with stand-in up/down commands: a banner server on 127.0.0.1 is
the "link" (up starts it, down stops it, the probe reads its banner).

What must hold: down always runs (exchange error, cancellation, max_online, a failed or
hung up), a failed link falls back to the next, a killed cycle's link is brought down
by the next, two cycles never overlap, the ledger records exact bytes and costs, and a
dry run changes nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from nosend_link.cycle import (
    STALE_LINK,
    CycleResult,
    ExchangeCycle,
    ExchangeResult,
    OnlineLink,
)
from nosend_link.cycle_lock import LinkUp, UpMarker
from nosend_link.ledger import SHARED, Ledger, UserShare
from nosend_link.plan import Endpoint, Hours, LinkPlan, Waiting
from nosend_link.progress import CycleEnded, LinkState, ProgressEvent, Transfer
from tests.link.link_scripts import (
    alive,
    banner_down,
    banner_up,
    free_port,
    gone,
    hang,
    read_pid,
    touch,
)

pytestmark = pytest.mark.anyio

WAITING = Waiting(sizes_out=(100_000,), accounts=("home",))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self, now: float = 5000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class BannerLink:
    """A link whose up starts a banner server and whose down stops it."""

    plan: LinkPlan
    log: Path
    pidfile: Path

    def ran(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def server_pid(self) -> int:
        return read_pid(self.pidfile)


#: Banner server pids, noted while they run (down removes the pid file).
_pids: dict[str, int] = {}


def banner_link(tmp: Path, name: str, **kw: object) -> BannerLink:
    port = free_port()
    log, pidfile = tmp / f"{name}.log", tmp / f"{name}.pid"
    plan = LinkPlan(name, up=banner_up(port, pidfile, log), down=banner_down(pidfile, log),
                    probe=Endpoint("127.0.0.1", port), **kw)  # type: ignore[arg-type]
    return BannerLink(plan, log, pidfile)


@dataclass
class Seen:
    events: list[ProgressEvent] = field(default_factory=list)

    def states(self) -> list[str]:
        return [f"{e.link} {e.state}" for e in self.events if isinstance(e, LinkState)]


def cycle(tmp: Path, plans: list[LinkPlan], exchange: Callable[[OnlineLink], object],
          seen: Seen | None = None, **kw: object) -> ExchangeCycle:
    return ExchangeCycle(plans, tmp / "state", exchange,  # type: ignore[arg-type]
                         progress=(seen or Seen()).events.append, probe_interval=0.05,
                         kill_grace=1.0, **kw)  # type: ignore[arg-type]


async def test_a_cycle_dials_exchanges_hangs_up_and_bills_exactly(tmp_path: Path) -> None:
    clock = FakeClock()
    link = banner_link(tmp_path, "iridium", cost_per_minute=Decimal("1.50"),
                       cost_per_megabyte=Decimal("8.00"))
    server_alive_during_exchange = []

    async def exchange(online: OnlineLink) -> ExchangeResult:
        _pids["iridium"] = link.server_pid()
        server_alive_during_exchange.append(alive(_pids["iridium"]))
        assert online.probe is not None and online.probe.banner.startswith("220 ")
        online.tally.wire(up=110_000, down=140_000)
        online.tally.sent("owner", 100_000)
        online.report("out", 1, 1, bytes_left=0)
        online.tally.received("crew", 150_000)
        clock.now += 120.0  # two minutes online
        return ExchangeResult(True)

    seen = Seen()
    outcome = await cycle(tmp_path, [link.plan], exchange, seen, monotonic=clock,
                          clock=lambda: 1_800_000_000.0).run(WAITING)
    assert outcome.result is CycleResult.DONE and outcome.result.exit_code == 0
    assert server_alive_during_exchange == [True]
    assert link.ran() == ["up", "down"] and gone(_pids["iridium"])
    assert seen.states() == ["iridium dialling", "iridium probing", "iridium online",
                             "iridium hanging up", "iridium down"]
    assert any(isinstance(e, Transfer) for e in seen.events)
    assert isinstance(seen.events[-1], CycleEnded) and seen.events[-1].result == "done"
    assert not UpMarker(tmp_path / "state").path.exists()
    (record,) = Ledger(tmp_path / "state" / "cycles.jsonl").records()
    assert record == outcome.record
    assert (record.link, record.result, record.error) == ("iridium", "done", None)
    assert (record.bytes_up, record.bytes_down) == (110_000, 140_000)
    assert (record.messages_out, record.messages_in) == (1, 1)
    assert record.online_seconds == 120.0
    # 2 min x 1.50 + 0.25 MB x 8.00, split 100k : 150k.
    assert record.cost == Decimal("5.0000")
    assert record.users == (UserShare("crew", 0, 150_000, Decimal("3.0000")),
                            UserShare("owner", 100_000, 0, Decimal("2.0000")))
    assert record.start == 1_800_000_000.0


async def test_a_link_whose_up_fails_falls_back_to_the_next(tmp_path: Path) -> None:
    downs = tmp_path / "gsm-down"
    gsm = LinkPlan("gsm", priority=1, up=touch(tmp_path / "gsm-up", status=1),
                   down=touch(downs))
    sat = banner_link(tmp_path, "sat", priority=2)

    async def exchange(online: OnlineLink) -> ExchangeResult:
        assert online.plan.name == "sat"
        return ExchangeResult(True)

    seen = Seen()
    outcome = await cycle(tmp_path, [gsm, sat.plan], exchange, seen).run(WAITING)
    assert outcome.result is CycleResult.DONE
    assert downs.read_text() == "ran\n"  # a failed dial is still hung up
    assert sat.ran() == ["up", "down"]
    assert outcome.record is not None and outcome.record.link == "sat"
    (attempt,) = outcome.record.attempts
    assert attempt.link == "gsm" and attempt.error == f"up: {sys.executable}: exit status 1"
    assert seen.states()[:4] == ["gsm dialling", "gsm failed", "gsm hanging up", "gsm down"]


async def test_a_hung_up_is_killed_at_up_timeout_and_the_next_link_is_tried(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "dialler.pid"
    downs = tmp_path / "hung-down"
    hung = LinkPlan("hung", priority=1, up=hang(pidfile), down=touch(downs), up_timeout=5.0)
    sat = banner_link(tmp_path, "sat", priority=2)

    async def exchange(online: OnlineLink) -> ExchangeResult:
        return ExchangeResult(True)

    outcome = await cycle(tmp_path, [hung, sat.plan], exchange).run(WAITING)
    assert outcome.result is CycleResult.DONE and outcome.record is not None
    assert gone(read_pid(pidfile))  # the dialler's child went with its group
    assert downs.read_text() == "ran\n"
    assert "no exit within its timeout" in outcome.record.attempts[0].error


async def test_a_probe_that_never_answers_fails_the_link(tmp_path: Path) -> None:
    downs = tmp_path / "down"
    mute = LinkPlan("mute", up=touch(tmp_path / "up"), down=touch(downs), up_timeout=1.0,
                    probe=Endpoint("127.0.0.1", free_port()))
    called = []

    async def exchange(online: OnlineLink) -> ExchangeResult:
        called.append(online)
        return ExchangeResult(True)

    outcome = await cycle(tmp_path, [mute], exchange).run(WAITING)
    assert outcome.result is CycleResult.LINK_FAILED and outcome.result.exit_code == 3
    assert called == [] and downs.read_text() == "ran\n"
    assert outcome.record is not None and outcome.record.link is None
    assert "cannot connect" in outcome.record.attempts[0].error
    assert [r.result for r in Ledger(tmp_path / "state" / "cycles.jsonl").records()] == [
        "link failed"]


async def test_an_error_in_the_exchange_still_hangs_up_and_keeps_the_tally(
    tmp_path: Path,
) -> None:
    link = banner_link(tmp_path, "sat")

    async def exchange(online: OnlineLink) -> ExchangeResult:
        _pids["sat"] = link.server_pid()
        online.tally.wire(up=500, down=700)
        raise RuntimeError("smarthost closed the connection")

    outcome = await cycle(tmp_path, [link.plan], exchange).run(WAITING)
    assert outcome.result is CycleResult.PARTLY and outcome.result.exit_code == 1
    assert link.ran() == ["up", "down"] and gone(_pids["sat"])
    assert outcome.record is not None
    assert (outcome.record.bytes_up, outcome.record.bytes_down) == (500, 700)
    assert outcome.record.error == "exchange: RuntimeError: smarthost closed the connection"


async def test_an_incomplete_exchange_is_partly_done(tmp_path: Path) -> None:
    link = LinkPlan("marina")  # always up, no probe: nothing to dial

    async def exchange(online: OnlineLink) -> ExchangeResult:
        return ExchangeResult(False, "1 message deferred: 451 try later")

    outcome = await cycle(tmp_path, [link], exchange).run(WAITING)
    assert outcome.result is CycleResult.PARTLY and outcome.record is not None
    assert outcome.record.error == "1 message deferred: 451 try later"


async def test_max_online_cancels_the_exchange_and_hangs_up(tmp_path: Path) -> None:
    link = banner_link(tmp_path, "sat", max_online=3.0)

    async def exchange(online: OnlineLink) -> ExchangeResult:
        _pids["sat"] = link.server_pid()
        online.tally.wire(up=1234)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    outcome = await cycle(tmp_path, [link.plan], exchange).run(WAITING)
    assert outcome.result is CycleResult.PARTLY and outcome.record is not None
    assert outcome.record.error == "max_online reached (3 s)"
    assert outcome.record.bytes_up == 1234
    assert link.ran() == ["up", "down"] and gone(_pids["sat"])
    assert not UpMarker(tmp_path / "state").path.exists()


async def test_cancellation_runs_down_and_records_the_cycle(tmp_path: Path) -> None:
    link = banner_link(tmp_path, "sat", cost_per_megabyte=Decimal("10"))
    online_now = anyio.Event()

    async def exchange(online: OnlineLink) -> ExchangeResult:
        _pids["sat"] = link.server_pid()
        online.tally.wire(up=100_000)
        online.tally.sent("owner", 90_000)
        online_now.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    the_cycle = cycle(tmp_path, [link.plan], exchange)
    async with anyio.create_task_group() as tg:
        tg.start_soon(the_cycle.run, WAITING)
        await online_now.wait()
        tg.cancel_scope.cancel()  # what Ctrl-C and SIGTERM become
    assert link.ran() == ["up", "down"] and gone(_pids["sat"])
    assert not UpMarker(tmp_path / "state").path.exists()
    (record,) = Ledger(tmp_path / "state" / "cycles.jsonl").records()
    assert (record.result, record.link, record.error) == ("interrupted", "sat", "interrupted")
    assert record.bytes_up == 100_000 and record.cost == Decimal("1.0000")
    assert record.users == (UserShare("owner", 90_000, 0, Decimal("1.0000")),)
    assert CycleResult.INTERRUPTED.exit_code == 130


async def test_a_second_cycle_is_refused_while_one_runs(tmp_path: Path) -> None:
    link = LinkPlan("marina")
    inside, leave = anyio.Event(), anyio.Event()

    async def exchange(online: OnlineLink) -> ExchangeResult:
        inside.set()
        await leave.wait()
        return ExchangeResult(True)

    async def idle(online: OnlineLink) -> ExchangeResult:
        raise AssertionError("the second cycle must not exchange")

    results = []
    async with anyio.create_task_group() as tg:
        async def first() -> None:
            results.append(await cycle(tmp_path, [link], exchange).run(WAITING))

        tg.start_soon(first)
        await inside.wait()
        second = await cycle(tmp_path, [link], idle).run(WAITING)
        leave.set()
    assert second.result is CycleResult.BUSY and second.result.exit_code == 75
    assert second.message == f"another cycle is running (pid {os.getpid()})"
    assert second.record is None
    assert results[0].result is CycleResult.DONE
    assert [r.result for r in Ledger(tmp_path / "state" / "cycles.jsonl").records()] == ["done"]


async def test_a_stale_marker_is_brought_down_and_billed_first(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    link = banner_link(tmp_path, "iridium", cost_per_minute=Decimal("1.20"))
    subprocess.run(link.plan.up, check=True)  # the killed cycle's up
    server = link.server_pid()
    UpMarker(state).add(LinkUp("iridium", link.plan.down, 1_800_000_000.0, 99999))

    async def exchange(online: OnlineLink) -> ExchangeResult:
        raise AssertionError("nothing waits")

    outcome = await cycle(tmp_path, [link.plan], exchange,
                          clock=lambda: 1_800_000_600.0).run(Waiting())
    assert outcome.result is CycleResult.NOTHING and outcome.result.exit_code == 0
    assert gone(server) and link.ran() == ["up", "down"]
    assert UpMarker(state).read() == ()
    (record,) = Ledger(state / "cycles.jsonl").records()
    assert (record.result, record.link, record.online_seconds) == (STALE_LINK, "iridium", 600.0)
    assert record.cost == Decimal("12.0000")  # ten minutes left up at 1.20
    assert record.users == (UserShare(SHARED, cost=Decimal("12.0000")),)
    assert record.error == f"left up by pid 99999, brought down by pid {os.getpid()}"


async def test_a_stale_link_gone_from_the_config_is_brought_down_by_its_recorded_down(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    downs = tmp_path / "down"
    UpMarker(state).add(LinkUp("old", touch(downs), 1_800_000_000.0, 99999))

    async def exchange(online: OnlineLink) -> ExchangeResult:
        raise AssertionError("nothing waits")

    done = await cycle(tmp_path, [], exchange).bring_down_stale()
    assert done == [] and downs.read_text() == "ran\n" and UpMarker(state).read() == ()


async def test_a_failed_down_keeps_the_marker_for_the_next_cycle(tmp_path: Path) -> None:
    downs = tmp_path / "down"
    link = LinkPlan("gsm", up=touch(tmp_path / "up"), down=touch(downs, status=2))

    async def exchange(online: OnlineLink) -> ExchangeResult:
        return ExchangeResult(True)

    outcome = await cycle(tmp_path, [link], exchange).run(WAITING)
    assert outcome.result is CycleResult.PARTLY and outcome.record is not None
    assert outcome.record.error == (
        f"down: {sys.executable}: exit status 2 (the link may still be up)")
    assert [e.link for e in UpMarker(tmp_path / "state").read()] == ["gsm"]
    again = await cycle(tmp_path, [link], exchange).run(Waiting())
    assert downs.read_text() == "ran\nran\n"  # the next cycle tried again first
    assert again.record is not None and "gsm left up by pid" in str(again.record.error)


async def test_nothing_to_do_or_no_usable_link_touches_no_link(tmp_path: Path) -> None:
    ups = tmp_path / "up"
    link = LinkPlan("gsm", up=touch(ups), down=touch(ups), enabled=False)

    async def exchange(online: OnlineLink) -> ExchangeResult:
        raise AssertionError("no link")

    nothing = await cycle(tmp_path, [link], exchange).run(Waiting())
    assert nothing.result is CycleResult.NOTHING
    blocked = await cycle(tmp_path, [link], exchange).run(WAITING)
    assert blocked.result is CycleResult.NO_LINK and blocked.result.exit_code == 4
    assert blocked.message == "gsm: disabled"
    assert not ups.exists()
    assert list(Ledger(tmp_path / "state" / "cycles.jsonl").records()) == []


async def test_a_dry_run_changes_nothing(tmp_path: Path) -> None:
    link = banner_link(tmp_path, "sat", cost_per_minute=Decimal("1"))

    async def exchange(online: OnlineLink) -> ExchangeResult:
        online.tally.wire(up=10)
        return ExchangeResult(True)

    the_cycle = cycle(tmp_path, [link.plan], exchange)
    await the_cycle.run(WAITING)
    before = snapshot(tmp_path)
    run = the_cycle.dry_run(WAITING)
    assert run.link is not None and run.link.plan.name == "sat"
    assert snapshot(tmp_path) == before
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    cycle(fresh, [link.plan], exchange).dry_run(WAITING)
    assert list(fresh.iterdir()) == []  # not even the state folder


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


_KILLED_CYCLE = """
import sys, anyio
from nosend_link.cycle import ExchangeCycle
from nosend_link.plan import Endpoint, Hours, LinkPlan, Waiting
state, port, up, down = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
import json
plan = LinkPlan("sat", up=tuple(json.loads(up)), down=tuple(json.loads(down)),
                probe=Endpoint("127.0.0.1", port))
async def exchange(online):
    print("online", flush=True)
    await anyio.sleep_forever()
anyio.run(ExchangeCycle([plan], state, exchange, probe_interval=0.05).run,
          Waiting(accounts=("a",)))
"""


async def test_a_cycle_killed_with_the_link_up_is_cleaned_up_by_the_next(
    tmp_path: Path,
) -> None:
    import json

    link = banner_link(tmp_path, "sat")
    assert link.plan.probe is not None
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CYCLE, str(tmp_path / "state"),
         str(link.plan.probe.port), json.dumps(link.plan.up), json.dumps(link.plan.down)],
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout is not None
        line = await anyio.to_thread.run_sync(child.stdout.readline)
        assert line == b"online\n"
        child.send_signal(signal.SIGKILL)  # no finally, no down: the marker must do
    finally:
        child.wait()
        if child.stdout:
            child.stdout.close()
    server = link.server_pid()
    assert alive(server) and link.ran() == ["up"]

    async def exchange(online: OnlineLink) -> ExchangeResult:
        return ExchangeResult(True)

    outcome = await cycle(tmp_path, [link.plan], exchange).run(Waiting())
    assert outcome.result is CycleResult.NOTHING
    assert gone(server) and link.ran() == ["up", "down"]
    assert [r.result for r in Ledger(tmp_path / "state" / "cycles.jsonl").records()] == [
        STALE_LINK]


async def test_the_end_of_a_links_hours_ends_the_call(tmp_path: Path) -> None:
    link = banner_link(tmp_path, "night", hours=Hours.parse("22:00-06:00"))
    seconds_left = []

    async def exchange(online: OnlineLink) -> ExchangeResult:
        _pids["night"] = link.server_pid()
        seconds_left.append(online.seconds_left)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    # Two seconds before the cheap rate ends.
    almost_six = datetime(2026, 12, 8, 5, 59, 58, tzinfo=UTC)
    outcome = await cycle(tmp_path, [link.plan], exchange,
                          local_time=lambda: almost_six).run(WAITING)
    assert outcome.result is CycleResult.PARTLY and outcome.record is not None
    assert outcome.record.error == "the link's hours ended (06:00)"
    assert 0 < seconds_left[0] <= 2.0
    assert link.ran() == ["up", "down"] and gone(_pids["night"])
