"""``fetch_account`` against Dovecot: STLS and implicit TLS verified with ``ca_file``,
each ``auth`` choice, pipelined fetch and delete, and ``keep``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.conftest import SAMPLE_MESSAGES, TLSFiles
from tests.interop.dovecot_fixture import (  # noqa: F401 -- fixtures
    DOVECOT_PASSWORD,
    DovecotServer,
    dovecot_server,
)
from tests.link.fetch_helpers import bodies_without_trace, local_site

pytestmark = pytest.mark.interop


def test_stls_with_ca_file_fetches_everything_and_deletes_it(
    tmp_path: Path, dovecot_server: DovecotServer, tls_files: TLSFiles  # noqa: F811
) -> None:
    site = local_site(tmp_path, "127.0.0.1", dovecot_server.port, "alice", DOVECOT_PASSWORD,
                      tls="starttls", ca_file=str(tls_files.cert))
    report = site.fetch()
    assert report.ok, report.errors
    assert report.fetched == report.deleted == len(SAMPLE_MESSAGES)
    assert sorted(bodies_without_trace(site.messages("skipper"))) == sorted(SAMPLE_MESSAGES)
    assert dovecot_server.messages("alice") == []


@pytest.mark.parametrize("auth", ["auto", "plain", "login", "cram-md5"])
def test_implicit_tls_each_login_and_keep(
    tmp_path: Path, dovecot_server: DovecotServer, tls_files: TLSFiles, auth: str  # noqa: F811
) -> None:
    site = local_site(tmp_path, "127.0.0.1", dovecot_server.pop3s_port, "alice",
                      DOVECOT_PASSWORD, tls="implicit", ca_file=str(tls_files.cert),
                      auth=auth, keep="yes")
    first = site.fetch()
    assert first.ok and first.fetched == len(SAMPLE_MESSAGES) and first.deleted == 0, first
    dovecot_server.deliver("alice", "99.M99P1.test", b"Subject: later\n\nlate\n")
    second = site.fetch()
    assert second.ok and second.fetched == 1 and second.deleted == 0
    assert len(site.messages("skipper")) == len(SAMPLE_MESSAGES) + 1
    assert len(dovecot_server.messages("alice")) == len(SAMPLE_MESSAGES) + 1


def test_a_pinned_fingerprint_is_accepted_and_a_wrong_one_refused(
    tmp_path: Path, dovecot_server: DovecotServer, tls_files: TLSFiles  # noqa: F811
) -> None:
    site = local_site(tmp_path, "127.0.0.1", dovecot_server.pop3s_port, "alice",
                      DOVECOT_PASSWORD, tls="implicit", fingerprint="00" * 32)
    refused = site.fetch()
    assert not refused.ok and "fingerprint" in refused.errors[0]
    assert site.messages("skipper") == []
    site.account["fingerprint"] = tls_files.fingerprint()
    report = site.fetch()
    assert report.ok and report.fetched == len(SAMPLE_MESSAGES), report.errors


def test_a_wrong_password_is_reported_without_it(
    tmp_path: Path, dovecot_server: DovecotServer, tls_files: TLSFiles  # noqa: F811
) -> None:
    site = local_site(tmp_path, "127.0.0.1", dovecot_server.port, "alice", "Wrong-Pass-77",
                      tls="starttls", ca_file=str(tls_files.cert))
    report = site.fetch()
    assert not report.ok and "refused" in report.errors[0]
    assert "Wrong-Pass-77" not in " ".join(report.errors)
    assert len(dovecot_server.messages("alice")) == len(SAMPLE_MESSAGES)
