"""``nosend account add|remove|list|test``: exit status, mail.cfg edits, secrets, checks."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend_store.config import load_config
from tests.cli.test_admin import ORIGINAL, run
from tests.interop.conftest import USERS, NosendServer, TLSFiles, build_server, make_tls_files

SECRET = "Sea-Secret-42"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mail.cfg"
    path.write_text(ORIGINAL)
    os.chmod(path, 0o600)
    monkeypatch.setenv("NOSEND_CONFIG", str(path))
    return path


def test_add_smtp_with_password_stdin_stores_it_encoded_and_warns(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run(capsys, monkeypatch, "account", "add", "upstream", "--type", "smtp",
                           "--host", "smtp.example.net", "--user", "boat@example.net",
                           "--password-stdin", stdin=SECRET + "\n")
    assert status == 0, err
    assert out == "added account upstream (smtp smtp.example.net)\n"
    assert "must not be readable by other users" in err
    assert SECRET not in out + err + cfg.read_text()
    encoded = base64.b64encode(SECRET.encode()).decode()
    assert f"secret = {{PLAIN.B64}}{encoded}" in cfg.read_text()
    account = load_config(cfg).accounts["upstream"]
    assert (account.type, account.host, account.port, account.tls) == (
        "smtp", "smtp.example.net", 587, "starttls")
    assert account.secret == SECRET
    # The rest of the file, comments included, is untouched.
    assert cfg.read_text().startswith(ORIGINAL)


def test_add_pop3_with_a_secret_command_and_list_never_shows_secrets(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = run(capsys, monkeypatch, "account", "add", "isp", "--type", "pop3",
                         "--host", "pop.example.net", "--tls", "implicit", "--user", "boat",
                         "--secret-command", "pass show isp", "--deliver-to", "captain",
                         "--keep", "--max-size", "500K")
    assert status == 0, err
    assert err == ""
    run(capsys, monkeypatch, "account", "add", "upstream", "--type", "smtp", "--host",
        "smtp.example.net", "--user", "u", "--password-stdin", stdin=SECRET + "\n")
    status, out, _ = run(capsys, monkeypatch, "account", "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("isp  pop3  pop.example.net:995  tls=implicit  user=boat "
                               "(secret_command pass)")
    assert "deliver_to=captain" in lines[0] and "keep" in lines[0]
    assert lines[1].startswith("upstream  smtp  smtp.example.net:587")
    assert "secret in mail.cfg" in lines[1]
    assert SECRET not in out
    status, out, _ = run(capsys, monkeypatch, "account", "list", "isp")
    assert status == 0 and out.startswith("isp  pop3") and len(out.splitlines()) == 1
    assert run(capsys, monkeypatch, "account", "list", "nope")[0] == 1


def test_tls_none_with_a_user_warns_that_the_login_goes_in_clear(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = run(capsys, monkeypatch, "account", "add", "old", "--type", "smtp",
                         "--host", "mail.example.net", "--tls", "none", "--user", "u",
                         "--password-stdin", stdin=SECRET + "\n")
    assert status == 0
    assert "tls = none" in err and "in clear" in err


def test_an_invalid_account_is_not_written_and_no_password_is_read(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = cfg.read_text()
    # pop3 needs deliver_to or multidrop: refused before the password is asked for.
    status, out, err = run(capsys, monkeypatch, "account", "add", "isp", "--type", "pop3",
                           "--host", "pop.example.net", "--user", "boat", "--password-stdin",
                           stdin="")
    assert status == 1 and out == ""
    assert err.startswith("nosend: refused, the file would become invalid")
    assert cfg.read_text() == before
    # A fingerprint that is not SHA-256 hex.
    status, _, err = run(capsys, monkeypatch, "account", "add", "x", "--type", "smtp",
                         "--host", "h.example", "--fingerprint", "abc")
    assert status == 1 and cfg.read_text() == before


def test_add_twice_and_remove(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("account", "add", "up", "--type", "smtp", "--host", "h.example")
    assert run(capsys, monkeypatch, *args)[0] == 0
    status, _, err = run(capsys, monkeypatch, *args)
    assert status == 1 and "already exists" in err
    assert run(capsys, monkeypatch, "account", "remove", "up") == (0, "removed account up\n", "")
    assert cfg.read_text() == ORIGINAL
    status, _, err = run(capsys, monkeypatch, "account", "remove", "up")
    assert status == 1 and "no account 'up'" in err


# -- account test against a real server ----------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("account-tls"))


@pytest.fixture
def server(tmp_path: Path, certificate: TLSFiles) -> Iterator[NosendServer]:
    root = tmp_path / "server"
    root.mkdir()
    running = build_server(root, certificate, ("submission", "pop3"), trusted_networks="")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _add(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str,
         kind: str, port: int, certificate: TLSFiles, password: str, *extra: str) -> None:
    status, _, err = run(capsys, monkeypatch, "account", "add", name, "--type", kind,
                         "--host", "127.0.0.1", "--port", str(port), "--user", "alice",
                         "--password-stdin", "--ca-file", str(certificate.cert), *extra,
                         stdin=password + "\n")
    assert status == 0, err


def test_account_test_smtp_shows_tls_capabilities_and_login(
    cfg: Path, server: NosendServer, certificate: TLSFiles,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _add(capsys, monkeypatch, "up", "smtp", server.port("submission"), certificate,
         USERS["alice"])
    status, out, err = run(capsys, monkeypatch, "account", "test", "up")
    assert status == 0, err
    assert "tls: yes" in out and "PIPELINING" in out and "AUTH=" in out
    assert "login: ok (" in out and "nothing was sent" in out
    assert USERS["alice"] not in out + err
    _add(capsys, monkeypatch, "bad", "smtp", server.port("submission"), certificate, "wrong")
    status, out, err = run(capsys, monkeypatch, "account", "test", "bad")
    assert status == 1 and "login failed" in err and "wrong" not in out + err


def test_account_test_pop3_counts_what_waits_and_deletes_nothing(
    cfg: Path, server: NosendServer, certificate: TLSFiles,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.deliver_directly("alice", b"Subject: one\n\nfirst\n")
    server.deliver_directly("alice", b"Subject: two\n\nsecond\n")
    _add(capsys, monkeypatch, "isp", "pop3", server.port("pop3"), certificate,
         USERS["alice"], "--deliver-to", "captain")
    status, out, err = run(capsys, monkeypatch, "account", "test", "isp")
    assert status == 0, err
    # The fetch's own login choice: AUTH PLAIN under TLS (nosend_runners.client.pop3).
    assert "tls: yes" in out and "login: ok (PLAIN)" in out
    assert "waiting: 2 messages," in out and "nothing was fetched or deleted" in out
    assert len(server.messages("alice")) == 2
