"""SASL framing shared by both engines: each mechanism, both roles, every failure path."""

import base64
import hashlib
import hmac

import pytest

from nosend_proto._sasl import (
    SaslChallenge,
    SaslClient,
    SaslFailure,
    SaslServer,
    SaslSuccess,
    decode_sasl_line,
)

CHALLENGE = b"<1896.697170952@postoffice.example.net>"


def run(server: SaslServer, client: SaslClient) -> SaslSuccess | SaslFailure:
    step = server.start()
    while isinstance(step, SaslChallenge):
        step = server.respond(client.respond(step.data))
    return step


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_client_and_server_agree(mech: str) -> None:
    client = SaslClient(mech, "tim", "tanstaaftanstaaf")
    server = SaslServer(mech, client.initial_response(), CHALLENGE)
    result = run(server, client)
    assert isinstance(result, SaslSuccess)
    assert result.credentials.username == "tim"
    assert result.credentials.matches_secret("tanstaaftanstaaf")
    assert not result.credentials.matches_secret("wrong")


def test_rfc2195_example_digest() -> None:
    # RFC 2195 section 2 worked example.
    rfc_challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    server = SaslServer("CRAM-MD5", None, rfc_challenge)
    assert server.start() == SaslChallenge(rfc_challenge)
    result = server.respond(b"tim b913a602c7eda7a495b4e6e7334d3890")
    assert isinstance(result, SaslSuccess)
    assert result.credentials.matches_secret("tanstaaftanstaaf")


def test_plain_without_initial_response_gets_empty_challenge() -> None:
    server = SaslServer("PLAIN", None, CHALLENGE)
    assert server.start() == SaslChallenge(b"")
    result = server.respond(b"admin\0tim\0secret")
    assert isinstance(result, SaslSuccess)
    assert result.credentials.authzid == "admin"
    assert result.credentials.password == "secret"


@pytest.mark.parametrize(
    "raw", [b"tim\0secret", b"\0\0secret", b"\0tim\0", b"a\0b\0c\0d", b"\0tim\0\xff"]
)
def test_plain_malformed(raw: bytes) -> None:
    assert isinstance(SaslServer("PLAIN", raw, CHALLENGE).start(), SaslFailure)


def test_cram_md5_rejects_initial_response_and_bad_digest() -> None:
    assert isinstance(SaslServer("CRAM-MD5", b"x", CHALLENGE).start(), SaslFailure)
    server = SaslServer("CRAM-MD5", None, CHALLENGE)
    server.start()
    assert isinstance(server.respond(b"tim nothex"), SaslFailure)
    server = SaslServer("CRAM-MD5", None, CHALLENGE)
    server.start()
    assert isinstance(server.respond(b"tim " + b"z" * 32), SaslFailure)


def test_login_with_initial_username() -> None:
    server = SaslServer("LOGIN", b"tim", CHALLENGE)
    assert server.start() == SaslChallenge(b"Password:")
    result = server.respond(b"pw")
    assert isinstance(result, SaslSuccess) and result.credentials.password == "pw"


def test_line_decoding() -> None:
    assert decode_sasl_line(b"=") == b""
    assert decode_sasl_line(base64.b64encode(b"hello")) == b"hello"
    cancel = decode_sasl_line(b"*")
    assert isinstance(cancel, SaslFailure) and cancel.cancelled
    bad = decode_sasl_line(b"not base64!")
    assert isinstance(bad, SaslFailure) and not bad.cancelled


def test_apop_digest() -> None:
    # RFC 1939 section 7 example.
    from nosend_proto._sasl import Credentials

    banner = b"<1896.697170952@dbc.mtview.ca.us>"
    creds = Credentials(
        "APOP", "mrose", challenge=banner, digest="c4c9334bac560ecc979e58001b3e22fb"
    )
    assert creds.matches_secret("tanstaaf")
    assert not creds.matches_secret("tanstaaf2")
    expected = hashlib.md5(banner + b"tanstaaf").hexdigest()
    assert expected == "c4c9334bac560ecc979e58001b3e22fb"
    assert hmac.compare_digest(expected, creds.digest or "")


def test_credentials_repr_hides_password() -> None:
    client = SaslClient("PLAIN", "tim", "hunter2")
    result = SaslServer("PLAIN", client.initial_response(), CHALLENGE).start()
    assert isinstance(result, SaslSuccess)
    assert "hunter2" not in repr(result.credentials)
    assert "hunter2" not in repr(client)
