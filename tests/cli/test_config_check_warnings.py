"""`nosend config check` prints the warnings a valid mail.cfg carries, with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_admin import cfg, run  # noqa: F401  (fixture)


def test_config_check_warns_that_a_login_without_tls_is_in_clear(
    cfg: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = len(cfg.read_text().splitlines())
    cfg.write_text(
        cfg.read_text()
        + "[account isp]\ntype = pop3\nhost = pop.example.net\nuser = yacht\n"
        + "secret = {PLAIN.B64}aXNwLXNlY3JldA==\ntls = none\ndeliver_to = captain\n"
    )
    status, out, err = run(capsys, monkeypatch, "config", "check", "--config", str(cfg))
    assert status == 0 and out.startswith(f"{cfg}: OK (") and "1 account" in out
    assert err.splitlines() == [
        f"warning: {cfg}:{before + 6}: [account isp] has tls = none: its login "
        "(AUTH or USER/PASS) and the secret cross the link in clear"
    ]
    assert "isp-secret" not in out + err and "aXNwLXNlY3JldA" not in out + err
