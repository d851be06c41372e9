"""Checking one transport account by hand: connect, TLS, log in, show what is offered.

Owns: :func:`check_account` (what ``nosend account test`` runs) -- for smtp the
greeting, EHLO, STARTTLS and AUTH through :mod:`nosend_runners.client.smtp`; for pop3
the greeting, CAPA, STLS, the login and STAT through :mod:`nosend_runners.client.pop3`,
the fetch's own driver and login choice.

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
from nosend_proto.pop3_client_events import Capabilities, CommandFailed, Quit, Stat, StatReply
from nosend_runners.client.connection import UpstreamConnection, UpstreamError, open_upstream
from nosend_runners.client.pop3 import POP3Client, POP3Error
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
        if account.type == "pop3":
            await _check_pop3(account, login, say)
            return None
        upstream = await open_upstream(
            account.host, account.port, tls=account.tls, ca_file=account.ca_file,
            fingerprint=account.fingerprint, timeout=IDLE_TIMEOUT,
            connect_timeout=CONNECT_TIMEOUT, verify=account.tls_verify)
        say(f"connected to {account.host}:{account.port}"
            f"{' (TLS)' if account.tls == 'implicit' else ''}")
        try:
            await _check_smtp(config, account, upstream, login, say)
        finally:
            await upstream.aclose()
    except (SecretError, UpstreamError, SMTPClientError, TLSVerifyError, POP3Error,
            _Failed) as exc:
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


async def _check_pop3(account: Account, login: Login | None, say: Say) -> None:
    # The fetch's own driver and login choice, so the check tries what a cycle will do.
    client = await POP3Client.connect(
        account.host, account.port, tls=account.tls, ca_file=account.ca_file,
        fingerprint=account.fingerprint, timeout=IDLE_TIMEOUT, verify=account.tls_verify)
    try:
        say(f"connected to {account.host}:{account.port}")
        say(f"tls: {'yes' if client.upstream.tls else 'no'}")
        say(f"capabilities: {_capabilities(client.capabilities)}")
        if login is None:
            raise _Failed("the account has no user")
        method = await client.login(login.user, login.secret, account.auth)
        say(f"login: ok ({method})")
        # QUIT in TRANSACTION with nothing marked deleted: the UPDATE state removes
        # nothing (RFC 1939 section 6).
        async for event in client.exchange((Stat(), Quit())):
            if isinstance(event, StatReply):
                say(f"waiting: {event.count} message{'s' if event.count != 1 else ''}, "
                    f"{event.octets} bytes")
            elif isinstance(event, CommandFailed):
                raise _Failed(f"STAT refused: -ERR {event.text}")
    finally:
        await client.aclose()
    say("nothing was fetched or deleted")
