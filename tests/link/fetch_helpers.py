"""The receiving side of fetch tests: a local ``mail.cfg`` with one pop3 account, and
``fetch()`` that runs :func:`nosend_link.fetch.fetch_account` on it once.

The remote provider is whatever the test starts (a second ``nosend serve``, Dovecot, a
fake server); its address goes into the account, optionally through a LinkProxy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from nosend_link.fetch import FetchReport, fetch_account
from nosend_link.transfer_events import TransferEvent
from nosend_runners.client.connection import LinkMeter
from nosend_store.config import Config, load_config
from nosend_store.passwords import encode_shared_secret
from tests.interop.conftest import _hash

LOCAL_DOMAIN = "yacht.test"


@dataclass
class LocalSite:
    """Our own nosend: data_dir, mailboxes skipper/crew1/crew2, one pop3 account."""

    root: Path
    account: dict[str, str]
    events: list[TransferEvent] = field(default_factory=list)
    extra: str = ""  # more sections for mail.cfg

    @property
    def config_path(self) -> Path:
        return self.root / "mail.cfg"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def write(self) -> None:
        lines = [
            "[server]", "hostname = mx.yacht.test", f"data_dir = {self.data_dir}",
            "smtp_listen =", "submission_listen =", "smtps_listen =", "pop3_listen =",
            "pop3s_listen =", "", "[domains]", LOCAL_DOMAIN, "",
        ]  # fmt: skip
        # Nobody logs in here: the site only receives fetched mail.
        for box in ("skipper", "crew1", "crew2"):
            lines += [f"[mailbox {box}]", f"password = {_hash('unused-Password-9')}", ""]
        lines += ["[aliases]", f"all@{LOCAL_DOMAIN} = crew1, crew2", ""]
        lines += ["[account isp]", "type = pop3"]
        lines += [f"{k} = {v}" for k, v in self.account.items()]
        self.config_path.write_text("\n".join(lines) + "\n\n" + self.extra)
        self.config_path.chmod(0o600)

    def config(self) -> Config:
        self.write()
        return load_config(self.config_path)

    def fetch(self, **kwargs: object) -> FetchReport:
        config = self.config()
        account = config.accounts["isp"]

        async def run() -> FetchReport:
            return await fetch_account(config, account, progress=self.events.append,
                                       **kwargs)  # type: ignore[arg-type]

        return anyio.run(run)

    def messages(self, mailbox: str) -> list[bytes]:
        box = self.data_dir / "mail" / mailbox
        out = []
        for sub in ("new", "cur"):
            d = box / sub
            if d.is_dir():
                out += [p.read_bytes() for p in sorted(d.iterdir())]
        return out

    def tmp_files(self, mailbox: str) -> list[Path]:
        tmp = self.data_dir / "mail" / mailbox / "tmp"
        return sorted(tmp.iterdir()) if tmp.is_dir() else []


def local_site(
    root: Path, host: str, port: int, user: str, password: str, **account: str
) -> LocalSite:
    """A site fetching ``user``'s mailbox at ``host:port`` (TLS options in ``account``)."""
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": host, "port": str(port), "user": user,
        "secret": encode_shared_secret(password), "deliver_to": "skipper",
    }  # fmt: skip
    settings.update(account)
    if "multidrop" in account:
        settings.pop("deliver_to")
    return LocalSite(root, settings)


def bodies_without_trace(messages: list[bytes]) -> list[bytes]:
    """Fetched messages without the lines the fetch put on top (Received:, loop marker)."""
    out = []
    for m in messages:
        lines = m.split(b"\n")
        while lines and (lines[0].startswith((b"Received:", b"X-Nosend-Loop:"))
                         or lines[0].startswith((b"\t", b" "))):
            lines.pop(0)
        out.append(b"\n".join(lines))
    return out


MeterFactory = Callable[[], LinkMeter]
