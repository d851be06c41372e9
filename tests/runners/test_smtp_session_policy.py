"""Policy properties: no open relay whatever the address, unknown local users refused at
RCPT time, cleartext authentication only where the site allows it, credentials."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nosend_proto._sasl import Credentials
from nosend_runners.mail import policy
from nosend_runners.session.boundary import PeerInfo
from nosend_store.config import Config
from tests.runners.session_support import CAROL_SECRET, PASSWORDS, make_config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return make_config(tmp_path_factory.mktemp("policy"))


local_part = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}", fullmatch=True)
foreign_domain = st.from_regex(r"[a-z][a-z0-9-]{0,10}\.(com|net|org|example)", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(local=local_part, domain=foreign_domain)
def test_foreign_domains_need_relay_permission(config: Config, local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    refused = policy.check_recipient(config, address, may_relay=False)
    assert (refused.reply.code, refused.reply.enhanced) == (550, "5.7.1")
    assert refused.mailboxes == () and refused.remote == ()
    allowed = policy.check_recipient(config, address, may_relay=True)
    assert allowed.accepted and allowed.remote == (address,) and allowed.mailboxes == ()


@settings(max_examples=100, deadline=None)
@given(local=local_part, relay=st.booleans())
def test_local_domain_unknown_user_is_550_5_1_1(config: Config, local: str, relay: bool) -> None:
    base = local.split("+", 1)[0]
    known = {"alice", "bob", "carol", "team", "sales", "postmaster"}
    decision = policy.check_recipient(config, f"{local}@example.test", may_relay=relay)
    if base in known or local in known:
        assert decision.accepted
    else:
        assert (decision.reply.code, decision.reply.enhanced) == (550, "5.1.1")
        assert not decision.mailboxes and not decision.remote


@settings(max_examples=100, deadline=None)
@given(ip=st.ip_addresses(v=4), authenticated=st.booleans())
def test_relay_only_for_trusted_or_authenticated(
    config: Config, ip: ipaddress.IPv4Address, authenticated: bool
) -> None:
    peer = PeerInfo(str(ip), 1234)
    trusted = ip in ipaddress.ip_network("10.0.0.0/8")
    assert policy.relay_allowed(config, peer, authenticated) == (authenticated or trusted)


def test_cleartext_auth_rules(tmp_path: Path, config: Config) -> None:
    stranger = PeerInfo("192.0.2.5", 1)
    lan = PeerInfo("10.9.9.9", 1)
    assert not policy.cleartext_auth_allowed(config, stranger)
    assert not policy.cleartext_auth_allowed(config, lan)  # lan_plaintext_auth is off
    assert policy.cleartext_auth_allowed(config, PeerInfo("127.0.0.1", 1))
    assert policy.cleartext_auth_allowed(config, PeerInfo("::1", 1))
    assert policy.cleartext_auth_allowed(config, PeerInfo("192.0.2.5", 1, tls=True))
    lan_config = make_config(tmp_path, "lan_plaintext_auth = yes")
    assert policy.cleartext_auth_allowed(lan_config, lan)
    assert not policy.cleartext_auth_allowed(lan_config, stranger)
    (tmp_path / "x").mkdir()
    open_config = make_config(tmp_path / "x", "auth_requires_tls = no")
    assert policy.cleartext_auth_allowed(open_config, stranger)


def test_submission_and_size_rules(config: Config) -> None:
    refusal = policy.check_sender(config, "submission", authenticated=False, size=None)
    assert refusal is not None and (refusal.code, refusal.enhanced) == (530, "5.7.0")
    assert policy.check_sender(config, "submission", authenticated=True, size=100) is None
    assert policy.check_sender(config, "smtp", authenticated=False, size=None) is None
    big = policy.check_sender(config, "smtp", authenticated=False, size=102401)
    assert big is not None and (big.code, big.enhanced) == (552, "5.3.4")
    assert policy.check_sender(config, "smtp", authenticated=False, size=102400) is None


def test_authenticate(config: Config) -> None:
    def password(user: str, secret: str, authzid: str = "") -> Credentials:
        return Credentials("PLAIN", user, authzid=authzid, password=secret)

    assert policy.authenticate(config, password("alice", PASSWORDS["alice"])) == "alice"
    assert policy.authenticate(config, password("Alice@Example.Test", PASSWORDS["alice"])) == (
        "alice"
    )
    assert policy.authenticate(config, password("alice", PASSWORDS["bob"])) is None
    assert policy.authenticate(config, password("nobody", "x")) is None
    assert policy.authenticate(config, password("alice@other.example", PASSWORDS["alice"])) is None
    # Acting for another mailbox is refused, acting for oneself is fine.
    assert policy.authenticate(config, password("alice", PASSWORDS["alice"], "bob")) is None
    assert policy.authenticate(config, password("alice", PASSWORDS["alice"], "alice")) == "alice"
    stamp = b"<1.2@mx.test>"
    apop = Credentials(
        "APOP",
        "carol",
        challenge=stamp,
        digest=hashlib.md5(stamp + CAROL_SECRET.encode()).hexdigest(),
    )
    assert policy.verifiable(config, apop) and policy.authenticate(config, apop) == "carol"
    alice_apop = Credentials("APOP", "alice", challenge=stamp, digest="0" * 32)
    assert not policy.verifiable(config, alice_apop)
    assert policy.authenticate(config, alice_apop) is None
