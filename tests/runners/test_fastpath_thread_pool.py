"""The asyncio worker-thread pool for blocking work (``nosend_runners.serve.fastpath``)."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from nosend_runners.serve.fastpath import ThreadPool
from nosend_runners.session.boundary import PeerInfo, ServerState, SessionContext

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the pool serves asyncio loops; trio uses anyio.to_thread


async def test_calls_run_in_another_thread_and_return_or_raise() -> None:
    pool = ThreadPool(2)
    assert await pool.run(threading.get_ident) != threading.get_ident()
    assert await pool.run(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await pool.run(divmod, 1, 0)
    pool.close()


async def test_no_more_than_size_calls_run_at_once_and_the_rest_queue() -> None:
    pool = ThreadPool(3)
    running = peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(pool.run, work)
    assert peak == 3 and pool.threads == 3
    pool.close()


async def test_a_cancelled_caller_waits_for_its_call_to_finish() -> None:
    # An fsync in flight must never be torn off (DESIGN invariant 1): the cancellation
    # reaches the caller only once the call has returned.
    pool = ThreadPool(1)
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        finished.set()

    with anyio.move_on_after(0.05) as scope:
        await pool.run(slow)
    assert scope.cancelled_caught
    assert finished.is_set()
    assert await pool.run(int, "7") == 7  # the pool still works
    pool.close()


async def test_close_ends_the_threads_and_refuses_new_calls() -> None:
    pool = ThreadPool(2)
    await pool.run(time.sleep, 0)
    threads = [t for t in threading.enumerate() if t.name.startswith("nosend-blocking")]
    pool.close()
    for thread in threads:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(RuntimeError):
        await pool.run(time.sleep, 0)


async def test_many_calls_returning_together_all_complete() -> None:
    # Completions are handed to the loop in batches: none may be left behind.
    pool = ThreadPool(4)
    results: list[int] = []

    async def one(i: int) -> None:
        results.append(await pool.run(lambda: i * i))

    for _ in range(20):
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(one, i)
    assert sorted(results) == sorted([i * i for i in range(50)] * 20)
    pool.close()


async def test_slow_hashing_does_not_hold_up_disk_work() -> None:
    # Password hashing (slow on purpose) runs in anyio's threads, the disk calls in the
    # server's small pool: a login in progress never delays a delivery.
    # The hash holds its thread until the disk call has returned: no clock in the test.
    # Were the disk call queued behind the hash, it would never return (fail_after ends
    # the wait; the hash then gives up waiting too).
    state = ServerState(thread_pool=ThreadPool(1))
    ctx = SessionContext("smtp", state=state, peer=lambda: PeerInfo("127.0.0.1"))
    hashing, disk_done, hashing_done = threading.Event(), threading.Event(), threading.Event()

    def slow_hash() -> None:
        hashing.set()
        disk_done.wait(30)
        hashing_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ctx.run_cpu_bound, slow_hash)
        with anyio.fail_after(30):
            while not hashing.is_set():
                await anyio.sleep(0.01)
        try:
            with anyio.fail_after(10):
                assert await ctx.run_blocking(int, "5") == 5
            assert not hashing_done.is_set()  # the hash was still in progress
        finally:
            disk_done.set()
    assert hashing_done.is_set()
    state.thread_pool.close()  # type: ignore[union-attr]
