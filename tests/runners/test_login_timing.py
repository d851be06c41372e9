"""Login timing must not tell which user names exist (issue 14, "Attackers").

An unknown user's password is checked against a dummy hash of the same scheme and
parameters as a real one: the test counts the hash computations and compares their
parameters (no timed assertions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nosend_proto import Credentials
from nosend_runners.mail import policy
from nosend_store import passwords
from nosend_store.config import load_config


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Every hash computation as (function, cost parameters)."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    scrypt, pbkdf2 = passwords._scrypt, passwords._pbkdf2

    def spy_scrypt(password: str, h: Any) -> bytes:
        calls.append(("scrypt", (h.ln, h.r, h.p, len(h.salt), len(h.digest))))
        return scrypt(password, h)

    def spy_pbkdf2(password: str, h: Any) -> bytes:
        calls.append(("pbkdf2", (h.rounds, len(h.salt), len(h.digest))))
        return pbkdf2(password, h)

    monkeypatch.setattr(passwords, "_scrypt", spy_scrypt)
    monkeypatch.setattr(passwords, "_pbkdf2", spy_pbkdf2)
    return calls


def test_unknown_users_cost_the_same_hash_as_real_ones(
    tmp_path: Path, spy: list[tuple[str, tuple[Any, ...]]]
) -> None:
    real = passwords.hash_password("right-password")  # the default scheme, as `user add`
    cfg = tmp_path / "mail.cfg"
    cfg.write_text(
        f"[server]\nhostname = mx.example.test\ndata_dir = {tmp_path / 'data'}\n\n"
        f"[domains]\nexample.test\n\n[mailbox alice]\npassword = {real}\n"
    )
    cfg.chmod(0o600)
    config = load_config(cfg)
    spy.clear()
    assert policy.authenticate(config, Credentials("PLAIN", "alice", password="wrong")) is None
    known = list(spy)
    spy.clear()
    assert policy.authenticate(config, Credentials("PLAIN", "nobody", password="wrong")) is None
    unknown = list(spy)
    assert len(known) == 1 and known[0][0] == passwords.DEFAULT_SCHEME.lower()
    assert unknown == known


def test_the_dummy_hash_never_matches_and_follows_the_default_parameters(
    spy: list[tuple[str, tuple[Any, ...]]],
) -> None:
    for scheme in passwords.SCHEMES:
        dummy = passwords.dummy_hash(scheme)
        assert passwords.hash_syntax_error(dummy) is None
        assert not passwords.needs_rehash(dummy, scheme)  # today's parameters
        assert not passwords.verify_password("", dummy)
    spy.clear()
    passwords.verify_password("x", passwords.dummy_hash())
    passwords.verify_password("x", passwords.hash_password("y"))
    assert spy[0] == spy[-1]


def test_a_site_with_other_hashes_gets_a_dummy_like_its_own(
    tmp_path: Path, spy: list[tuple[str, tuple[Any, ...]]]
) -> None:
    """Mailboxes hashed with PBKDF2 (say, copied from Dovecot): an unknown user costs
    that, not the default scheme, which would stand out the other way."""
    from tests.runners.session_support import make_config

    config = make_config(tmp_path)  # cheap PBKDF2 hashes for alice, bob and carol
    spy.clear()
    assert policy.authenticate(config, Credentials("PLAIN", "alice", password="wrong")) is None
    known = list(spy)
    spy.clear()
    assert policy.authenticate(config, Credentials("PLAIN", "nobody", password="wrong")) is None
    assert known[0][0] == "pbkdf2" and spy == known
