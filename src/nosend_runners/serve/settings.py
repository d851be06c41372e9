"""What the runners take from ``mail.cfg``: listeners, TLS files, timeouts, limits.

Owns: the ``ServerSettings`` value and its derivation from a loaded
``nosend_store.config.Config``. Must not: parse files (the store's config module does)
or open sockets. Tests build ``ServerSettings`` directly with tiny timeouts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nosend_runners.serve.limits import LimitSettings
from nosend_runners.session.boundary import SERVICES, Timeouts

if TYPE_CHECKING:
    from nosend_store.config import Config

__all__ = ["Listen", "ServerSettings", "settings_from_config"]


@dataclass(frozen=True, slots=True)
class Listen:
    """Listen for ``service`` on ``host:port`` (port 0: any free port, for tests)."""

    service: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.service not in SERVICES:
            raise ValueError(f"unknown service {self.service!r}")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything the runners need to know about the server's transport."""

    hostname: str = "localhost"
    listen: tuple[Listen, ...] = (
        Listen("smtp", "127.0.0.1", 2525),
        Listen("submission", "127.0.0.1", 2587),
        Listen("pop3", "127.0.0.1", 2110),
    )
    tls_cert: Path | None = None
    tls_key: Path | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: LimitSettings = field(default_factory=LimitSettings)

    @property
    def tls_enabled(self) -> bool:
        """Whether a certificate is configured (STARTTLS/STLS and implicit TLS possible)."""
        return self.tls_cert is not None

    def ports(self) -> dict[int, str]:
        """Configured port -> service, to name sockets inherited without a name."""
        return {entry.port: entry.service for entry in self.listen if entry.port}


def settings_from_config(config: Config) -> ServerSettings:
    """Derive the runner settings from a loaded, valid ``mail.cfg``."""
    server = config.server
    listen = tuple(
        Listen(service, address.host, address.port)
        for service, addresses in (
            ("smtp", server.smtp_listen),
            ("submission", server.submission_listen),
            ("smtps", server.smtps_listen),
            ("pop3", server.pop3_listen),
            ("pop3s", server.pop3s_listen),
        )
        for address in addresses
    )
    timeouts = dataclasses.replace(
        Timeouts(),
        command=server.smtp_timeout,
        data_block=server.smtp_timeout,
        pop3_idle=server.pop3_timeout,
    )
    # A tenth of the pool kept for each service and another for trusted networks
    # (serve.limits): 10 each with the default 100.
    reserve = max(1, server.max_connections // 10)
    limits = dataclasses.replace(
        LimitSettings(),
        max_connections=server.max_connections,
        max_per_address=server.max_connections_per_ip,
        service_reserve=reserve,
        trusted_reserve=reserve,
    )
    return ServerSettings(
        hostname=server.hostname,
        listen=listen,
        tls_cert=server.tls_cert if server.tls_enabled else None,
        tls_key=server.tls_key if server.tls_enabled else None,
        timeouts=timeouts,
        limits=limits,
    )
