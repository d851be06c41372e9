"""Serving a LAN: ``nosend init --lan/--listen/--trust`` and ``nosend tls self-signed``."""

from __future__ import annotations

import io
import re
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nosend.cli import main
from nosend.newconfig import TRUST_COMMENT
from nosend_store.config import ListenAddress, load_config
from tests.conftest import require_tool


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Sea s3cret\n"))
    capsys.readouterr()
    try:
        status = main(list(argv))
    except SystemExit as e:
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def openssl_fingerprint(cert: Path) -> str:
    out = subprocess.run(
        [require_tool("openssl"), "x509", "-noout", "-fingerprint", "-sha256", "-in", str(cert)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return out.strip().split("=", 1)[1]


def printed_fingerprint(out: str) -> str:
    m = re.search(r"SHA-256 fingerprint: ([0-9A-F:]{95})\n", out)
    assert m is not None, out
    return m[1]


def test_init_lan_listens_everywhere_with_a_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("openssl")
    cfg = tmp_path / "mail.cfg"
    argv = ["init", "--config", str(cfg), "--lan", "--hostname", "mail.yacht.lan"]
    status, out, err = run(capsys, monkeypatch, *argv, "--password-stdin")
    assert status == 0, err
    config = load_config(cfg)
    server = config.server
    assert server.smtp_listen == (ListenAddress("0.0.0.0", 2525),)
    assert server.pop3_listen == (ListenAddress("0.0.0.0", 2110),)
    assert server.tls_cert == tmp_path / "tls" / "cert.pem"
    assert server.tls_key == tmp_path / "tls" / "key.pem"
    assert stat.S_IMODE(server.tls_key.stat().st_mode) == 0o600
    # Relaying stays with the machine itself unless --trust says otherwise.
    assert [str(n) for n in server.trusted_networks] == ["127.0.0.0/8", "::1/128"]
    assert printed_fingerprint(out) == openssl_fingerprint(server.tls_cert)
    assert "encryption STARTTLS" in out and "Sea s3cret" not in out + err
    ssl.create_default_context().load_cert_chain(server.tls_cert, server.tls_key)
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(server.tls_cert)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert "DNS:mail.yacht.lan" in text


def test_every_new_mail_cfg_explains_trusted_networks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "mail.cfg"
    status, _, err = run(capsys, monkeypatch, "init", "--config", str(cfg), "--password-stdin")
    assert status == 0, err
    text = cfg.read_text()
    assert "\n".join(TRUST_COMMENT) + "\ntrusted_networks = " in text
    assert "lan_plaintext_auth" in TRUST_COMMENT[5] + TRUST_COMMENT[6]


def test_listen_and_trust_without_a_certificate_warn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "mail.cfg"
    argv = ["init", "--config", str(cfg), "--password-stdin", "--listen", "192.0.2.7"]
    argv += ["--listen", "::", "--trust", "192.0.2.0/24"]
    status, out, err = run(capsys, monkeypatch, *argv)
    assert status == 0, err
    server = load_config(cfg).server
    assert server.submission_listen == (
        ListenAddress("192.0.2.7", 2587),
        ListenAddress("::", 2587),
    )
    assert "192.0.2.0/24" in [str(n) for n in server.trusted_networks]
    assert server.tls_cert is None and "nosend tls self-signed" in err


def test_a_bad_option_writes_nothing_not_even_the_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("openssl")
    cfg = tmp_path / "mail.cfg"
    argv = ["init", "--config", str(cfg), "--password-stdin", "--lan", "--trust", "not-a-net"]
    status, _, err = run(capsys, monkeypatch, *argv)
    assert status == 1 and "bad option" in err and "trusted_networks" in err
    assert not cfg.exists()
    assert not (tmp_path / "tls" / "cert.pem").exists()
    assert not (tmp_path / "tls" / "key.pem").exists()


def test_tls_self_signed_sets_the_keys_and_refuses_to_replace_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("openssl")
    cfg = tmp_path / "mail.cfg"
    assert run(capsys, monkeypatch, "init", "--config", str(cfg), "--password-stdin")[0] == 0
    before = cfg.read_text()
    argv = ["tls", "self-signed", "--config", str(cfg), "--host", "mx.lan", "--host", "10.0.0.1"]
    status, out, err = run(capsys, monkeypatch, *argv)
    assert status == 0, err
    server = load_config(cfg).server
    assert server.tls_cert == tmp_path / "tls" / "cert.pem"
    assert f"set tls_cert and tls_key in {cfg}" in out and f"changed {cfg}" in out
    first = printed_fingerprint(out)
    assert first == openssl_fingerprint(server.tls_cert)
    # Only the two values changed; comments and layout kept.
    changed = [
        (a, b)
        for a, b in zip(before.split("\n"), cfg.read_text().split("\n"), strict=True)
        if a != b
    ]
    assert [a.split("=")[0].strip() for a, _ in changed] == ["tls_cert", "tls_key"]

    status, out, err = run(capsys, monkeypatch, *argv)
    assert status == 1 and "already exists; --force replaces it" in err
    assert openssl_fingerprint(server.tls_cert) == first

    status, out, err = run(capsys, monkeypatch, *argv, "--force")
    assert status == 0, err
    assert printed_fingerprint(out) == openssl_fingerprint(server.tls_cert) != first
    assert stat.S_IMODE(server.tls_key.stat().st_mode) == 0o600  # type: ignore[union-attr]


def test_tls_self_signed_writes_where_mail_cfg_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("openssl")
    cfg = tmp_path / "mail.cfg"
    assert run(capsys, monkeypatch, "init", "--config", str(cfg), "--password-stdin")[0] == 0
    cert, key = tmp_path / "pki" / "mx.crt", tmp_path / "pki" / "mx.key"
    cert.parent.mkdir()
    cert.write_text("placeholder\n")
    key.write_text("placeholder\n")
    text = cfg.read_text().replace("tls_cert =\n", f"tls_cert = {cert}\n")
    cfg.write_text(text.replace("tls_key =\n", f"tls_key = {key}\n"))
    status, out, err = run(capsys, monkeypatch, "tls", "self-signed", "--config", str(cfg))
    assert status == 1 and f"{cert} already exists" in err
    status, out, err = run(
        capsys, monkeypatch, "tls", "self-signed", "--config", str(cfg), "--force"
    )
    assert status == 0, err
    assert printed_fingerprint(out) == openssl_fingerprint(cert)
    assert "set tls_cert" not in out and not (tmp_path / "tls").exists()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
