"""mail.cfg: every error path names file and line; values, resolution, defaults, reload."""

from __future__ import annotations

import errno
import ipaddress
import os
import stat
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nosend_store.config import (
    ConfigError,
    ListenAddress,
    Resolution,
    create_default_config,
    default_config_path,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
    write_atomically,
)
from nosend_store.reload import ConfigHolder

# PBKDF2-SHA1("password", "salt", 2 rounds), RFC 6070: cheap to verify in tests.
HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"

# Line numbers matter: the slots {server} {domains} {captain} {aliases} {tail} are on
# lines 5, 9, 12, 20 and 21.
BASE = """\
# mail.cfg for tests
[server]
hostname = mail.example.org
data_dir = data
{server}
[domains]
example.org
example.net
{domains}
[mailbox captain]
password = HASH
{captain}
[mailbox mate]
password = HASH

[aliases]
skipper@example.org = captain
crew@example.org = captain, mate, friend@outside.net
@example.net = mate
{aliases}
{tail}
"""

SLOT_LINE = {"server": 5, "domains": 9, "captain": 12, "aliases": 20, "tail": 21}


def make(**slots: str) -> str:
    values = {name: "" for name in SLOT_LINE}
    values.update(slots)
    return BASE.format(**values).replace("HASH", HASH)


def test_base_is_valid() -> None:
    config = parse_config(make(), "mail.cfg")
    assert config.server.hostname == "mail.example.org"
    assert config.domains == {"example.org", "example.net"}
    assert list(config.mailboxes) == ["captain", "mate"]
    assert config.mailboxes["captain"].line == 10
    assert config.aliases["crew@example.org"].targets == ("captain", "mate", "friend@outside.net")
    assert config.postmaster == "captain"  # the first mailbox, without a postmaster key


# (slot, text, line offset within the slot, part of the message)
ERROR_CASES = [
    ("server", "hostnme = x", 0, "unknown key 'hostnme' in [server]"),
    ("server", "hostname = other.org", 0, "duplicate key 'hostname' in [server] (first at line 3)"),
    ("server", "max_message_size = 35X", 0, "max_message_size: bad size '35X'"),
    ("server", "max_message_size = 0", 0, "size must be positive"),
    ("server", "smtp_timeout = 5 minutes", 0, "smtp_timeout: bad duration"),
    ("server", "pop3_timeout = 0s", 0, "duration must be positive"),
    ("server", "max_recipients = many", 0, "max_recipients: bad number 'many'"),
    ("server", "max_recipients = 0", 0, "out of range"),
    ("server", "max_recipients =", 0, "empty value for 'max_recipients'"),
    ("server", "auth_requires_tls = maybe", 0, "bad boolean 'maybe'"),
    ("server", "smtp_listen = 127.0.0.1", 0, "bad listen address '127.0.0.1'"),
    ("server", "smtp_listen = 127.0.0.1:99999", 0, "bad port 99999"),
    ("server", "smtp_listen = bad_host:25", 0, "bad listen host 'bad_host'"),
    ("server", "smtp_listen = 127.0.0.1:2587", 0, "127.0.0.1:2587 is already used by smtp_listen"),
    ("server", "trusted_networks = 10.0.0.1/8", 0, "bad network '10.0.0.1/8'"),
    ("server", "trusted_networks = 10.0.0.0/8,,::1", 0, "empty item in list"),
    ("server", "log_level = loud", 0, "bad value 'loud'"),
    ("server", "plus_separator = ++", 0, "bad plus_separator"),
    ("server", "plus_separator = a", 0, "bad plus_separator"),
    ("server", "postmaster = nobody", 0, "postmaster: 'nobody' is not a mailbox"),
    ("server", "postmaster = Bad!", 0, "postmaster: bad mailbox name"),
    ("server", "postmaster = ghost@example.org", 0, "is not a mailbox or a resolvable address"),
    ("server", "tls_cert = cert.pem", 0, "tls_cert and tls_key must be set together"),
    ("server", "tls_key = /nonexistent/key.pem", 0, "tls_cert and tls_key must be set together"),
    ("server", "pop3s_listen = 127.0.0.1:995", 0, "pop3s_listen needs tls_cert and tls_key"),
    ("server", "hostname", 0, "expected 'key = value' in [server]"),
    ("server", "[server]", 0, "duplicate section [server] (first at line 2)"),
    ("server", "[server", 0, "malformed section header '[server'"),
    ("server", "[domains x]", 0, "[domains] takes no name"),
    ("server", "[widget]", 0, "unknown section [widget]"),
    ("domains", "exa mple.org", 0, "bad host name 'exa mple.org'"),
    ("domains", "-bad.org", 0, "bad host name '-bad.org'"),
    ("domains", "EXAMPLE.org", 0, "duplicate domain 'example.org' (first at line 7)"),
    ("domains", "x = y", 0, "expected one domain name per line in [domains]"),
    ("captain", "shared_secret = plain", 0, "shared_secret: a shared secret must be written"),
    ("captain", "shared_secret = {PLAIN.B64}###", 0, "shared_secret: malformed base64"),
    ("captain", "password = " + HASH, 0, "duplicate key 'password' in [mailbox captain]"),
    ("captain", "pasword = x", 0, "unknown key 'pasword' in [mailbox captain]"),
    ("captain", "[mailbox mate]", 1, "duplicate mailbox 'mate' (first at line 12)"),
    ("captain", "[mailbox Captain2]", 0, "bad mailbox name 'Captain2'"),
    ("captain", "[mailbox ..]", 0, "bad mailbox name '..'"),
    ("captain", "[mailbox]", 0, "[mailbox] needs a name"),
    ("captain", "[mailbox cook]", 0, "missing required key 'password' in [mailbox cook]"),
    ("captain", "[mailbox cook]\npassword = secret", 1, "must start with {SCHEME}"),
    ("captain", "[mailbox cook]\npassword = {MD5}abc", 1, "unsupported password scheme {MD5}"),
    (
        "aliases",
        "a@example.org = b@example.org\nb@example.org = a@example.org",
        0,
        "alias loop: a@example.org -> b@example.org -> a@example.org",
    ),
    ("aliases", "x@example.org = nobody", 0, "alias 'x@example.org': no mailbox named 'nobody'"),
    ("aliases", "x@example.org = ghost@example.org", 0, "a target is an unknown local address"),
    ("aliases", "x@example.com = captain", 0, "domain 'example.com' is not in [domains]"),
    ("aliases", "not-an-address = captain", 0, "alias bad address 'not-an-address'"),
    ("aliases", "skipper@EXAMPLE.org = mate", 0, "duplicate alias 'skipper@EXAMPLE.org'"),
    ("aliases", "x@example.org =", 0, "alias 'x@example.org': no targets"),
    ("aliases", "x@example.org = captain,,mate", 0, "empty item in list"),
    ("aliases", "x@example.org = bad address@x.org", 0, "bad address 'bad address@x.org'"),
    ("aliases", "x@example.org = Captain", 0, "bad mailbox name 'Captain'"),
    ("aliases", "just words", 0, "expected 'address = target, ...' in [aliases]"),
    ("tail", "[link gsm]\nup = dial 'unclosed", 1, "up: bad command"),
    ("tail", "[link gsm]\ncost_per_minute = -1", 1, "must be a non-negative number"),
    ("tail", "[link gsm]\ncost_per_minute = lots", 1, "bad decimal number 'lots'"),
    ("tail", "[link gsm]\nspeed = 9600", 1, "unknown key 'speed' in [link gsm]"),
    ("tail", "[link gsm]\naccounts = nope", 0, "[link gsm]: no [account nope]"),
    ("tail", "[link g$m]", 0, "bad name 'g$m'"),
    ("tail", "[link a]\n[link a]", 1, "duplicate link 'a' (first at line 21)"),
    ("tail", "[account up]\ntype = ftp\nhost = x.org", 1, "type: bad value 'ftp'"),
    ("tail", "[account up]\ntype = smtp", 0, "missing required key 'host' in [account up]"),
    ("tail", "[account up]\nhost = x.org", 0, "missing required key 'type' in [account up]"),
    (
        "tail",
        "[account up]\ntype = pop3\nhost = pop.example.net\nuser = u\nsecret = {PLAIN.B64}cA==",
        0,
        "missing required key 'deliver_to' or 'multidrop' in [account up] (type = pop3)",
    ),
    (
        "tail",
        "[account up]\ntype = pop3\nhost = pop.example.net\ndeliver_to = captain",
        0,
        "missing required key 'user' in [account up] (type = pop3)",
    ),
    (
        "tail",
        "[account up]\ntype = smtp\nhost = x.org\nkeep = yes",
        3,
        "only valid with type = pop3",
    ),
    ("tail", "[account up]\ntype = smtp\nhost = x.org\nuser = me", 3, "user needs a secret"),
    (
        "tail",
        "[account up]\ntype = smtp\nhost = x.org\nsecret = {PLAIN.B64}cA==",
        3,
        "a secret needs a user",
    ),
    (
        "tail",
        "[account up]\ntype = smtp\nhost = x.org\nuser = me\nsecret = {PLAIN.B64}cA==\n"
        "secret_file = s.txt",
        5,
        "give only one of secret, secret_file and secret_command",
    ),
    (
        "tail",
        "[account up]\ntype = pop3\nhost = x.org\nuser = u\nsecret_file = s\ndeliver_to = nobody",
        0,
        "deliver_to 'nobody' is not a mailbox or a resolvable address",
    ),
    ("tail", "[account up]\ntype = smtp\nhost = x.org\nlinks = nope", 0, "no [link nope]"),
    ("tail", "[account up]\ntype = smtp\nhost = x.org\nport = 0", 3, "port: 0 is out of range"),
    ("tail", "[account up]\ntype = smtp\nhost = x.org\ntls = ssl", 3, "tls: bad value 'ssl'"),
]


@pytest.mark.parametrize(("slot", "text", "offset", "message"), ERROR_CASES)
def test_error_names_file_line_and_problem(slot: str, text: str, offset: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(make(**{slot: text}), "etc/mail.cfg")
    line = SLOT_LINE[slot] + offset
    rendered = [str(e) for e in info.value.all_errors]
    wanted = f"etc/mail.cfg:{line}: "
    assert any(r.startswith(wanted) and message in r for r in rendered), rendered
    # Whatever else was found, every message names the file and a line.
    assert all(r.startswith("etc/mail.cfg:") for r in rendered)
    assert str(info.value) == rendered[0]


def test_error_string_format() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(make(server="hostnme = x"), "mail.cfg")
    assert str(info.value) == "mail.cfg:5: unknown key 'hostnme' in [server]"
    assert (info.value.path, info.value.line) == ("mail.cfg", 5)


def test_text_before_first_section() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("# ok\nstray = 1\n" + make(), "mail.cfg")
    assert str(info.value) == "mail.cfg:2: text before the first [section]"


def test_missing_server_section() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[domains]\n", "mail.cfg")
    assert str(info.value) == "mail.cfg:1: missing [server] section (hostname and data_dir)"


@pytest.mark.parametrize("key", ["hostname", "data_dir"])
def test_missing_required_server_key(key: str) -> None:
    text = make().replace(f"{key} = ", "# gone ")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "mail.cfg")
    assert f"mail.cfg:2: missing required key '{key}' in [server]" in map(
        str, info.value.all_errors
    )


def test_bad_hostname() -> None:
    with pytest.raises(ConfigError, match=r"^mail.cfg:3: hostname: bad host name 'a\.\.b'$"):
        parse_config(make().replace("mail.example.org", "a..b"), "mail.cfg")


def test_domains_without_any_mailbox_have_no_postmaster() -> None:
    text = "[server]\nhostname = h.org\ndata_dir = d\n[domains]\nh.org\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "mail.cfg")
    assert str(info.value).startswith("mail.cfg:4: no mailbox can receive postmaster mail")


def test_tls_files_must_exist(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("x")
    text = make(server=f"tls_cert = {tmp_path}/cert.pem\ntls_key = {key}")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "mail.cfg")
    assert str(info.value).startswith("mail.cfg:5: tls_cert: no such file")


def test_several_errors_are_all_reported_in_line_order() -> None:
    text = make(server="hostnme = x", aliases="x@example.org = nobody")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "mail.cfg")
    lines = [e.line for e in info.value.all_errors]
    assert lines == sorted(lines) and 5 in lines and 20 in lines
    assert info.value.line == 5


def test_missing_file_and_bad_utf8(tmp_path: Path) -> None:
    missing = tmp_path / "nope.cfg"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"{missing}: no such file" and info.value.line == 0
    bad = tmp_path / "bad.cfg"
    bad.write_bytes(make().encode()[:40] + b"\n# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.line == 4 and "not valid UTF-8" in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)  # a directory
    assert str(info.value).startswith(f"{tmp_path}: cannot read")


def test_error_messages_never_contain_the_secret() -> None:
    text = make(captain="shared_secret = {PLAIN.B64}c2VjcmV0IQ==x")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "mail.cfg")
    assert "c2VjcmV0" not in str(info.value) and "secret!" not in str(info.value)


# -- values -----------------------------------------------------------------------------

FULL = make(
    server="""\
smtp_listen = 0.0.0.0:25, [::1]:2525   # two
submission_listen =
trusted_networks = 192.168.1.0/24, fd00::/8
max_message_size = 10M
max_recipients = 250
smtp_timeout = 1h30m
pop3_timeout = 600
auth_requires_tls = no
lan_plaintext_auth = on
plus_separator = -
postmaster = mate
bounce_after = 4d
log_level = debug""",
    captain="shared_secret = {PLAIN.B64}c2VjcmV0",
    tail="""\
[link gsm]
up = /usr/local/bin/dial "GSM modem"
down = hangup
priority = 20
cost_per_minute = 0.50
max_online = 20m
accounts = smarthost, isp

[account smarthost]
type = smtp
host = smtp.example.net
tls = implicit
user = yacht
secret_file = smarthost.secret

[account isp]
type = pop3
host = pop.example.net
user = yacht
secret = {PLAIN.B64}aXNwIHNlY3JldA==
deliver_to = crew@example.org
keep = yes
links = gsm""",
)


def test_all_value_types() -> None:
    config = parse_config(FULL, "/etc/nosend/mail.cfg")
    s = config.server
    assert s.smtp_listen == (ListenAddress("0.0.0.0", 25), ListenAddress("::1", 2525))
    assert str(s.smtp_listen[1]) == "[::1]:2525"
    assert s.submission_listen == ()
    assert s.pop3_listen == (ListenAddress("127.0.0.1", 2110),)  # default
    assert s.max_message_size == 10 * 1024 * 1024
    assert s.max_recipients == 250
    assert s.smtp_timeout == 5400.0 and s.pop3_timeout == 600.0
    assert s.auth_requires_tls is False and s.lan_plaintext_auth is True
    assert s.bounce_after == 4 * 86400.0 and s.log_level == "debug"
    assert s.data_dir == Path("/etc/nosend/data")  # relative to the file's directory
    assert s.queue_dir == Path("/etc/nosend/data/queue")
    assert config.maildir_path("mate") == Path("/etc/nosend/data/mail/mate")
    assert config.postmaster == "mate"
    assert config.mailboxes["captain"].shared_secret == "secret"
    assert "secret" not in repr(config.mailboxes["captain"])
    assert HASH not in repr(config.mailboxes["captain"])
    gsm = config.links["gsm"]
    assert gsm.up == ("/usr/local/bin/dial", "GSM modem") and gsm.down == ("hangup",)
    assert gsm.priority == 20 and gsm.cost_per_minute == Decimal("0.50")
    assert gsm.max_online == 1200.0 and gsm.up_timeout == 120.0 and gsm.enabled
    smarthost, isp = config.accounts["smarthost"], config.accounts["isp"]
    assert (smarthost.port, smarthost.tls) == (465, "implicit")
    assert smarthost.secret_file == Path("/etc/nosend/smarthost.secret")
    assert (isp.port, isp.secret, isp.keep, isp.links) == (110, "isp secret", True, ("gsm",))
    assert "isp secret" not in repr(isp)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("512", 512),
        ("512K", 524288),
        ("35M", 36700160),
        ("1g", 1 << 30),
        ("2MB", 2 << 20),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("5d", 432000.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "1.5h", "-5m", "5 m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["", "5T", "M", "-1", "1.5M"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_trusted_networks() -> None:
    config = parse_config(FULL, "mail.cfg")
    assert config.is_trusted("192.168.1.77")
    assert config.is_trusted("::ffff:192.168.1.77")  # IPv4 on a dual-stack socket
    assert config.is_trusted(ipaddress.ip_address("fd00::1"))
    assert not config.is_trusted("192.168.2.1")
    assert not config.is_trusted("127.0.0.1")  # the default was replaced
    assert not config.is_trusted("not an ip")
    assert parse_config(make(), "mail.cfg").is_trusted("127.0.0.1")


def test_login_mailbox() -> None:
    config = parse_config(make(), "mail.cfg")
    assert config.login_mailbox("captain") is config.mailboxes["captain"]
    assert config.login_mailbox("Captain@Example.NET") is config.mailboxes["captain"]
    assert config.login_mailbox("captain@elsewhere.org") is None
    assert config.login_mailbox("nobody") is None
    assert config.mailboxes["captain"].check_password("password")
    assert not config.mailboxes["captain"].check_password("Password")


# -- resolution -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "mailboxes", "remote"),
    [
        ("captain@example.org", ("captain",), ()),
        ("CAPTAIN@Example.ORG", ("captain",), ()),
        ("captain@example.org.", ("captain",), ()),
        ("captain+sails@example.org", ("captain",), ()),
        ("skipper@example.org", ("captain",), ()),
        ("skipper+x@example.org", ("captain",), ()),
        ("crew@example.org", ("captain", "mate"), ("friend@outside.net",)),
        ("anyone@example.net", ("mate",), ()),  # catch-all
        ("captain@example.net", ("captain",), ()),  # a mailbox beats the catch-all
        ("postmaster@example.org", ("captain",), ()),
        ("PostMaster@example.net", ("captain",), ()),  # postmaster beats the catch-all
        ("Postmaster", ("captain",), ()),  # RFC 5321 section 4.5.1, no domain
        ("someone@outside.net", (), ("someone@outside.net",)),
        ("Someone@Outside.NET", (), ("Someone@Outside.NET",)),  # remote case is kept
    ],
)
def test_resolve(address: str, mailboxes: tuple[str, ...], remote: tuple[str, ...]) -> None:
    config = parse_config(make(), "mail.cfg")
    assert config.resolve(address) == Resolution(mailboxes, remote)


@pytest.mark.parametrize(
    "address",
    [
        "nobody@example.org",
        "+x@example.org",
        "captain",
        "nobody+captain@example.org",
        "@example.net",  # an empty local part is not the catch-all's key
    ],
)
def test_resolve_unknown(address: str) -> None:
    assert parse_config(make(), "mail.cfg").resolve(address) is None


def test_resolve_nested_aliases_deduplicated() -> None:
    config = parse_config(
        make(
            aliases="all@example.org = crew@example.org, skipper@example.org, mate\n"
            "captain+bills@example.org = mate"
        ),
        "mail.cfg",
    )
    assert config.resolve("all@example.org") == Resolution(
        ("captain", "mate"), ("friend@outside.net",)
    )
    # An alias for the exact plus address wins over stripping the tag.
    assert config.resolve("captain+bills@example.org") == Resolution(("mate",), ())
    assert config.resolve("captain+other@example.org") == Resolution(("captain",), ())


def test_plus_separator_setting() -> None:
    dash = parse_config(make(server="plus_separator = -"), "mail.cfg")
    assert dash.resolve("captain-x@example.org") == Resolution(("captain",), ())
    assert dash.resolve("captain+x@example.org") is None
    off = parse_config(make(server="plus_separator ="), "mail.cfg")
    assert off.resolve("captain+x@example.org") is None


def test_postmaster_mailbox_by_name_and_by_address() -> None:
    named = parse_config(make(tail="[mailbox postmaster]\npassword = " + HASH), "mail.cfg")
    assert named.resolve("postmaster@example.org") == Resolution(("postmaster",), ())
    to_alias = parse_config(make(server="postmaster = skipper@example.org"), "mail.cfg")
    assert to_alias.resolve("postmaster") == Resolution(("captain",), ())
    outside = parse_config(make(server="postmaster = admin@outside.net"), "mail.cfg")
    assert outside.resolve("postmaster@example.net") == Resolution((), ("admin@outside.net",))


def test_catch_all_loop_through_itself_is_an_error() -> None:
    text = make(tail="").replace("@example.net = mate", "@example.net = x@example.net")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "mail.cfg")
    assert str(info.value) == "mail.cfg:19: alias loop: @example.net -> @example.net"


# -- robustness -------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "[server]",
        "[domains]",
        "[aliases]",
        "[mailbox a]",
        "[link l]",
        "[account x]",
        "hostname = h.org",
        "data_dir = d",
        "h.org",
        "a@h.org = a",
        "@h.org = b@h.org",
        "b@h.org = @h.org",
        "password = " + HASH,
        "type = pop3",
        "deliver_to = a",
        "accounts = x",
        "links = l",
        "# comment",
        "",
        "=",
        "[",
        "[]",
        "x = y # z",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_PIECES, st.text(max_size=20)), max_size=25))
def test_any_text_gives_a_config_or_a_located_error(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        config = parse_config(text, "f.cfg")
    except ConfigError as e:
        assert all(str(x).startswith("f.cfg") for x in e.all_errors)
        # Line numbers count LF-separated lines, as editors and `sed -n` do.
        assert all(0 <= x.line <= max(text.count("\n") + 1, 1) for x in e.all_errors)
    else:
        for address in ("a@h.org", "b@h.org", "postmaster", "z@h.org"):
            config.resolve(address)  # validated aliases never loop at run time


# -- defaults, writing, reload ------------------------------------------------------------


def test_default_config_path_from_environment() -> None:
    assert default_config_path({"NOSEND_CONFIG": "/x/m.cfg"}) == Path("/x/m.cfg")
    if os.geteuid() == 0:
        assert default_config_path({}) == Path("/etc/nosend/mail.cfg")
    else:
        assert default_config_path({"HOME": "/home/u"}) == Path("/home/u/.config/nosend/mail.cfg")
        assert default_config_path({"XDG_CONFIG_HOME": "/c"}) == Path("/c/nosend/mail.cfg")


def test_create_default_config(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "mail.cfg"
    config, password = create_default_config(path, data_dir=tmp_path / "data")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path) == config
    assert config.domains == {"localhost"} and list(config.mailboxes) == ["user"]
    assert config.mailboxes["user"].check_password(password)
    assert password not in path.read_text()
    assert config.server.smtp_listen == (ListenAddress("127.0.0.1", 2525),)
    assert config.server.submission_listen == (ListenAddress("127.0.0.1", 2587),)
    assert config.server.pop3_listen == (ListenAddress("127.0.0.1", 2110),)
    assert config.server.smtps_listen == () and config.server.pop3s_listen == ()
    assert config.resolve("postmaster@localhost") == Resolution(("user",), ())
    with pytest.raises(FileExistsError):
        create_default_config(path, data_dir=tmp_path / "data")


def test_create_default_config_with_options(tmp_path: Path) -> None:
    config, password = create_default_config(
        tmp_path / "mail.cfg",
        hostname="mail.yacht.example",
        domain="Yacht.Example",
        mailbox="captain",
        password="given",
        data_dir=tmp_path / "d",
        scheme="PBKDF2",
    )
    assert password == "given"
    assert config.domains == {"yacht.example"}
    assert config.mailboxes["captain"].password_hash.startswith("{PBKDF2}")


def test_create_default_config_refuses_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_default_config(tmp_path / "mail.cfg", hostname="bad host", data_dir=tmp_path)
    assert not (tmp_path / "mail.cfg").exists()


def test_write_atomically_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "mail.cfg"
    write_atomically(target, "one\n")
    write_atomically(target, "two\n")
    assert target.read_text() == "two\n"
    assert os.listdir(tmp_path) == ["mail.cfg"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_write_atomically_exclusive(tmp_path: Path) -> None:
    target = tmp_path / "mail.cfg"
    write_atomically(target, "first\n", exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomically(target, "second\n", exclusive=True)
    assert target.read_text() == "first\n"
    assert os.listdir(tmp_path) == ["mail.cfg"]


def test_write_atomically_exclusive_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: str, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "mail.cfg"
    write_atomically(target, "first\n", exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomically(target, "second\n", exclusive=True)
    assert target.read_text() == "first\n"
    assert os.listdir(tmp_path) == ["mail.cfg"]


def test_holder_keeps_old_config_when_new_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "mail.cfg"
    write_atomically(path, make())
    holder = ConfigHolder(path)
    first = holder.current
    assert holder.reload_if_changed() is None and holder.current is first

    write_atomically(path, make(server="hostnme = x"))
    error = holder.reload()
    assert error is not None and str(error) == f"{path}:5: unknown key 'hostnme' in [server]"
    assert holder.current is first
    # The same bad file is reported once, not on every poll.
    assert holder.reload_if_changed() is None

    write_atomically(path, make(domains="example.com"))
    assert holder.reload_if_changed() is None
    assert holder.current is not first and "example.com" in holder.current.domains

    path.unlink()
    error = holder.reload()
    assert error is not None and error.line == 0
    assert "example.com" in holder.current.domains


def test_holder_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "mail.cfg"
    path.write_text(make(server="[oops]"))
    with pytest.raises(ConfigError):
        ConfigHolder(path)


_LOCALS = ["m0", "m1", "x", "postmaster"]
_DOMAINS = ["a.org", "b.org"]
_ALIAS_KEYS = st.sampled_from(
    [f"{loc}@{d}" for loc in _LOCALS for d in _DOMAINS] + [f"@{d}" for d in _DOMAINS]
)
_TARGETS = st.sampled_from(
    ["m0", "m1", "far@remote.net"] + [f"{loc}@{d}" for loc in _LOCALS for d in _DOMAINS]
)


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.sampled_from(["m0", "m1"]), min_size=1),
    st.dictionaries(_ALIAS_KEYS, st.lists(_TARGETS, min_size=1, max_size=3), max_size=6),
)
def test_a_valid_alias_graph_always_resolves(
    mailboxes: set[str], aliases: dict[str, list[str]]
) -> None:
    text = "[server]\nhostname = a.org\ndata_dir = d\n[domains]\na.org\nb.org\n"
    text += "".join(f"[mailbox {m}]\npassword = {HASH}\n" for m in sorted(mailboxes))
    text += "[aliases]\n" + "".join(f"{k} = {', '.join(v)}\n" for k, v in aliases.items())
    try:
        config = parse_config(text, "f.cfg")
    except ConfigError as e:
        # Rejected graphs are rejected for a reason the model agrees with.
        assert any(
            w in e.message for w in ("alias loop", "no mailbox named", "unknown local address")
        ), e.message
        return
    probes = [k if not k.startswith("@") else "anyone" + k for k in aliases]
    probes += [f"{m}+tag@{d}" for m in mailboxes for d in _DOMAINS] + ["postmaster"]
    for address in probes:
        result = config.resolve(address)
        assert result is not None, address
        assert set(result.mailboxes) <= mailboxes
        assert set(result.remote) <= {"far@remote.net"}
        assert result.mailboxes or result.remote


def test_queue_drop_mailbox_names_an_existing_mailbox() -> None:
    config = parse_config(make(server="queue_drop_mailbox = mate"), "mail.cfg")
    assert config.server.queue_drop_mailbox == "mate"
    assert parse_config(make(), "mail.cfg").server.queue_drop_mailbox is None
    with pytest.raises(ConfigError) as info:
        parse_config(make(server="queue_drop_mailbox = relay"), "mail.cfg")
    assert str(info.value) == "mail.cfg:5: queue_drop_mailbox: no mailbox named 'relay'"
    with pytest.raises(ConfigError) as info:
        parse_config(make(server="queue_drop_mailbox = Bad Name"), "mail.cfg")
    assert str(info.value).startswith("mail.cfg:5: ")


# -- user and group: who the server runs as after binding its ports ------------------------


def test_user_and_group_are_resolved_when_the_file_is_loaded() -> None:
    import grp
    import pwd

    assert parse_config(make(), "mail.cfg").server.run_as is None
    # root and its group exist on every system the tests run on.
    root = pwd.getpwuid(0).pw_name
    config = parse_config(make(server=f"user = {root}"), "mail.cfg")
    run_as = config.server.run_as
    assert run_as is not None
    assert (run_as.user, run_as.uid, run_as.line) == (root, 0, 5)
    assert (run_as.gid, run_as.group) == (0, grp.getgrgid(0).gr_name)
    other = grp.getgrgid(os.getgid()).gr_name
    config = parse_config(make(server=f"user = {root}\ngroup = {other}"), "mail.cfg")
    assert config.server.run_as is not None
    assert (config.server.run_as.group, config.server.run_as.gid) == (other, os.getgid())


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("user = nosend-no-such-user-x9", "mail.cfg:5: user: no such user "),
        ("user = root\ngroup = nosend-no-such-group-x9", "mail.cfg:6: group: no such group "),
        ("group = root", "mail.cfg:5: group needs user"),
        ("user =", "mail.cfg:5: empty value for 'user'"),
    ],
)
def test_unknown_user_or_group_is_an_error_with_its_line(server: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(make(server=server), "mail.cfg")
    assert str(info.value).startswith(message)


def test_write_atomically_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    # root:nosend 0640: the server, running as nosend, must still read it after an edit.
    target = tmp_path / "mail.cfg"
    write_atomically(target, "one\n")
    os.chmod(target, 0o640)
    write_atomically(target, "two\n")
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    fresh = tmp_path / "new.cfg"
    write_atomically(fresh, "new\n")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


ONLY_MAILBOX = """\
[server]
hostname = mail.example.org
data_dir = data
queue_drop_mailbox = captain

[domains]
example.org

[mailbox captain]
password = hunter2

[aliases]
skipper@example.org = captain
"""


def test_a_plaintext_password_is_the_one_error_reported() -> None:
    # The only mailbox fails to parse; what refers to it (postmaster, an alias, the queue
    # drop) must not be reported before or beside the root cause.
    with pytest.raises(ConfigError) as info:
        parse_config(ONLY_MAILBOX, "mail.cfg")
    rendered = [str(e) for e in info.value.all_errors]
    assert rendered == [
        "mail.cfg:10: password: a password hash must start with {SCHEME}, e.g. {SCRYPT}; a "
        "plaintext password is never stored: set it with `nosend user passwd NAME`"
    ]


def test_references_to_a_mailbox_that_never_existed_are_still_reported() -> None:
    text = ONLY_MAILBOX.replace("password = hunter2", "password = " + HASH)
    text = text.replace("= captain\n", "= cook\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "mail.cfg")
    rendered = "\n".join(str(e) for e in info.value.all_errors)
    assert "no mailbox named 'cook'" in rendered and "queue_drop_mailbox" in rendered
