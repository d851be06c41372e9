"""Checking one transport account by hand: connect, TLS, log in, show what is offered.

Owns: :func:`check_account` (what ``nosend account test`` runs) -- for smtp the
greeting, EHLO, STARTTLS and AUTH through :mod:`nosend_runners.client.smtp`; for pop3
the greeting, CAPA, STLS, the login and STAT through the POP3 client engine, lock step
(one command at a time: a check is not worth optimising).

Must not: send mail, retrieve or delete a message (POP3 QUIT is sent from the
TRANSACTION state with nothing marked deleted, so the UPDATE state removes nothing,
RFC 1939 section 6), or show a secret.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio.to_thread

from nosend_link.relay import (
    CONNECT_TIMEOUT,
    IDLE_TIMEOUT,
    account_login,
    smtp_client_config,
)
from nosend_link.secrets import SecretError
from nosend_proto import LocalProtocolError, RemoteProtocolError
from nosend_proto.pop3_client import ClientConnection as POP3Connection
from nosend_proto.pop3_client_events import (
    NEED_DATA,
    Auth,
    Capa,
    Capabilities,
    CapabilitiesReceived,
    CommandFailed,
    ConnectionClosed,
    Greeting,
    GreetingRefused,
    LoggedIn,
    LoginFailed,
    POP3ClientConfig,
    POP3Command,
    Quit,
    SignedOff,
    Stat,
    StatReply,
    Stls,
    StlsAccepted,
    UserPass,
)
from nosend_runners.client.connection import UpstreamConnection, UpstreamError, open_upstream
from nosend_runners.client.smtp import Login, SMTPClientError, SMTPClientSession
from nosend_runners.client.tls import TLSVerifyError
from nosend_store.config import Account, Config

__all__ = ["check_account"]

Say = Callable[[str], None]


async def check_account(config: Config, account: Account, say: Say) -> str | None:
    """Check ``account``, reporting each step to ``say``; the error, or None if all went
    well. Never raises for a network, TLS, login or secret problem."""
    try:
        login = await anyio.to_thread.run_sync(account_login, account)
        upstream = await open_upstream(
            account.host, account.port, tls=account.tls, ca_file=account.ca_file,
            fingerprint=account.fingerprint, timeout=IDLE_TIMEOUT,
            connect_timeout=CONNECT_TIMEOUT, verify=account.tls_verify)
        say(f"connected to {account.host}:{account.port}"
            f"{' (TLS)' if account.tls == 'implicit' else ''}")
        try:
            if account.type == "smtp":
                await _check_smtp(config, account, upstream, login, say)
            else:
                await _check_pop3(account, upstream, login, say)
        finally:
            await upstream.aclose()
    except (SecretError, UpstreamError, SMTPClientError, TLSVerifyError, _Failed) as exc:
        return str(exc)
    except (RemoteProtocolError, LocalProtocolError) as exc:
        return f"protocol error: {exc}"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


class _Failed(Exception):
    """A step failed; the text says which and what the server answered."""


async def _check_smtp(config: Config, account: Account, upstream: UpstreamConnection,
                      login: Login | None, say: Say) -> None:
    session = SMTPClientSession(upstream, smtp_client_config(config, account))
    info = await session.open(login)
    if info.greeting is not None:
        say(f"greeting: {info.greeting.code} {info.greeting.text}")
    say(f"tls: {'yes' if info.tls else 'no'}")
    ext = info.extensions
    words = []
    for keyword in sorted(ext.keywords):
        if keyword == "SIZE" and ext.size:
            words.append(f"SIZE={ext.size}")
        elif keyword == "AUTH":
            words.append(f"AUTH={','.join(ext.auth)}")
        else:
            words.append(keyword)
    say(f"capabilities: {' '.join(words) or '(none)'}")
    say(f"login: {'ok (' + info.mechanism + ')' if info.mechanism else 'not configured'}")
    await session.quit()
    say("nothing was sent")


class _POP3:
    """The POP3 engine over ``upstream``, one command at a time."""

    def __init__(self, upstream: UpstreamConnection, account: Account) -> None:
        self.upstream = upstream
        # No login in clear unless the account says tls = none (RFC 2595 section 2.1).
        self.engine = POP3Connection(POP3ClientConfig(
            require_tls=account.tls != "none", tls_active=account.tls == "implicit"))

    async def event(self) -> object:
        while True:
            event = self.engine.next_event()
            if event is not NEED_DATA:
                return event
            await self.upstream.send(self.engine.data_to_send())
            self.engine.receive_data(await self.upstream.receive())

    async def command(self, command: POP3Command) -> object:
        await self.upstream.send(self.engine.send(command))
        return await self.event()


def _capabilities(caps: Capabilities) -> str:
    if not caps.advertised:
        return "(no CAPA: an RFC 1939 server)"
    words = [name.upper() for name in ("top", "uidl", "user", "pipelining", "stls",
                                        "resp_codes", "utf8") if getattr(caps, name)]
    if caps.sasl:
        words.append(f"SASL={','.join(caps.sasl)}")
    if caps.expire is not None:
        words.append(f"EXPIRE={caps.expire}")
    if caps.implementation:
        words.append(f"IMPLEMENTATION={caps.implementation}")
    return " ".join(words)


async def _check_pop3(account: Account, upstream: UpstreamConnection, login: Login | None,
                      say: Say) -> None:
    pop = _POP3(upstream, account)
    greeting = await pop.event()
    if isinstance(greeting, GreetingRefused):
        raise _Failed(f"greeting refused: -ERR {greeting.text}")
    if isinstance(greeting, Greeting):
        say(f"greeting: +OK {greeting.text}")
    caps = await pop.command(Capa())
    if account.tls == "starttls":
        answer = await pop.command(Stls())
        if not isinstance(answer, StlsAccepted):
            raise _Failed("the server refused STLS; refusing to log in in clear")
        await upstream.start_tls()
        pop.engine.start_tls_done()
        caps = await pop.command(Capa())  # RFC 2595 section 4: ask again under TLS
    say(f"tls: {'yes' if upstream.tls else 'no'}")
    if isinstance(caps, CapabilitiesReceived):
        say(f"capabilities: {_capabilities(caps.capabilities)}")
    if login is None:
        raise _Failed("the account has no user")
    offered = caps.capabilities.sasl if isinstance(caps, CapabilitiesReceived) else ()
    mechanism = None if account.auth == "auto" else account.auth.upper()
    command: POP3Command
    if mechanism is not None:
        command = Auth(mechanism, login.user, login.secret)
    else:
        command = UserPass(login.user, login.secret)
    answer = await pop.command(command)
    if isinstance(answer, LoginFailed):
        if answer.tls_required:
            raise _Failed("refusing to send the password without TLS (tls = none)")
        raise _Failed(f"login failed: -ERR {answer.text}")
    if not isinstance(answer, LoggedIn):
        raise _Failed(f"unexpected answer to the login: {answer!r}")
    say(f"login: ok ({answer.method})" + (f" (server offers SASL {','.join(offered)})"
                                            if offered and mechanism is None else ""))
    stat = await pop.command(Stat())
    if isinstance(stat, StatReply):
        say(f"waiting: {stat.count} message{'s' if stat.count != 1 else ''}, "
            f"{stat.octets} bytes")
    elif isinstance(stat, CommandFailed):
        raise _Failed(f"STAT refused: -ERR {stat.text}")
    # QUIT in TRANSACTION with nothing marked deleted: the UPDATE state removes nothing.
    bye = await pop.command(Quit())
    if not isinstance(bye, SignedOff | ConnectionClosed):
        raise _Failed(f"unexpected answer to QUIT: {bye!r}")
    say("nothing was fetched or deleted")
