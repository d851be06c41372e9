"""TLS on the anyio server: STARTTLS upgrade in place, implicit TLS, bad handshakes."""

from __future__ import annotations

import logging
import ssl
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from nosend_runners import anyio_server
from nosend_runners.serve.settings import ServerSettings
from nosend_runners.serve.tls import TLSConfigError, TLSUnreadable, server_context
from tests.runners.conftest import (
    CertFiles,
    LineClient,
    echo_settings,
    fast_timeouts,
    port_of,
    running_server,
)


def _tls_settings(cert: CertFiles, *services: str) -> ServerSettings:
    return echo_settings(*services, tls_cert=cert.cert, tls_key=cert.key)


@pytest.mark.anyio
async def test_starttls_upgrades_in_place_and_discards_pipelined_bytes(
    tls_cert: CertFiles,
) -> None:
    async with running_server(_tls_settings(tls_cert, "smtp")) as server:
        client = await LineClient.connect(port_of(server, "smtp"))
        await client.line()
        assert b"tls=False" in await client.command(b"PEER")
        # RFC 3207 section 4.2: a command smuggled behind STARTTLS must not survive.
        await client.send(b"STARTTLS\r\nINJECTED\r\n")
        assert await client.line() == b"220 2.0.0 Ready to start TLS"
        await client.start_tls(tls_cert.client_context())
        reply = await client.command(b"PEER")
        assert reply.startswith(b"250 127.0.0.1 ") and b"tls=True TLSv1." in reply
        assert await client.command(b"after") == b"250 after"
        # A second STARTTLS on a TLS stream is refused.
        assert await client.command(b"STARTTLS") == b"454 4.7.0 TLS not available"
        await client.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("service", ["smtps", "pop3s"])
async def test_implicit_tls_greets_only_after_the_handshake(
    tls_cert: CertFiles, service: str
) -> None:
    async with running_server(_tls_settings(tls_cert, service)) as server:
        client = await LineClient.connect(port_of(server, service))
        await client.start_tls(tls_cert.client_context())
        assert await client.line() == f"220 test.invalid nosend echo {service} ready".encode()
        assert b"tls=True" in await client.command(b"PEER")
        await client.aclose()


@pytest.mark.anyio
async def test_starttls_without_a_certificate_is_refused() -> None:
    async with running_server(echo_settings("smtp")) as server:
        client = await LineClient.connect(port_of(server, "smtp"))
        await client.line()
        assert await client.command(b"STARTTLS") == b"454 4.7.0 TLS not available"
        assert await client.command(b"still plain") == b"250 still plain"
        await client.aclose()


@pytest.mark.anyio
async def test_garbage_instead_of_a_handshake_closes_only_that_connection(
    tls_cert: CertFiles,
) -> None:
    async with running_server(_tls_settings(tls_cert, "smtp", "smtps")) as server:
        bad = await LineClient.connect(port_of(server, "smtps"))
        await bad.send(b"EHLO this is not TLS\r\n" * 10)
        assert await bad.closed()
        await bad.aclose()
        good = await LineClient.connect(port_of(server, "smtp"))
        assert (await good.line()).startswith(b"220 ")
        await good.aclose()
        with anyio.fail_after(5):
            while server.live_sessions:
                await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_a_client_that_never_handshakes_is_dropped(tls_cert: CertFiles) -> None:
    settings = replace(
        _tls_settings(tls_cert, "pop3s"),
        timeouts=fast_timeouts(tls_handshake=0.3),
    )
    async with running_server(settings) as server:
        silent = await LineClient.connect(port_of(server, "pop3s"))
        assert await silent.closed(timeout=5)
        await silent.aclose()


def test_server_context_requires_tls12_and_loads_the_pair(tls_cert: CertFiles) -> None:
    context = server_context(tls_cert.cert, tls_cert.key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_missing_or_bad_certificate_is_one_error_naming_the_file(
    tmp_path: Path, tls_cert: CertFiles
) -> None:
    with pytest.raises(TLSConfigError, match=f"{tmp_path / 'nope.pem'}: no such file"):
        server_context(tmp_path / "nope.pem", tls_cert.key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TLSConfigError, match="garbage.pem.*cannot load"):
        server_context(garbage, tls_cert.key)


@pytest.mark.anyio
async def test_reload_keeps_a_key_it_may_no_longer_read(
    tls_cert: CertFiles, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that gave up root (user = in mail.cfg) re-reads the same key at reload and
    # may not: it keeps the context it loaded at start, in one log line. New files it
    # cannot read are refused like any bad certificate.
    settings = _tls_settings(tls_cert, "smtp")
    renamed = replace(settings, hostname="renamed.invalid")
    elsewhere = replace(settings, tls_key=tls_cert.key.with_name("other-key.pem"))
    offered = [renamed, elsewhere]

    def reloader() -> tuple[object, ServerSettings]:
        return "config", offered.pop(0)

    async with running_server(settings, reloader=reloader) as server:
        loaded = server._ssl

        def unreadable(cert: object, key: object = None) -> None:
            raise TLSUnreadable(f"{key}: cannot be read by uid 999")

        monkeypatch.setattr(anyio_server, "server_context", unreadable)
        caplog.set_level(logging.INFO)
        assert await server.reload() is True
        assert server._ssl is loaded and server.state.hostname == "renamed.invalid"
        assert "keeping the certificate and key read at start" in caplog.text
        assert await server.reload() is False  # other files: not taken
        assert server.settings.tls_key == tls_cert.key
        monkeypatch.undo()
        client = await LineClient.connect(port_of(server, "smtp"))
        assert (await client.line()).startswith(b"220 renamed.invalid")
        assert await client.command(b"STARTTLS") == b"220 2.0.0 Ready to start TLS"
        await client.start_tls(tls_cert.client_context())  # the context kept
        assert await client.command(b"hello") == b"250 hello"
        await client.aclose()
