"""mail.cfg [account NAME] for mail transport: secret sources, TLS pinning, SASL choice,
single-drop or multi-drop, size cap, and the warnings a valid file can still carry."""

from __future__ import annotations

from pathlib import Path

import pytest

from nosend_store.config import Config, ConfigError, parse_config, sample_config

# PBKDF2-SHA1("password", "salt", 2 rounds), RFC 6070: cheap to verify in tests.
HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"

# The account under test starts on line 12; its keys follow on lines 13, 14, ...
BASE = f"""\
[server]
hostname = mail.example.org
data_dir = data
[domains]
example.org
[mailbox captain]
password = {HASH}
[mailbox mate]
password = {HASH}
[aliases]
crew@example.org = captain, mate
[account isp]
"""
HEADER = 12

FINGERPRINT = "ab" * 32
COLON_FINGERPRINT = ":".join(["AB"] * 32)


def parse(*keys: str, directory: Path | None = None) -> Config:
    where = (directory or Path("/etc/nosend")) / "mail.cfg"
    return parse_config(BASE + "".join(k + "\n" for k in keys), where)


def errors_of(*keys: str, directory: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(*keys, directory=directory)
    return [f"{e.line}: {e.message}" for e in info.value.all_errors]


POP3 = ("type = pop3", "host = pop.example.net", "user = yacht")
SMTP = ("type = smtp", "host = smtp.example.net", "user = yacht")


def test_every_new_key_parses(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = parse_config(
        BASE
        + "\n".join(
            [
                *POP3,
                "secret_command = pass show 'isp/yacht password'",
                "ca_file = ca.pem",
                "auth = CRAM-MD5",
                "multidrop = captain",
                "max_size = 5M",
                "keep = yes",
            ]
        )
        + "\n",
        tmp_path / "mail.cfg",
    )
    isp = config.accounts["isp"]
    assert isp.secret_command == ("pass", "show", "isp/yacht password")
    assert isp.has_secret and isp.secret is None and isp.secret_file is None
    assert isp.ca_file == tmp_path / "ca.pem"  # relative to the file's directory
    assert isp.auth == "cram-md5"
    assert (isp.multidrop, isp.deliver_to) == ("captain", None)
    assert isp.max_size == 5 * 1024 * 1024 and isp.keep is True
    assert isp.fingerprint is None and isp.tls == "starttls" and isp.port == 110
    # The command might carry a secret inline; repr leaves it out.
    assert "isp/yacht" not in repr(isp)
    assert config.warnings == ()


def test_defaults_for_the_new_keys() -> None:
    config = parse(*POP3, "secret = {PLAIN.B64}cA==", "deliver_to = captain")
    isp = config.accounts["isp"]
    assert isp.auth == "auto" and isp.secret_command == () and isp.ca_file is None
    assert isp.fingerprint is None and isp.multidrop is None and isp.max_size is None
    assert isp.keep is False and isp.has_secret


@pytest.mark.parametrize("written", [FINGERPRINT, FINGERPRINT.upper(), COLON_FINGERPRINT])
def test_fingerprint_is_normalised(written: str) -> None:
    config = parse(*SMTP, "secret = {PLAIN.B64}cA==", f"fingerprint = {written}")
    assert config.accounts["isp"].fingerprint == FINGERPRINT


@pytest.mark.parametrize(
    "written",
    [
        "ab" * 31 + "a",  # 63 digits
        "ab" * 33,  # 66 digits: SHA-384 is not SHA-256
        "zz" * 32,
        ":".join(["AB"] * 31),  # 31 pairs
        "ABC:" + ":".join(["AB"] * 31),  # a triple
        ":" + COLON_FINGERPRINT,
        "sha256:" + FINGERPRINT,
        " ".join(["AB"] * 32),
    ],
)
def test_bad_fingerprint(written: str) -> None:
    assert errors_of(*SMTP, "secret = {PLAIN.B64}cA==", f"fingerprint = {written}") == [
        "17: fingerprint: not a SHA-256 fingerprint (64 hex digits, colons allowed between pairs)"
    ]


# (keys after the header, [(line, message)])
ERROR_CASES: list[tuple[tuple[str, ...], list[str]]] = [
    (
        (*SMTP, "secret = {PLAIN.B64}cA==", "secret_command = pass show x"),
        ["17: give only one of secret, secret_file and secret_command"],
    ),
    (
        (*SMTP, "secret_command = pass show x", "secret_file = s"),
        ["17: give only one of secret, secret_file and secret_command"],
    ),
    (
        (*SMTP, "secret_file = s", "secret = {PLAIN.B64}cA==", "secret_command = cat s"),
        [
            "17: give only one of secret, secret_file and secret_command",
            "18: give only one of secret, secret_file and secret_command",
        ],
    ),
    (("type = smtp", "host = x.org", "secret_command = cat s"), ["15: a secret needs a user"]),
    ((*SMTP,), ["15: user needs a secret, a secret_file or a secret_command"]),
    ((*SMTP, "secret_command = pass 'unclosed"), ["16: secret_command: bad command"]),
    ((*SMTP, "secret_command = ''"), ["16: secret_command: no command to run"]),
    ((*SMTP, "secret_command ="), ["16: empty value for 'secret_command'"]),
    (
        (*SMTP, "secret = {PLAIN.B64}cA==", "tls = none", f"fingerprint = {FINGERPRINT}"),
        ["18: fingerprint needs TLS (this account has tls = none)"],
    ),
    (
        (*SMTP, "secret = {PLAIN.B64}cA==", "ca_file = /nonexistent/ca.pem", "tls = none"),
        [
            "17: ca_file needs TLS (this account has tls = none)",
            "17: ca_file: no such file '/nonexistent/ca.pem'",
        ],
    ),
    (
        (*SMTP, "secret = {PLAIN.B64}cA==", "ca_file = missing.pem"),
        ["17: ca_file: no such file '/etc/nosend/missing.pem'"],
    ),
    ((*SMTP, "secret = {PLAIN.B64}cA==", "auth = digest-md5"), ["17: auth: bad value"]),
    (("type = smtp", "host = x.org", "auth = plain"), ["15: auth = plain needs a user"]),
    (
        (*POP3, "secret = {PLAIN.B64}cA==", "multidrop = captain", "deliver_to = mate"),
        ["18: give either deliver_to (single-drop) or multidrop, not both"],
    ),
    (
        (*POP3, "secret = {PLAIN.B64}cA=="),
        [f"{HEADER}: missing required key 'deliver_to' or 'multidrop' in [account isp]"],
    ),
    (
        (*SMTP, "secret = {PLAIN.B64}cA==", "multidrop = captain", "max_size = 1M"),
        [
            "17: 'multidrop' is only valid with type = pop3",
            "18: 'max_size' is only valid with type = pop3",
        ],
    ),
    (
        (*POP3, "secret = {PLAIN.B64}cA==", "multidrop = nobody"),
        [f"{HEADER}: [account isp]: multidrop 'nobody' is not a mailbox or a resolvable address"],
    ),
    (
        (*POP3, "secret = {PLAIN.B64}cA==", "multidrop = ghost@example.org"),
        [f"{HEADER}: [account isp]: multidrop 'ghost@example.org' is not a mailbox"],
    ),
    ((*POP3, "secret = {PLAIN.B64}cA==", "deliver_to = x", "max_size = 0"), ["18: max_size:"]),
    (
        (*POP3, "secret = {PLAIN.B64}cA==", "deliver_to = x", "max_size = huge"),
        ["18: max_size: bad size 'huge'"],
    ),
]


@pytest.mark.parametrize(("keys", "expected"), ERROR_CASES)
def test_account_errors_name_the_line(keys: tuple[str, ...], expected: list[str]) -> None:
    found = errors_of(*keys)
    # Each expected error is the start of one found error, and nothing else was found
    # (apart from deliver_to = x in the max_size cases, which is not a mailbox).
    for want in expected:
        assert any(f.startswith(want) for f in found), found
    others = [f for f in found if not any(f.startswith(w) for w in expected)]
    assert all("deliver_to 'x'" in f for f in others), others


def test_errors_never_show_the_secret() -> None:
    found = errors_of(*SMTP, "secret = {PLAIN.B64}c2VjcmV0LXB3", "secret_command = echo 'pw")
    assert found == [
        "17: secret_command: bad command: No closing quotation",
        "17: give only one of secret, secret_file and secret_command",
    ]


def test_tls_none_with_a_login_is_a_warning_not_an_error() -> None:
    config = parse(*POP3, "secret = {PLAIN.B64}cA==", "tls = none", "deliver_to = crew@example.org")
    assert config.warnings == (
        (
            17,
            "[account isp] has tls = none: its login (AUTH or USER/PASS) and the secret "
            "cross the link in clear",
        ),
    )
    assert config.accounts["isp"].port == 110


def test_tls_none_without_a_login_has_nothing_to_warn_about() -> None:
    config = parse("type = smtp", "host = smtp.example.net", "tls = none")
    assert config.warnings == ()


def test_unused_ca_file_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    pinned = parse(
        *SMTP,
        "secret = {PLAIN.B64}cA==",
        "ca_file = ca.pem",
        f"fingerprint = {COLON_FINGERPRINT}",
        directory=tmp_path,
    )
    assert pinned.warnings == ((17, "[account isp]: ca_file is not used when fingerprint is set"),)
    unverified = parse(
        *SMTP, "secret = {PLAIN.B64}cA==", "tls_verify = no", "ca_file = ca.pem", directory=tmp_path
    )
    assert unverified.warnings == ((18, "[account isp]: ca_file is not used with tls_verify = no"),)


def test_warnings_come_in_file_order(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    text = (
        BASE
        + "type = smtp\nhost = a.example\nuser = u\nsecret = {PLAIN.B64}cA==\ntls = none\n"
        + "[account b]\ntype = smtp\nhost = b.example\nuser = u\nsecret_file = s\n"
        + "tls_verify = no\nca_file = ca.pem\n"
    )
    config = parse_config(text, tmp_path / "mail.cfg")
    assert [line for line, _ in config.warnings] == [17, 24]


def test_the_sample_account_example_is_valid_once_uncommented() -> None:
    text = sample_config(
        hostname="mail.example.org",
        data_dir=Path("/var/lib/nosend"),
        domain="example.org",
        mailbox="captain",
        password_hash=HASH,
    )
    head, _, example = text.partition("# A remote POP3 mailbox, fetched when a link is up:\n")
    assert example
    uncommented = "".join(line.removeprefix("# ") + "\n" for line in example.splitlines())
    config = parse_config(head + uncommented, "/etc/nosend/mail.cfg")
    pop = config.accounts["isp-pop"]
    assert pop.secret_command == ("pass", "show", "isp/yacht")
    assert (pop.deliver_to, pop.keep, pop.max_size) == ("captain", False, 5 * 1024 * 1024)
