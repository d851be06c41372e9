"""The POP3 client engine driven over an :class:`UpstreamConnection` (anyio).

Owns: :class:`POP3Client` -- connecting (plain, implicit TLS, or STLS), reading the
greeting, CAPA before and after TLS, the login the account's ``auth`` setting asks for,
and :meth:`POP3Client.exchange`, which writes a batch of commands (in one write when the
server offers PIPELINING, RFC 2449 section 6.6; one by one otherwise) and yields the
engine's events as the answers stream in. Must not: decide what to fetch or delete,
touch the store, or put a secret in an error (the engine holds the secret only for the
login command; errors name host, port and what failed).

TLS. ``tls = implicit`` speaks TLS from the first byte (RFC 8314); ``tls = starttls``
sends STLS (RFC 2595) after the first CAPA and refuses to go on when the server does not
offer it or refuses it; ``tls = none`` never uses TLS. Except with ``none`` the engine
is built with ``require_tls``, so no name or secret can be written in clear even by
mistake. Capabilities learnt in clear are forgotten after STLS and asked again.

The login (``auth`` of the account):

* a named mechanism (``plain``, ``login``, ``cram-md5``, ``xoauth2``, ``oauthbearer``) is
  used as it is: the administrator knows the provider;
* ``auto`` over TLS: ``AUTH PLAIN`` when the server lists it (one command, the answer in
  one round trip thanks to the initial response, RFC 5034), else ``USER``/``PASS``, else
  ``AUTH LOGIN``; the secret is protected by TLS, so the simplest exchange is the cheapest;
* ``auto`` in clear (``tls = none``): a mechanism that does not send the password --
  ``CRAM-MD5`` if listed, else ``APOP`` if the greeting has a timestamp (RFC 1939
  section 7) -- and only then ``USER``/``PASS`` (the administrator chose a clear link;
  ``nosend config check`` warns about it).

OAuth mechanisms are never chosen by ``auto``: their secret is a token, not a password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nosend_proto import RemoteProtocolError
from nosend_proto.pop3_client import ClientConnection
from nosend_proto.pop3_client_events import (
    Apop,
    Auth,
    Capa,
    Capabilities,
    CapabilitiesReceived,
    ConnectionClosed,
    Greeting,
    GreetingRefused,
    LoggedIn,
    LoginFailed,
    POP3ClientConfig,
    POP3ClientEvent,
    POP3Command,
    Sentinel,
    Stls,
    StlsAccepted,
    UserPass,
)
from nosend_runners.client.connection import (
    LinkMeter,
    TLSMode,
    UpstreamConnection,
    open_upstream,
)

__all__ = ["POP3Error", "POP3Client", "PIPELINE_WINDOW", "choose_login"]

#: At most this many commands are written before their answers are read: a RETR line
#: is a dozen octets, so a window always fits the server's receive buffer, and neither
#: side can block the other by writing while nobody reads.
PIPELINE_WINDOW = 64


class POP3Error(Exception):
    """The server refused us (greeting, STLS, login) or broke the protocol; the message
    says which, without any secret."""


@dataclass(frozen=True, slots=True)
class _Where:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def choose_login(
    auth: str,
    capabilities: Capabilities,
    *,
    tls: bool,
    timestamp: str | None,
    user: str,
    secret: str,
) -> POP3Command:
    """The login command for ``auth`` (see the module docstring for the order)."""
    if auth != "auto":
        return Auth(auth.upper(), user, secret)
    offered = {m.upper() for m in capabilities.sasl}
    if tls:
        if "PLAIN" in offered:
            return Auth("PLAIN", user, secret)
        if capabilities.user or not capabilities.advertised or not offered:
            return UserPass(user, secret)
        if "LOGIN" in offered:
            return Auth("LOGIN", user, secret)
        return UserPass(user, secret)
    if "CRAM-MD5" in offered:
        return Auth("CRAM-MD5", user, secret)
    if timestamp is not None:
        return Apop(user, secret)
    return UserPass(user, secret)


class POP3Client:
    """One POP3 session with an upstream server. Make it with :meth:`connect`."""

    def __init__(self, upstream: UpstreamConnection, engine: ClientConnection) -> None:
        """Use :meth:`connect`."""
        self.upstream = upstream
        self.engine = engine
        self._where = _Where(upstream.host, upstream.port)

    @property
    def capabilities(self) -> Capabilities:
        """The last CAPA answer (after STLS: the one given under TLS)."""
        return self.engine.capabilities

    @property
    def pipelining(self) -> bool:
        """True when commands may be written in batches."""
        return self.engine.pipelining

    @property
    def meter(self) -> LinkMeter:
        """Bytes and round trips of this connection."""
        return self.upstream.meter

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        tls: TLSMode,
        ca_file: str | Path | None = None,
        fingerprint: str | None = None,
        timeout: float = 60.0,
        meter: LinkMeter | None = None,
        verify: bool = True,
    ) -> POP3Client:
        """Connect, read the greeting, CAPA, STLS when ``tls="starttls"`` and CAPA again.

        Raises :class:`~nosend_runners.client.connection.UpstreamError` (the link) or
        :class:`POP3Error` (the server)."""
        upstream = await open_upstream(
            host, port, tls=tls, ca_file=ca_file, fingerprint=fingerprint,
            timeout=timeout, connect_timeout=timeout, meter=meter, verify=verify,
        )  # fmt: skip
        engine = ClientConnection(
            POP3ClientConfig(require_tls=tls != "none", tls_active=tls == "implicit"))
        client = cls(upstream, engine)
        try:
            await client._start(tls)
        except BaseException:
            await upstream.aclose()
            raise
        return client

    async def _start(self, tls: TLSMode) -> None:
        events = [e async for e in self.exchange(())]  # the greeting
        if not events or not isinstance(events[0], Greeting):
            text = events[0].text if events and isinstance(events[0], GreetingRefused) else ""
            raise POP3Error(f"{self._where}: refused us: {text}".rstrip(": "))
        await self._capa()
        if tls != "starttls":
            return
        if self.capabilities.advertised and not self.capabilities.stls:
            raise POP3Error(f"{self._where}: offers no STLS, and the account requires TLS")
        events = [e async for e in self.exchange((Stls(),))]
        if not events or not isinstance(events[-1], StlsAccepted):
            raise POP3Error(f"{self._where}: refused STLS, and the account requires TLS")
        await self.upstream.start_tls()
        self.engine.start_tls_done()
        await self._capa()

    async def _capa(self) -> None:
        async for event in self.exchange((Capa(),)):
            if not isinstance(event, CapabilitiesReceived):
                raise POP3Error(f"{self._where}: unexpected answer to CAPA")

    async def login(self, user: str, secret: str, auth: str = "auto") -> str:
        """Log in; return the method used. :class:`POP3Error` when refused."""
        command = choose_login(
            auth, self.capabilities, tls=self.engine.tls_active,
            timestamp=self.engine.timestamp, user=user, secret=secret,
        )  # fmt: skip
        async for event in self.exchange((command,)):
            if isinstance(event, LoggedIn):
                return event.method
            if isinstance(event, LoginFailed):
                if event.tls_required:
                    raise POP3Error(f"{self._where}: not logging in without TLS")
                code = f" [{event.code}]" if event.code else ""
                raise POP3Error(f"{self._where}: login ({event.method}) refused{code}: "
                                f"{event.text}")
        raise POP3Error(f"{self._where}: no answer to the login")

    async def exchange(self, commands: Sequence[POP3Command]) -> AsyncIterator[POP3ClientEvent]:
        """Send ``commands`` and yield every event of their answers, in order.

        With PIPELINING they go out in writes of at most :data:`PIPELINE_WINDOW`
        commands, each written before any answer to it is read; without, one at a time.
        Stops after :class:`ConnectionClosed` or :class:`StlsAccepted`. Raises
        :class:`POP3Error` on a protocol violation by the server and ``UpstreamError``
        when the link fails.
        """
        engine = self.engine
        pending = list(commands)
        if not pending:
            async for event in self._answers():
                yield event
            return
        while pending:
            size = PIPELINE_WINDOW if engine.pipelining else 1
            batch, pending = pending[:size], pending[size:]
            out = b"".join(engine.send(command) for command in batch)
            await self.upstream.send(out)
            async for event in self._answers():
                yield event
                if isinstance(event, ConnectionClosed | StlsAccepted):
                    return

    async def _answers(self) -> AsyncIterator[POP3ClientEvent]:
        engine = self.engine
        while True:
            try:
                event = engine.next_event()
            except RemoteProtocolError as exc:
                raise POP3Error(f"{self._where}: protocol error: {exc}") from None
            if isinstance(event, Sentinel):  # NEED_DATA
                more = engine.data_to_send()  # PASS, SASL responses
                if more:
                    await self.upstream.send(more)
                if engine.outstanding == 0:
                    return
                engine.receive_data(await self.upstream.receive())
                continue
            yield event
            if isinstance(event, ConnectionClosed | StlsAccepted):
                return

    async def aclose(self) -> None:
        """Close the connection; never raises."""
        await self.upstream.aclose()

