"""The README's ``[link]`` examples are valid ``mail.cfg`` sections, as written."""

from __future__ import annotations

import re
from pathlib import Path

from nosend_store.config import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"

# What the examples refer to: a pop3 account "home" and an smtp account "sat-smtp".
BASE = """\
[server]
hostname = mail.yacht.example
data_dir = /var/lib/nosend

[domains]
yacht.example

[mailbox captain]
password = {PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957

[account sat-smtp]
type = smtp
host = relay.sat.example

[account home]
type = pop3
host = pop.example.net
user = yacht
secret_file = /etc/nosend/home.secret
deliver_to = captain
"""


def links_section() -> str:
    text = README.read_text()
    start = text.index("\n## Links\n")
    return text[start:text.index("\n## ", start + 1)]


def test_every_ini_example_in_the_links_section_parses() -> None:
    blocks = re.findall(r"```ini\n(.*?)```", links_section(), re.S)
    assert len(blocks) == 5, "README.md lost or gained [link] examples: update this test"
    configs = [parse_config(BASE + "\n" + block, "README.md") for block in blocks]
    assert [list(c.links) for c in configs] == [
        ["iridium"], ["iridium"], ["gsm"], ["lte", "modem"], ["vsat"]]
    keys = configs[0].links["iridium"]
    assert keys.smarthost == "sat-smtp" and keys.budget is not None and keys.hours.windows
    # Split like a shell, run without one: the quotes are rasdial's entry name.
    rasdial = configs[1].links["iridium"]
    assert rasdial.up == ("rasdial", "Iridium", "user", "password")
    assert rasdial.down == ("rasdial", "Iridium", "/disconnect")
    modem = configs[3].links["modem"]
    assert modem.up == ("mmcli", "-m", "0", "--simple-connect=apn=internet")
    assert configs[4].links["vsat"].up == ()
