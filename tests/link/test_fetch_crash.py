"""SIGKILL during a fetch, at many steps: afterwards the next fetch brings every message
exactly once (DESIGN invariant 3, with the pending record of ``fetch_state`` closing the
window between the Maildir rename and the UIDL record)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.interop.conftest import (  # noqa: F401 -- fixtures
    NosendServer,
    ServerFactory,
    nosend_factory,
    tls_files,
)
from tests.link.fetch_helpers import bodies_without_trace
from tests.link.test_fetch_serve import fill, site_for

pytestmark = pytest.mark.interop

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import anyio
    from nosend_link.fetch import fetch_account
    from nosend_store.config import load_config

    config_path, kill_at, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen = 0

    def die(step):
        global seen
        if step == kill_at:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    config = load_config(config_path)
    report = anyio.run(lambda: fetch_account(config, config.accounts["isp"], crash_hook=die))
    print("FINISHED", report.fetched, report.deleted, flush=True)
    """
)


def run_child(config: Path, kill_at: str, nth: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(config), kill_at, str(nth)],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip


# (step, occurrence): StagedFile and FetchState fsyncs, the pending record, each rename
# into new/, the delivered record, the moment before DELE and after QUIT.
KILL_POINTS = [
    ("before_fsync", 1),  # the first message's staged copy, before its fsync
    ("before_fsync", 2),  # the first pending record, written and not fsynced
    ("after_begin", 1),
    ("before_publish", 2),
    ("after_publish", 1),
    ("after_publish", 3),
    ("before_write", 4),  # a delivered record about to be appended
    ("after_fsync", 4),  # the second message's delivered record, durable
    ("after_record", 4),
    ("before_dele", 1),
    ("after_quit", 1),
]


@pytest.mark.parametrize(("kill_at", "nth"), KILL_POINTS)
def test_sigkill_during_a_fetch_then_exactly_once(
    tmp_path: Path, nosend_factory: ServerFactory, kill_at: str, nth: int  # noqa: F811
) -> None:
    provider = nosend_factory(services=("pop3",))
    sent = fill(provider, 4, size=3000)
    site = site_for(tmp_path, provider)
    site.write()
    done = run_child(site.config_path, kill_at, nth)
    assert done.returncode == -9, (done.stdout, done.stderr)
    report = site.fetch()
    assert report.ok, report.errors
    assert sorted(bodies_without_trace(site.messages("skipper"))) == sorted(sent)
    assert provider.messages("alice") == []
    assert site.tmp_files("skipper") == [] or kill_at == "before_fsync"


def test_sigkill_while_a_crashed_delivery_is_rolled_forward(
    tmp_path: Path, nosend_factory: ServerFactory  # noqa: F811
) -> None:
    provider = nosend_factory(services=("pop3",))
    sent = fill(provider, 3)
    site = site_for(tmp_path, provider)
    site.write()
    assert run_child(site.config_path, "after_begin", 2).returncode == -9
    # the next session dies while settling the pending entry
    assert run_child(site.config_path, "before_roll_forward", 1).returncode == -9
    report = site.fetch()
    assert report.ok, report.errors
    assert sorted(bodies_without_trace(site.messages("skipper"))) == sorted(sent)
    assert provider.messages("alice") == []


@pytest.mark.parametrize(("kill_at", "nth"), [
    ("before_fsync", 1),  # the notice staged, not fsynced: garbage, no pending entry
    ("before_fsync", 2),  # the pending entry of the notice, not fsynced
    ("before_publish", 1),  # pending entry durable, notice still in tmp/
    ("after_publish", 1),  # notice visible, not yet recorded as held
    ("after_hold", 1),
])
def test_sigkill_while_a_notice_is_delivered_then_exactly_one_notice(
    tmp_path: Path, nosend_factory: ServerFactory, kill_at: str, nth: int  # noqa: F811
) -> None:
    provider = nosend_factory(services=("pop3",))
    fill(provider, 1, size=30_000)
    site = site_for(tmp_path, provider, max_size="10K")
    site.write()
    assert run_child(site.config_path, kill_at, nth).returncode == -9
    for _ in range(2):
        assert site.fetch().ok
    notices = [m for m in site.messages("skipper") if b"Held on the server" in m]
    assert len(notices) == 1 and len(site.messages("skipper")) == 1
    assert len(provider.messages("alice")) == 1
