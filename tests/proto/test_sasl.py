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


# -- client side: the bearer-token mechanisms (RFC 7628 and Google's XOAUTH2) -----------


def test_xoauth2_initial_response_matches_googles_example() -> None:
    token = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    client = SaslClient("XOAUTH2", "someuser@example.com", token)
    initial = client.initial_response()
    assert initial is not None
    assert base64.b64encode(initial) == (
        b"dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNS"
        b"bGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )


def test_oauthbearer_initial_response_follows_rfc7628_example() -> None:
    # RFC 7628 section 4.1, with the host and port key/value pairs.
    client = SaslClient(
        "OAUTHBEARER",
        "user@example.com",
        "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
        host="server.example.com",
        port=143,
    )
    assert client.initial_response() == (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
        b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
    )
    # RFC 5801 section 4: "," and "=" in the authorization identity are escaped.
    odd = SaslClient("OAUTHBEARER", "a,b=c", "t")
    assert odd.initial_response() == b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01"


@pytest.mark.parametrize(("mech", "answer"), [("XOAUTH2", b""), ("OAUTHBEARER", b"\x01")])
def test_token_mechanisms_answer_the_error_challenge(mech: str, answer: bytes) -> None:
    # RFC 7628 section 3.2.3: after a failure challenge the client sends a dummy response
    # (a single 0x01); Google documents an empty one for XOAUTH2. The report is kept.
    client = SaslClient(mech, "user@example.com", "expired-token")
    client.initial_response()
    report = b'{"status":"invalid_token","scope":"https://mail.example.com/"}'
    assert client.respond(report) == answer
    assert client.error == report.decode()


@pytest.mark.parametrize("mech", ["PLAIN", "XOAUTH2", "OAUTHBEARER"])
def test_client_first_mechanism_answers_an_empty_challenge_with_its_initial_response(
    mech: str,
) -> None:
    # RFC 4954 section 4: when the initial response is not on the AUTH line.
    deferred = SaslClient(mech, "tim", "secret")
    eager = SaslClient(mech, "tim", "secret")
    assert deferred.respond(b"") == eager.initial_response()


def test_token_mechanisms_refuse_separator_in_fields_and_hide_the_token() -> None:
    with pytest.raises(ValueError):
        SaslClient("XOAUTH2", "user", "tok\x01en")
    with pytest.raises(ValueError):
        SaslClient("GSSAPI", "user", "x")
    client = SaslClient("OAUTHBEARER", "user", "secret-token")
    assert "secret-token" not in repr(client)
