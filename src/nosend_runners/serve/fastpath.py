"""The asyncio-only fast paths of the anyio server, gathered behind one switch.

The reference path is plain anyio and runs on asyncio and trio alike: the server accepts
with ``listener.accept()`` and starts a task per connection
(``MailServer._accept_streams``), a receive that must wait does so in a cancel scope
around ``anyio.wait_readable`` (``AnyioStream.receive``), and blocking work goes to
``anyio.to_thread.run_sync`` (``SessionContext.run_blocking``). On asyncio, with
:data:`ENABLED` true, four optimisations of exactly those steps take over, each measured
with ``benchmarks/bench_anyio_server.py`` or ``benchmarks/bench_server.py``:

- :class:`AsyncioAcceptor`, accept callback: the listening socket stays registered with
  the loop and a readable callback accepts up to ``ACCEPT_BATCH`` connections, each a
  ``SocketByteStream`` with no asyncio transport and protocol behind it: one callback per
  connection, not a task wake-up and a new registration.
- :class:`AsyncioAcceptor`, session task reuse: a task whose session ended waits for the
  next connection (up to ``MAX_IDLE_TASKS``), cheaper than starting a task in a task group.
- :class:`AsyncioReadiness` and :func:`receive_when_readable`: a receive waits on a plain
  future and one timer with the socket registered once per connection, instead of a
  cancel scope and a registration per wait.
- :class:`ThreadPool`: blocking calls in a few threads of our own, completed with one
  ``call_soon_threadsafe``; anyio's ``to_thread`` costs about 70 Python calls and an extra
  trip round the loop (a checkpoint, a capacity limiter, a cancel scope, a copied context).

Owns: those four, :data:`ENABLED` and :func:`active`. Must not: change what a client or
a session can observe (the same tests run with the switch on and off), or abandon a
blocking call it started: a session cancelled while its call runs waits for the call to
return, so an fsync or rename in flight always completes (DESIGN invariant 1).
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import socket
import ssl
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
import anyio.abc

from nosend_runners.session.boundary import ShutdownRequested, ShutdownSignal

__all__ = [
    "ENABLED",
    "active",
    "on_asyncio",
    "BROKEN",
    "ThreadPool",
    "AsyncioReadiness",
    "receive_when_readable",
    "AsyncioAcceptor",
    "MAX_IDLE_TASKS",
    "ACCEPT_BATCH",
]

#: The one switch: ``False`` runs the reference anyio path on asyncio too.
ENABLED = True

_log = logging.getLogger("nosend.server")

# What a broken connection looks like from anyio, asyncio, trio and OpenSSL.
BROKEN = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
    ssl.SSLError,
)


def on_asyncio() -> bool:
    """Whether the running event loop is asyncio's."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def active() -> bool:
    """Whether the fast paths apply here: :data:`ENABLED`, and running on asyncio."""
    return ENABLED and on_asyncio()


# -- blocking work -------------------------------------------------------------------------

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


# -- waiting for a socket to turn readable -------------------------------------------------

_READABLE, _EXPIRED, _SHUTDOWN = "readable", "expired", "shutdown"


class AsyncioReadiness:
    """Waits for one socket to turn readable on asyncio, each wait ended by whichever
    comes first: data, the deadline or a shutdown (``cancel``, as ``ShutdownSignal``
    calls it).

    This runs for every command a client sends, so it avoids the per-wait costs: the
    socket stays registered with the loop across waits (when it turns readable with
    nobody waiting, the callback unregisters it, so nothing is ever read ahead and the
    loop does not spin), and one timer serves many waits (it is moved only when a wait
    needs an earlier deadline; when it fires early it re-arms for the current one).
    """

    __slots__ = ("loop", "_loop", "_fd", "_fut", "_registered", "_timer", "_deadline")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        #: The event loop the socket is registered with.
        self.loop = loop
        self._loop = loop
        self._fd = fd
        self._fut: asyncio.Future[str] | None = None
        self._registered = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = math.inf

    def _readable(self) -> None:
        fut = self._fut
        if fut is None or fut.done():
            # Nobody waits: stop the level-triggered wake-ups until the next wait.
            self._loop.remove_reader(self._fd)
            self._registered = False
            return
        fut.set_result(_READABLE)

    def _expired(self) -> None:
        self._timer = None
        fut = self._fut
        if fut is None or fut.done() or self._deadline == math.inf:
            return
        if self._loop.time() >= self._deadline:
            fut.set_result(_EXPIRED)
        else:
            self._timer = self._loop.call_at(self._deadline, self._expired)

    def cancel(self) -> None:
        """End the current wait as a shutdown (``ShutdownSignal.request`` calls this)."""
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(_SHUTDOWN)

    async def wait(self, deadline: float | None) -> str:
        """Wait once: ``_READABLE``, ``_EXPIRED`` (loop time ``deadline`` passed) or
        ``_SHUTDOWN``."""
        loop = self._loop
        fut = self._fut = loop.create_future()
        if not self._registered:
            loop.add_reader(self._fd, self._readable)
            self._registered = True
        if deadline is None:
            self._deadline = math.inf
        else:
            self._deadline = deadline
            timer = self._timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(deadline, self._expired)
        try:
            why: str = await fut
        finally:
            self._fut = None
        return why

    def release(self) -> None:
        """Unregister the socket and drop the timer (before closing it, or before
        someone else waits on it). Idempotent; the next ``wait`` registers again."""
        if self._registered:
            self._registered = False
            self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Receiver(Protocol):
    def try_receive(self, max_bytes: int) -> bytes | None: ...


async def receive_when_readable(
    raw: _Receiver,
    readiness: AsyncioReadiness,
    shutdown: ShutdownSignal,
    max_bytes: int,
    timeout: float | None,
    interruptible: bool,
) -> bytes:
    """``AnyioStream.receive`` once the socket had nothing: wait on ``readiness``
    (instead of a cancel scope around ``anyio.wait_readable``), then receive. ``b""``
    when the connection broke; ``TimeoutError`` after ``timeout`` seconds;
    ``ShutdownRequested`` when ``interruptible`` and the server stops."""
    deadline = None if timeout is None else readiness.loop.time() + timeout
    while True:
        if interruptible:
            shutdown.enter_idle(readiness)
            try:
                why = await readiness.wait(deadline)
            finally:
                shutdown.leave_idle(readiness)
        else:
            why = await readiness.wait(deadline)
        if why == _SHUTDOWN:
            raise ShutdownRequested
        if why == _EXPIRED:
            raise TimeoutError(f"nothing received for {timeout} seconds")
        try:
            data = raw.try_receive(max_bytes)
        except BROKEN:
            return b""
        if data is not None:
            return data


# -- accepting connections -----------------------------------------------------------------

#: Session tasks kept waiting for the next connection once their session ended.
MAX_IDLE_TASKS = 32

#: Connections taken per wake-up of a listening socket (a burst is not taken whole at
#: the expense of sessions already running).
ACCEPT_BATCH = 16

#: Makes the byte stream of an accepted socket (``SocketByteStream``).
StreamMaker = Callable[[socket.socket, Any], anyio.abc.ByteStream]
#: Runs one connection to its end (``MailServer._handle``).
Handler = Callable[[anyio.abc.ByteStream, str], Awaitable[None]]

_Next = tuple[anyio.abc.ByteStream, str] | None


class AsyncioAcceptor:
    """Accept callbacks and reused session tasks for one server (see the module
    docstring); the reference is ``MailServer._accept_streams``."""

    def __init__(self, handle: Handler, make_stream: StreamMaker, shutdown: ShutdownSignal):
        self._handle = handle
        self._make_stream = make_stream
        self._shutdown = shutdown
        #: Session tasks waiting for a connection.
        self.idle: list[asyncio.Future[_Next]] = []

    async def accept_loop(
        self, raw: socket.socket, service: str, sessions: anyio.abc.TaskGroup
    ) -> None:
        """Accept connections for ``service`` on the listening socket ``raw`` until
        cancelled, each served in a waiting session task or a new one in ``sessions``."""
        # Accept on the listening socket itself, so each connection becomes a
        # SocketByteStream with no asyncio transport and protocol behind it. The socket
        # stays registered with the loop while the server accepts: a connection costs
        # one callback, not a task wake-up and a new registration.
        raw.setblocking(False)
        loop = asyncio.get_running_loop()
        fd = raw.fileno()
        tcp = raw.family in (socket.AF_INET, socket.AF_INET6)  # asked once: an enum lookup
        registered = stopped = failing = False

        def resume() -> None:
            nonlocal registered
            # A retry after EMFILE may come due after this loop ended: then it must not.
            if not registered and not stopped and raw.fileno() >= 0:
                loop.add_reader(fd, acceptable)
                registered = True

        def acceptable() -> None:
            nonlocal registered, failing
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, address = raw.accept()
                except BlockingIOError:
                    return
                except OSError as exc:
                    if raw.fileno() < 0:
                        return
                    # EMFILE/ENFILE/ECONNABORTED: keep serving those already connected,
                    # and try again shortly rather than spin on a socket still readable.
                    # Logged once per spell, not ten lines a second onto a small disk.
                    if not failing:
                        _log.error("accept on %s failed, retrying: %s", service, exc)
                        failing = True
                    loop.remove_reader(fd)
                    registered = False
                    loop.call_later(0.1, resume)
                    return
                if failing:
                    _log.warning("accepting on %s again", service)
                    failing = False
                try:
                    if tcp:
                        # Replies are written whole; Nagle would only delay the last
                        # segment.
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    stream = self._make_stream(sock, address)
                except OSError:
                    sock.close()
                    continue
                idle = self.idle
                while idle:
                    waiting = idle.pop()
                    if not waiting.done():  # done: cancelled, its task is ending
                        waiting.set_result((stream, service))
                        break
                else:
                    sessions.start_soon(self._session_task, stream, service)

        resume()
        try:
            await anyio.sleep_forever()
        finally:
            # Before the listener is closed: its number may be reused at once.
            stopped = True
            if registered:
                registered = False
                loop.remove_reader(fd)

    async def _session_task(self, stream: anyio.abc.ByteStream, service: str) -> None:
        """Run sessions one after another in one task.

        Starting a task in an anyio task group costs several times what handing a
        connection to a waiting task does, so a task that finished its session waits for
        the next connection, up to ``MAX_IDLE_TASKS`` of them; more (after a burst) end.
        A graceful shutdown ends the waiting ones; cancellation reaches them all through
        the sessions' task group, as for any session.
        """
        loop = asyncio.get_running_loop()
        next_one: _Next = (stream, service)
        while next_one is not None:
            await self._handle(*next_one)
            # Looked up afresh: end_idle_tasks replaces the list at shutdown.
            idle = self.idle
            if self._shutdown.requested or len(idle) >= MAX_IDLE_TASKS:
                return
            waiting: asyncio.Future[_Next] = loop.create_future()
            idle.append(waiting)
            try:
                next_one = await waiting
            finally:
                if waiting in idle:
                    idle.remove(waiting)  # cancelled while idle

    def end_idle_tasks(self) -> None:
        """End the session tasks waiting for a connection (a graceful shutdown)."""
        idle, self.idle = self.idle, []
        for waiting in idle:
            if not waiting.done():
                waiting.set_result(None)
