"""Which login ``auth = auto`` picks, by TLS and by what the server offers."""

from __future__ import annotations

import pytest

from nosend_proto.pop3_client_events import Apop, Auth, Capabilities, UserPass
from nosend_runners.client.pop3 import choose_login

CAPA_ALL = Capabilities(advertised=True, user=True, sasl=("PLAIN", "LOGIN", "CRAM-MD5"))


@pytest.mark.parametrize(("caps", "tls", "timestamp", "expected"), [
    (CAPA_ALL, True, "<1@x>", Auth("PLAIN", "u", "s")),  # one command under TLS
    (Capabilities(advertised=True, user=True), True, None, UserPass("u", "s")),
    (Capabilities(advertised=True, sasl=("LOGIN",)), True, None, Auth("LOGIN", "u", "s")),
    (Capabilities(), True, None, UserPass("u", "s")),  # no CAPA: RFC 1939 USER/PASS
    (CAPA_ALL, False, "<1@x>", Auth("CRAM-MD5", "u", "s")),  # in clear: no password sent
    (Capabilities(advertised=True, user=True), False, "<1@x>", Apop("u", "s")),
    (Capabilities(advertised=True, user=True), False, None, UserPass("u", "s")),
])
def test_auto(caps: Capabilities, tls: bool, timestamp: str | None, expected: object) -> None:
    assert choose_login("auto", caps, tls=tls, timestamp=timestamp, user="u",
                        secret="s") == expected


def test_a_named_mechanism_is_used_as_it_is() -> None:
    got = choose_login("xoauth2", Capabilities(), tls=True, timestamp=None, user="u",
                       secret="token")
    assert got == Auth("XOAUTH2", "u", "token")
