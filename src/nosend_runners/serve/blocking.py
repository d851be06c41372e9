"""Blocking work (disk, password hashing) in worker threads, cheaply, on asyncio.

Owns: :class:`ThreadPool`, a bounded pool of worker threads that run the blocking calls
of the sessions on one asyncio event loop (``SessionContext.run_blocking`` uses it under
``nosend serve`` on asyncio; elsewhere it falls back to ``anyio.to_thread``). Must not:
abandon a call it started or queued: a session cancelled while its call runs waits for
the call to return, so an fsync or rename in flight always completes (DESIGN
invariant 1).

Why not ``anyio.to_thread.run_sync``: a session makes one such call per message, and
anyio's costs about 70 Python calls and an extra trip round the event loop (a
checkpoint, a capacity limiter, a cancel scope, a copied context); this one costs a
handful. Measured with ``python benchmarks/bench_server.py`` (2 KB messages).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

__all__ = ["ThreadPool"]

T = TypeVar("T")

_STOP = None  # put on the queue once per thread by close()


class _Job:
    """One call: run in a worker thread, completed in the loop's thread."""

    __slots__ = ("fn", "args", "loop", "fut", "result", "error", "done", "finished", "pool")

    def __init__(
        self,
        pool: ThreadPool,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.pool = pool
        self.fn = fn
        self.args = args
        self.loop = loop
        self.fut: asyncio.Future[Any] = loop.create_future()
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        #: Set when the caller was cancelled and waits for the call to end anyway.
        self.finished: asyncio.Future[None] | None = None

    def run_in_thread(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            self.error = exc
        self.pool._finished(self)

    def complete(self) -> None:
        self.done = True
        self.pool._pending -= 1
        fut = self.fut
        if not fut.done():
            if self.error is not None:
                fut.set_exception(self.error)
            else:
                fut.set_result(self.result)
        self.error = None  # no reference cycle through the traceback
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)


class ThreadPool:
    """At most ``size`` daemon threads running blocking calls for one event loop.

    Threads start as calls need them and then wait for more work; calls beyond
    ``size`` queue in order. Use from the loop's own thread only.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a thread pool needs at least one thread")
        self._size = size
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._pending = 0  # calls submitted and not yet completed (loop thread only)
        self._closed = False
        # Calls that returned, waiting for the loop's thread; one wake-up of the loop
        # (a write to its self-pipe) takes all that returned meanwhile.
        self._returned: deque[_Job] = deque()
        self._wake_pending = False

    @property
    def threads(self) -> int:
        """Worker threads started so far."""
        return len(self._threads)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Return ``fn(*args)`` run in a worker thread (its exception is raised here).

        Cancelling the caller does not abandon the call: the caller waits, shielded,
        for it to return, then the cancellation goes on.
        """
        if self._closed:
            raise RuntimeError("thread pool is closed")
        job = _Job(self, fn, args, asyncio.get_running_loop())
        self._pending += 1
        if self._pending > len(self._threads) and len(self._threads) < self._size:
            self._start_thread()
        self._queue.put(job)
        try:
            result: T = await job.fut
        except asyncio.CancelledError:
            if not job.done:
                job.finished = job.loop.create_future()
                with anyio.CancelScope(shield=True):
                    await job.finished
            raise
        return result

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"nosend-blocking-{len(self._threads) + 1}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _finished(self, job: _Job) -> None:
        # In a worker thread. Append first, then look at the flag: the loop clears the
        # flag before it empties the deque, so a job is never left behind.
        self._returned.append(job)
        if not self._wake_pending:
            self._wake_pending = True
            try:
                job.loop.call_soon_threadsafe(self._complete_returned)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

    def _complete_returned(self) -> None:
        self._wake_pending = False
        returned = self._returned
        while returned:
            returned.popleft().complete()

    def _work(self) -> None:
        get = self._queue.get
        while (job := get()) is not None:
            job.run_in_thread()

    def close(self) -> None:
        """Let the threads end once the queued calls are done (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
