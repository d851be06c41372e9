"""Fetching one remote POP3 account: never lose a message, never fetch one twice.

Owns: :func:`fetch_account` (one session with one ``[account NAME]`` of ``type = pop3``)
and its result, :class:`FetchReport`. Must not: pick or dial links, send the queue, or
log a secret (DESIGN invariant 5); the link layer calls it once the link is up.

A session, and what it costs in round trips (PIPELINING offered, RFC 2449 section 6.6)::

    greeting, CAPA, [STLS + handshake, CAPA], login        set-up, as the server allows
    UIDL + LIST                                            1
    every RETR and TOP, in writes of 64                    1 per 64 messages
    every DELE + QUIT                                      1 per 64 messages

so the cost does not grow with the number of messages (a server without PIPELINING gets
one command at a time, as RFC 2449 requires).

What happens to each message the server lists, by what :mod:`nosend_store.fetch_state`
holds for its UIDL:

* delivered: with ``keep = no`` DELE without downloading it again (the link dropped
  before QUIT last time, so the server still has it); with ``keep = yes`` nothing;
* unknown, and not larger than the cap (the smaller of the account's ``max_size`` and the
  link's ``link_max_size``): RETR, streamed into the Maildirs, delivered exactly once
  (staged, pending record, published, recorded: see ``fetch_state``), then DELE with
  ``keep = no``;
* unknown and larger: ``TOP n 20`` (RFC 1939 section 7), one notice to the mailbox owner
  (delivered exactly once by the same protocol), and the message is recorded as held;
* held: nothing while it is over this session's cap (no second notice); fetched without
  a request in a session whose cap lets it through (held over the satellite, fetched at
  the harbour); ``nosend held fetch`` fetches it whatever the cap, over any link or the
  link named; ``nosend held delete`` has it deleted unread.

Where the mail goes: ``deliver_to`` (single-drop) names a mailbox or a local address;
``multidrop = FALLBACK`` delivers each message to the local recipients named in its
header (:mod:`nosend_link.multidrop`) and to ``FALLBACK`` when it names none, adding the
loop marker; a message that already carries :data:`~nosend_link.multidrop.MAX_LOOPS`
of our markers goes to the fallback, with a log line. Fetched mail is delivered to local
Maildirs only: an address that resolves to remote recipients gets the local part of its
resolution, and the remote part is logged and not forwarded (sending fetched mail back
over the link it came from is left to a later step).

Trace: each delivered copy starts with
``Received: from HOST by OURHOST (nosend fetch, account NAME) with POP3; DATE`` -- RFC
5321 section 4.4's form, with ``POP3`` as fetchmail writes it (it is not in the
registry of WITH values; the comment names the account).

Servers without UIDL: see ``fetch_state``'s docstring. Such an account is only fetched
with ``keep = no`` (otherwise the report says why not and nothing is fetched); each
message is fetched, delivered durably and deleted in the same session, no size cap
applies (nothing could remember a held message), and a link dropped before QUIT brings
the messages of that session again: nothing is lost, some may arrive twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import anyio
import anyio.to_thread

from nosend_link.multidrop import MAX_LOOPS, loop_count, loop_header, recipients_from_header
from nosend_link.notice import PREVIEW_LINES, build_notice, preview_lines, summarise
from nosend_link.secrets import SecretError, resolve_secret
from nosend_link.transfer_events import (
    MessageDone,
    Outcome,
    ProgressCallback,
    TransferEvent,
    TransferFinished,
    TransferStarted,
)
from nosend_proto import ProtocolError
from nosend_proto.pop3_client_events import (
    CommandFailed,
    CommandOK,
    ConnectionClosed,
    Dele,
    List,
    ListReply,
    MessageBegins,
    MessageComplete,
    MessageData,
    POP3Command,
    Quit,
    Retr,
    SignedOff,
    Top,
    Uidl,
    UidlReply,
)
from nosend_runners.client.connection import LinkMeter, UpstreamError
from nosend_runners.client.pop3 import POP3Client, POP3Error
from nosend_store.config import Account, Config
from nosend_store.fetch_state import FetchState, FetchStatus, StagedCopies
from nosend_store.locks import LockBusy

__all__ = ["FetchReport", "FetchError", "fetch_account", "HEADER_LIMIT"]

log = logging.getLogger("nosend.link.fetch")

#: Octets of a message's header held in memory to find its recipients (multi-drop) and
#: loop markers; a longer header is delivered whole, judged on its first part.
HEADER_LIMIT = 256 * 1024
#: Octets of a TOP answer kept for the notice.
_TOP_LIMIT = 64 * 1024
#: What a RETR answer may exceed twice its listed size by before it is refused.
_SLACK = 1024 * 1024


class FetchError(Exception):
    """The account cannot be fetched as configured (the message says why)."""


@dataclass(frozen=True, slots=True)
class FetchReport:
    """What one session with one account did, for the ``exchange`` summary.

    ``fetched``: messages delivered here; ``deleted``: deletions the server confirmed at
    QUIT; ``held``: notices delivered for messages too large (this session);
    ``bytes_sent``/``bytes_received``/``round_trips``: what the link carried (TLS
    included). ``ok`` is false when the session stopped on an error (``errors`` says
    what, without secrets); messages already recorded stay recorded.
    """

    account: str
    fetched: int = 0
    deleted: int = 0
    held: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    round_trips: int = 0
    errors: tuple[str, ...] = ()
    ok: bool = True

    @property
    def bytes(self) -> int:
        """Octets both ways."""
        return self.bytes_sent + self.bytes_received


@dataclass
class _Work:
    """One message of the session and what to do with it."""

    msgno: int
    uidl: str | None
    size: int
    action: str  # "retr", "top", "dele"


@dataclass
class _Tally:
    fetched: int = 0
    held: int = 0
    deleted: int = 0
    done: int = 0
    bytes_done: int = 0
    errors: list[str] = field(default_factory=list)


class _Delivery:
    """Where fetched mail goes, resolved once per session from the account."""

    def __init__(self, config: Config, account: Account) -> None:
        self.config = config
        self.account = account
        self.hostname = config.server.hostname
        if account.multidrop is not None:
            self.fallback = self._mailboxes(account.multidrop, "multidrop")
            self.single: tuple[str, ...] | None = None
        elif account.deliver_to is not None:
            self.single = self._mailboxes(account.deliver_to, "deliver_to")
            self.fallback = self.single
        else:
            raise FetchError(f"account {account.name}: neither deliver_to nor multidrop")

    def _mailboxes(self, target: str, key: str) -> tuple[str, ...]:
        if target in self.config.mailboxes:
            return (target,)
        resolution = self.config.resolve(target)
        if resolution is None or not resolution.mailboxes:
            raise FetchError(
                f"account {self.account.name}: {key} {target} is no local mailbox")
        if resolution.remote:
            log.warning("account %s: %s %s also names remote recipients; fetched mail "
                        "goes to the local ones only", self.account.name, key, target)
        return resolution.mailboxes

    def _is_local(self, address: str) -> bool:
        domain = address.rpartition("@")[2]
        if not self.config.is_local_domain(domain):
            return False
        resolution = self.config.resolve(address)
        return resolution is not None and bool(resolution.mailboxes)

    def targets(self, header: bytes) -> tuple[tuple[str, ...], bytes]:
        """The mailboxes for a message with ``header``, and the lines to put on top."""
        trace = self.received()
        if self.single is not None:
            return self.single, trace
        marker = loop_header(self.hostname)
        if loop_count(header, self.hostname) >= MAX_LOOPS:
            log.warning("account %s: a message has passed here %d times; it goes to %s",
                        self.account.name, MAX_LOOPS, ",".join(self.fallback))
            return self.fallback, trace + marker
        boxes: list[str] = []
        for address in recipients_from_header(header, self._is_local):
            resolution = self.config.resolve(address)
            if resolution is not None:
                boxes.extend(resolution.mailboxes)
        chosen = tuple(dict.fromkeys(boxes)) or self.fallback
        return chosen, trace + marker

    def received(self) -> bytes:
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        line = (f"Received: from {self.account.host}\r\n\tby {self.hostname} "
                f"(nosend fetch, account {self.account.name}) with POP3;\r\n\t{date}\r\n")
        return line.encode("utf-8", "replace")

    def paths(self, mailboxes: Sequence[str]) -> list[str]:
        return [str(self.config.maildir_path(m)) for m in mailboxes]


class _Incoming:
    """One RETR answer on its way into the Maildirs: the header is held back (bounded)
    until the recipients are known, then everything streams into staged copies.

    The chunks are written from the event loop: they go to the page cache in batches
    (``StagedFile``), and the fsyncs, which do wait for the disk, run in a thread."""

    def __init__(
        self, delivery: _Delivery, hook: Callable[[str], None] | None, listed: int
    ) -> None:
        self.delivery = delivery
        self.hook = hook
        self.header = bytearray()
        self.copies: StagedCopies | None = None
        self.mailboxes: tuple[str, ...] = ()
        self.size = 0
        # RFC 1939 section 5 makes LIST's size exact; a server that sends far more than
        # it listed is not trusted with our disk (the size cap was judged on the listing).
        self.limit = 2 * listed + _SLACK

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise FetchError(f"{self.delivery.account.host}: a message is much larger than "
                             "the server listed it; not fetched")
        if self.copies is not None:
            self.copies.write(data)
            return
        self.header += data
        if (b"\r\n\r\n" in self.header or self.header.startswith(b"\r\n")
                or len(self.header) > HEADER_LIMIT):
            self._open()

    def _open(self) -> None:
        header = bytes(self.header)
        end = header.find(b"\r\n\r\n")
        mailboxes, top = self.delivery.targets(header if end < 0 else header[: end + 2])
        self.mailboxes = tuple(mailboxes)
        self.copies = StagedCopies(self.delivery.paths(mailboxes), crash_hook=self.hook)
        self.copies.write(top)
        self.copies.write(header)
        self.header = bytearray()

    def complete(self) -> StagedCopies:
        if self.copies is None:
            self._open()
        assert self.copies is not None
        return self.copies

    def abort(self) -> None:
        if self.copies is not None:
            self.copies.abort()


def _cap(account: Account, link_max_size: int | None) -> int | None:
    caps = [c for c in (account.max_size, link_max_size) if c is not None]
    return min(caps) if caps else None


async def fetch_account(
    config: Config,
    account: Account,
    *,
    link: str | None = None,
    link_max_size: int | None = None,
    progress: ProgressCallback | None = None,
    meter: LinkMeter | None = None,
    clock: Callable[[], float] = time.time,
    timeout: float = 60.0,
    crash_hook: Callable[[str], None] | None = None,
) -> FetchReport:
    """Fetch ``account`` once (see the module docstring); never raises for the link,
    the server or the account: the report says what went wrong.

    ``link`` names the link in use (a held message requested for another link waits);
    ``link_max_size`` is that link's cap; ``meter`` (if given) has this session's bytes
    and round trips added to it; ``clock`` dates the notices. ``crash_hook`` (tests only)
    is called with the name of each step at which a crash must lose and duplicate
    nothing.
    """
    own = LinkMeter()
    tally = _Tally()

    def report(error: str | None = None) -> FetchReport:
        if error is not None:
            tally.errors.append(error)
            log.warning("account %s: %s", account.name, error)
        if meter is not None:
            meter.add(own)
        result = FetchReport(
            account.name, tally.fetched, tally.deleted, tally.held, own.bytes_sent,
            own.bytes_received, own.round_trips, tuple(tally.errors), not tally.errors,
        )  # fmt: skip
        _emit(progress, TransferFinished(account.name, "in", result.ok,
                                         tally.errors[0] if tally.errors else None))
        return result

    try:
        session = _Session(config, account, link, _cap(account, link_max_size), progress,
                           own, clock, timeout, crash_hook, tally)
    except FetchError as exc:
        return report(str(exc))
    try:
        await session.run()
    except (FetchError, POP3Error, UpstreamError, SecretError) as exc:
        return report(str(exc))
    except OSError as exc:  # the local disk: full, read-only, permissions
        return report(f"local error: {exc.strerror or exc}")
    except ValueError as exc:  # e.g. a UIDL the record cannot keep (RFC 1939 section 7)
        return report(f"cannot record a message of the server: {exc}")
    except LockBusy:
        return report("another fetch of this account is running")
    except ProtocolError as exc:  # e.g. bytes injected before TLS, a name POP3 cannot carry
        return report(f"{account.host}: {exc}")
    except BaseException:
        # Cancelled (max_online, Ctrl-C, SIGTERM): the bytes that crossed are still
        # billed by the caller's meter.
        if meter is not None:
            meter.add(own)
        raise
    return report()


def _emit(progress: ProgressCallback | None, event: TransferEvent) -> None:
    if progress is not None:
        progress(event)


class _Session:
    """The state of one :func:`fetch_account` call."""

    def __init__(
        self,
        config: Config,
        account: Account,
        link: str | None,
        cap: int | None,
        progress: ProgressCallback | None,
        meter: LinkMeter,
        clock: Callable[[], float],
        timeout: float,
        hook: Callable[[str], None] | None,
        tally: _Tally,
    ) -> None:
        if account.type != "pop3":
            raise FetchError(f"account {account.name} is not a pop3 account")
        if account.user is None:
            raise FetchError(f"account {account.name}: no user")
        if link is not None and account.links and link not in account.links:
            raise FetchError(f"account {account.name} is not used over link {link}")
        self.config = config
        self.account = account
        self.link = link
        self.cap = cap
        self.progress = progress
        self.meter = meter
        self.clock = clock
        self.timeout = timeout
        self.hook = hook
        self.tally = tally
        self.delivery = _Delivery(config, account)
        self.state: FetchState | None = None
        self.client: POP3Client | None = None
        self.total_bytes = 0
        self.total = 0

    def _hook(self, step: str) -> None:
        if self.hook is not None:
            self.hook(step)

    async def run(self) -> None:
        account = self.account
        secret = await anyio.to_thread.run_sync(partial(
            resolve_secret, account.name, secret=account.secret,
            secret_file=account.secret_file, secret_command=account.secret_command or None))
        if secret is None:
            raise FetchError(f"account {account.name}: no secret configured")
        data_dir = self.config.server.data_dir
        self.state = await anyio.to_thread.run_sync(partial(
            FetchState.open, data_dir, account.name, crash_hook=self.hook))
        try:
            self.client = await POP3Client.connect(
                account.host, account.port, tls=account.tls, ca_file=account.ca_file,
                fingerprint=account.fingerprint, timeout=self.timeout, meter=self.meter,
                verify=account.tls_verify)
            try:
                assert account.user is not None
                await self.client.login(account.user, secret, account.auth)
                del secret
                await self._transaction()
            finally:
                await self.client.aclose()
        finally:
            state, self.state = self.state, None
            await anyio.to_thread.run_sync(state.close)

    async def _transaction(self) -> None:
        client = self.client
        state = self.state
        assert client is not None and state is not None
        uidls: UidlReply | None = None
        sizes: ListReply | None = None
        no_uidl = False
        async for event in client.exchange((Uidl(), List())):
            if isinstance(event, UidlReply):
                uidls = event
            elif isinstance(event, ListReply):
                sizes = event
            elif isinstance(event, CommandFailed):
                if isinstance(event.command, Uidl):
                    no_uidl = True
                else:
                    raise FetchError(f"{self.account.host}: LIST refused: {event.text}")
            elif isinstance(event, ConnectionClosed):
                raise FetchError(f"{self.account.host}: closed the connection")
        if sizes is None:
            raise FetchError(f"{self.account.host}: no answer to LIST")
        size_of = {e.msgno: e.octets for e in sizes.entries}
        if no_uidl:
            if self.account.keep:
                raise FetchError(f"account {self.account.name}: the server has no UIDL, so "
                                 "keep = yes cannot work (nothing is fetched)")
            work = [_Work(n, None, s, "retr") for n, s in sorted(size_of.items())]
        else:
            assert uidls is not None
            if not uidls.truncated and not sizes.truncated:
                await anyio.to_thread.run_sync(state.forget_missing,
                                               [e.uid for e in uidls.entries])
            work = self._plan(uidls, size_of)
        fetch = [w for w in work if w.action in ("retr", "top")]
        self.total = len(work)
        self.total_bytes = sum(w.size for w in work)
        _emit(self.progress, TransferStarted(self.account.name, "in", self.total,
                                             self.total_bytes))
        deletions = [w for w in work if w.action == "dele"]
        deletions += await self._download(fetch, no_uidl)
        await self._finish(deletions)

    def _plan(self, uidls: UidlReply, size_of: dict[int, int]) -> list[_Work]:
        state = self.state
        assert state is not None
        keep = self.account.keep
        work: list[_Work] = []
        for entry in uidls.entries:
            size = size_of.get(entry.msgno)
            if size is None:
                continue  # listed by UIDL and not by LIST: deleted meanwhile
            record = state.records().get(entry.uid)
            status = None if record is None else record.status
            if status is FetchStatus.DELIVERED:
                if not keep:
                    work.append(_Work(entry.msgno, entry.uid, size, "dele"))
            elif status is FetchStatus.DELETE_REQUESTED:
                work.append(_Work(entry.msgno, entry.uid, size, "dele"))
            elif status is FetchStatus.FETCH_REQUESTED:
                assert record is not None
                if record.link is None or record.link == self.link:
                    work.append(_Work(entry.msgno, entry.uid, size, "retr"))
            elif status is FetchStatus.HELD:
                # Held under a smaller cap (a costly link): fetched once a session's cap
                # lets it through (the cheap link), with no request needed.
                if self.cap is None or size <= self.cap:
                    work.append(_Work(entry.msgno, entry.uid, size, "retr"))
            elif self.cap is not None and size > self.cap:
                work.append(_Work(entry.msgno, entry.uid, size, "top"))
            else:
                work.append(_Work(entry.msgno, entry.uid, size, "retr"))
        return work

    def _done(self, item: _Work, outcome: Outcome, mailboxes: Sequence[str] = ()) -> None:
        self.tally.done += 1
        self.tally.bytes_done += item.size
        # The bill goes to the one mailbox a message was for; mail for several is shared.
        user = mailboxes[0] if len(mailboxes) == 1 else None
        _emit(self.progress, MessageDone(self.account.name, "in", self.tally.done,
                                         self.total, item.size, outcome, user))

    async def _download(self, fetch: list[_Work], no_uidl: bool) -> list[_Work]:
        """RETR and TOP everything in ``fetch``; return what may now be deleted."""
        client = self.client
        assert client is not None
        by_msgno = {w.msgno: w for w in fetch}
        commands: list[POP3Command] = [
            Retr(w.msgno) if w.action == "retr" else Top(w.msgno, PREVIEW_LINES) for w in fetch
        ]
        deletable: list[_Work] = []
        incoming: _Incoming | None = None
        top = bytearray()
        try:
            async for event in client.exchange(commands):
                if isinstance(event, MessageBegins):
                    top = bytearray()
                    incoming = (
                        _Incoming(self.delivery, self.hook, by_msgno[event.command.msgno].size)
                        if isinstance(event.command, Retr) else None)
                elif isinstance(event, MessageData):
                    if incoming is not None:
                        incoming.feed(event.data)
                    elif len(top) < _TOP_LIMIT:
                        top += event.data[: _TOP_LIMIT - len(top)]
                elif isinstance(event, MessageComplete):
                    item = by_msgno[event.command.msgno]
                    if incoming is not None:
                        current, incoming = incoming, None
                        await self._deliver(item, current)
                        if not self.account.keep or no_uidl:
                            deletable.append(item)
                        self._done(item, "fetched", current.mailboxes)
                    else:
                        await self._hold(item, bytes(top))
                        self._done(item, "held")
                elif isinstance(event, CommandFailed):
                    command = event.command
                    if isinstance(command, Top):
                        # No preview (TOP is optional): the notice says so.
                        await self._hold(by_msgno[command.msgno], b"")
                        self._done(by_msgno[command.msgno], "held")
                    else:
                        self.tally.errors.append(f"{type(command).__name__.upper()} "
                                                 f"refused: {event.text}")
                        self._done(by_msgno[getattr(command, "msgno", 0)], "failed")
                elif isinstance(event, ConnectionClosed):
                    raise FetchError(f"{self.account.host}: closed the connection")
        except BaseException:
            if incoming is not None:
                # The link dropped mid-message: nothing of it becomes visible.
                await anyio.to_thread.run_sync(incoming.abort)
            # What was recorded may still be deleted next time; nothing is deleted now.
            raise
        return deletable

    async def _deliver(self, item: _Work, incoming: _Incoming) -> None:
        state = self.state
        assert state is not None
        copies = incoming.complete()
        keys = await anyio.to_thread.run_sync(copies.finish)
        uidl = item.uidl
        if uidl is not None:
            await anyio.to_thread.run_sync(partial(state.begin, uidl, item.size, keys))
            self._hook("after_begin")
        await anyio.to_thread.run_sync(copies.publish)
        self._hook("after_publish")
        if uidl is not None:
            await anyio.to_thread.run_sync(state.record, uidl, item.size)
            self._hook("after_record")
        self.tally.fetched += 1

    async def _hold(self, item: _Work, top: bytes) -> None:
        state = self.state
        uidl = item.uidl
        assert state is not None and uidl is not None and self.cap is not None
        info = summarise(top) if top else ()
        notice = build_notice(
            hostname=self.delivery.hostname, account=self.account.name,
            server=self.account.host, uidl=uidl, size=item.size, limit=self.cap, info=info,
            preview=preview_lines(top), date=self.clock())  # fmt: skip
        mailboxes, _ = self.delivery.targets(top)
        copies = StagedCopies(self.delivery.paths(mailboxes), crash_hook=self.hook)
        try:
            copies.write(notice)
            keys = await anyio.to_thread.run_sync(copies.finish)
            await anyio.to_thread.run_sync(partial(
                state.begin, uidl, item.size, keys, then=FetchStatus.HELD, info=info))
        except BaseException:
            copies.abort()
            raise
        await anyio.to_thread.run_sync(copies.publish)
        self._hook("after_publish")
        await anyio.to_thread.run_sync(partial(state.hold, uidl, item.size, info))
        self._hook("after_hold")
        self.tally.held += 1

    async def _finish(self, deletions: list[_Work]) -> None:
        """DELE what may go, and QUIT, in as few writes as the window allows."""
        client = self.client
        assert client is not None
        commands: list[POP3Command] = [Dele(w.msgno) for w in deletions]
        commands.append(Quit())
        self._hook("before_dele")
        accepted = 0
        signed_off = False
        async for event in client.exchange(commands):
            if isinstance(event, CommandOK) and isinstance(event.command, Dele):
                accepted += 1
            elif isinstance(event, CommandFailed):
                self.tally.errors.append(f"DELE {getattr(event.command, 'msgno', '?')} "
                                         f"refused: {event.text}")
            elif isinstance(event, ConnectionClosed) and not signed_off:
                # RFC 1939 section 6: without the answer to QUIT nothing was deleted; the
                # next session asks again, without downloading (the UIDLs are recorded).
                raise FetchError(f"{self.account.host}: the connection closed before QUIT "
                                 "was answered")
            elif isinstance(event, SignedOff):
                signed_off = True
                if event.ok:
                    self.tally.deleted = accepted
                elif accepted:
                    self.tally.errors.append(f"{self.account.host}: deletions failed at "
                                             f"QUIT: {event.text}")
        self._hook("after_quit")
        if self.tally.deleted:
            for item in deletions:
                if item.action == "dele":  # the fetched ones were reported as fetched
                    self._done(item, "deleted")
