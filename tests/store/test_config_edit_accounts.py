"""ConfigDocument.add_account / remove_account: placement, validation, round trip."""

from __future__ import annotations

import pytest

from nosend_store.config_edit import ConfigDocument, ConfigEditError

BASE = """\
[server]
hostname = boat.example
data_dir = /tmp/nosend-never-used

[domains]
boat.example

[mailbox skipper]
password = {PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957

[account first]   # the smarthost
type = smtp
host = smtp.example.net

# notes about the links below
[link gsm]
up = pon gsm
"""


def test_a_new_account_goes_after_the_last_account_and_comes_out_again() -> None:
    doc = ConfigDocument(BASE)
    doc.add_account("isp", [("type", "pop3"), ("host", "pop.example.net"), ("user", "boat"),
                            ("secret_command", "pass show isp"), ("deliver_to", "x@y.example")])
    text = doc.text()
    assert text.index("[account isp]") < text.index("# notes about the links below")
    assert "secret_command = pass show isp\n" in text
    config = doc.config()
    assert config.accounts["isp"].secret_command == ("pass", "show", "isp")
    assert doc.accounts() == ["first", "isp"]
    doc.remove_account("isp")
    assert doc.text() == BASE


def test_without_accounts_the_section_is_appended() -> None:
    doc = ConfigDocument(BASE.split("[account first]")[0].rstrip() + "\n")
    doc.add_account("up", [("type", "smtp"), ("host", "smtp.example.net")])
    assert doc.text().endswith("\n[account up]\ntype = smtp\nhost = smtp.example.net\n")
    assert doc.config().accounts["up"].port == 587


def test_duplicates_missing_names_and_line_breaks_are_refused() -> None:
    doc = ConfigDocument(BASE)
    with pytest.raises(ConfigEditError, match="already exists"):
        doc.add_account("first", [("type", "smtp"), ("host", "h.example")])
    with pytest.raises(ConfigEditError, match="no account"):
        doc.remove_account("nope")
    with pytest.raises(ConfigEditError):
        doc.add_account("x", [("host", "h.example\n[server]")])
    assert doc.text() == BASE
