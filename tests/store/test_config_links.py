"""``[link NAME]``'s link-layer keys and the ``[schedule]`` section of ``mail.cfg``."""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from pathlib import Path

import pytest

from nosend_store.config import (
    URGENT_ANYONE,
    ConfigError,
    Schedule,
    create_default_config,
    parse_config,
)
from nosend_store.config_edit import ConfigDocument, ConfigEditError
from nosend_store.link_values import Budget, Endpoint, Hours, LinkValueError, parse_rate

HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"

BASE = f"""\
[server]
hostname = mail.example.org
data_dir = /var/lib/nosend

[domains]
example.org

[mailbox captain]
password = {HASH}

[account smarthost]
type = smtp
host = smtp.example.net

[account marina-smtp]
type = smtp
host = mail.marina.example
port = 25
tls = none

[account home]
type = pop3
host = pop.example.net
user = yacht
secret = {{PLAIN.B64}}cA==
deliver_to = captain
"""
#: The first line after BASE.
TAIL = BASE.count("\n") + 1


def test_every_link_key_is_read() -> None:
    config = parse_config(BASE + """
[link iridium]
up = pon iridium
down = poff iridium
probe = [2001:db8::25]:587
max_size = 50K
hours = 22:00-06:00
budget = 120.50
rate = 2400 bit/s
setup_seconds = 25s
down_timeout = 45s
smarthost = smarthost
""")
    link = config.links["iridium"]
    assert link.probe == Endpoint("2001:db8::25", 587)
    assert link.max_size == 50 * 1024
    assert link.hours == Hours(((22 * 60, 6 * 60),))
    assert link.budget == Budget(Decimal("120.50"), "money")
    assert link.rate == 300.0
    assert (link.setup_seconds, link.down_timeout) == (25.0, 45.0)
    assert link.smarthost == "smarthost"


def test_link_keys_default_to_none_and_always() -> None:
    link = parse_config(BASE + "\n[link lan]\n").links["lan"]
    assert (link.probe, link.max_size, link.budget, link.rate, link.setup_seconds,
            link.down_timeout, link.smarthost) == (None,) * 7
    assert link.hours.always
    assert parse_config(BASE).schedule == Schedule()


def test_a_volume_budget_and_a_zero_setup_time() -> None:
    link = parse_config(BASE + "\n[link vsat]\nbudget = 2 GB\nsetup_seconds = 0\n").links["vsat"]
    assert link.budget == Budget(Decimal(2000), "MB")
    assert link.setup_seconds == 0.0


def test_the_schedule_section() -> None:
    config = parse_config(BASE + """
[link gsm]
up = pon gsm

[schedule]
link = gsm
queue_age = 30m
urgent = captain
times = 18:00, 06:00
every = 6h
min_interval = 0
scheduler = no
report = daily
""")
    s = config.schedule
    assert s.link == "gsm" and s.queue_age == 1800.0 and s.urgent == ("captain",)
    assert s.times == (time(6, 0), time(18, 0)) and s.every == 6 * 3600.0
    assert s.min_interval == 0.0 and s.scheduler is False and s.report == "daily"
    assert s.line == TAIL + 4  # a blank line, [link gsm], up, a blank line


@pytest.mark.parametrize(("text", "link", "queue_age", "urgent"), [
    ("link = COST\nqueue_age = no\nurgent = all", "cost", None, (URGENT_ANYONE,)),
    ("link = auto\nurgent = yes", "auto", 900.0, (URGENT_ANYONE,)),
    ("urgent = no\nqueue_age = off", "auto", None, ()),
    ("urgent =", "auto", 900.0, ()),
])
def test_schedule_spellings(
    text: str, link: str, queue_age: float | None, urgent: tuple[str, ...]
) -> None:
    s = parse_config(BASE + "\n[schedule]\n" + text + "\n").schedule
    assert (s.link, s.queue_age, s.urgent) == (link, queue_age, urgent)


# (text after BASE, line offset from TAIL of the error, the message's end)
ERRORS = [
    ("[link a]\nprobe = smtp.example.net", 1,
     "probe: not host:port: 'smtp.example.net'"),
    ("[link a]\nprobe = host:70000", 1, "probe: port out of range: 'host:70000'"),
    ("[link a]\nhours = 25:00-06:00", 1, "hours: not a time of day: '25:00-06:00'"),
    ("[link a]\nhours = evenings", 1, "hours: not HH:MM-HH:MM: 'evenings'"),
    ("[link a]\nbudget = 12 minutes", 1,
     "budget: budget unit must be MB or GB, or none for money: '12 minutes'"),
    ("[link a]\nbudget = lots", 1, "budget: not a budget: 'lots'"),
    ("[link a]\nmax_size = huge", 1, "max_size: bad size 'huge'"),
    ("[link a]\nrate = fast", 1, "rate: not a rate"),
    ("[link a]\nrate = 0 bit/s", 1, "rate: a rate must be more than 0: '0 bit/s'"),
    ("[link a]\nsetup_seconds = soon", 1, "setup_seconds: bad duration 'soon'"),
    ("[link a]\ndown_timeout = 0", 1, "down_timeout: duration must be positive"),
    ("[link a]\nsmarthost = nowhere", 1, "smarthost: no [account nowhere]"),
    ("[link a]\nsmarthost = home", 1, "smarthost: [account home] is not type = smtp"),
    ("[link a]\n\n[account only-b]\ntype = smtp\nhost = b.example\nlinks = b\n\n[link b]\n"
     "[link c]\nsmarthost = only-b", 9,
     "smarthost: [account only-b] is not used over [link c] (its links = b)"),
    ("[schedule]\nlink = iridium", 1, "link: no [link iridium] (auto, cost or a link's name)"),
    ("[schedule]\nlink = bad name!", 1, "link: bad name 'bad name!'"),
    ("[schedule]\nurgent = captain, ghost", 1, "urgent: no mailbox named 'ghost'"),
    ("[schedule]\nurgent = Captain", 1, "urgent: bad mailbox name 'Captain'"),
    ("[schedule]\ntimes = 6pm", 1, "times: not a time of day (HH:MM): '6pm'"),
    ("[schedule]\nqueue_age = soon", 1, "queue_age: bad duration 'soon'"),
    ("[schedule]\nevery = 0", 1, "every: duration must be positive"),
    ("[schedule]\nreport = weekly", 1, "report: bad value 'weekly' (expected each or daily or no)"),
    ("[schedule]\nscheduler = maybe", 1, "scheduler: bad boolean 'maybe'"),
    ("[schedule]\ndial = yes", 1, "unknown key 'dial' in [schedule]"),
    ("[schedule]\n[schedule]", 1, "duplicate section [schedule] (first at line {TAIL})"),
    ("[schedule gsm]", 0, "[schedule] takes no name"),
]


@pytest.mark.parametrize(("text", "offset", "message"), ERRORS)
def test_errors_name_the_line(text: str, offset: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + text + "\n", "etc/mail.cfg")
    expected = f"etc/mail.cfg:{TAIL + offset}: {message.format(TAIL=TAIL)}"
    rendered = [str(e) for e in info.value.all_errors]
    assert any(r.startswith(expected) for r in rendered), rendered


def test_rates_in_bits_and_bytes() -> None:
    assert parse_rate("300") == parse_rate("300 B/s") == parse_rate("2400 bit/s") == 300.0
    assert parse_rate("2.4 kbit/s") == parse_rate("2400bps") == 300.0
    assert parse_rate("64 kbps") == 8000.0 and parse_rate("1.5 Mbit/s") == 187_500.0
    with pytest.raises(LinkValueError):
        parse_rate("9600 baud")


def test_the_sample_file_has_a_schedule_and_parses(tmp_path: Path) -> None:
    config, _ = create_default_config(tmp_path / "mail.cfg", data_dir=tmp_path / "data",
                                      password="pw")
    text = (tmp_path / "mail.cfg").read_text()
    assert "[schedule]" in text and "# [link gsm]" in text
    assert config.schedule.link == "auto" and config.schedule.scheduler is True
    # The commented link example is a valid section once uncommented.
    example = text[text.index("# [link gsm]"):].split("\n\n")[0]
    body = "\n".join(line[2:] for line in example.splitlines())
    body = body.replace("accounts = smarthost, isp-pop", "accounts = smarthost")
    linked = parse_config(BASE + "\n" + body + "\n").links["gsm"]
    assert linked.probe == Endpoint("smtp.example.net", 587) and linked.max_size == 1024**2
    assert linked.rate == 1200.0 and linked.smarthost == "smarthost"


# -- comment-keeping edits of links and the schedule ------------------------------------

EDITABLE = BASE + """
# the satellite: dear
[link iridium]   # Iridium GO
up = pon iridium
priority = 50   # last resort

[account sat]
type = smtp
host = sat.example
links = iridium
"""


def test_add_link_goes_after_the_last_link_and_keeps_comments() -> None:
    doc = ConfigDocument(EDITABLE)
    doc.add_link("gsm", [("up", "nmcli connection up gsm"), ("priority", "20"),
                         ("probe", "smtp.example.net:587")])
    text = doc.text()
    assert text.startswith(EDITABLE.split("[link iridium]")[0])
    assert "priority = 50   # last resort\n\n[link gsm]\nup = nmcli connection up gsm\n" in text
    link = doc.config().links["gsm"]
    assert link.up == ("nmcli", "connection", "up", "gsm") and link.priority == 20
    with pytest.raises(ConfigEditError, match="link 'gsm' already exists"):
        doc.add_link("gsm", [])


def test_the_first_link_goes_before_the_accounts() -> None:
    doc = ConfigDocument(BASE)
    doc.add_link("lan", [("up", "")])
    text = doc.text()
    assert text.index("[link lan]") < text.index("[account smarthost]")
    assert doc.config().links["lan"].up == ()


def test_remove_link_refuses_while_an_account_names_it() -> None:
    doc = ConfigDocument(EDITABLE)
    with pytest.raises(ConfigEditError, match="in the links of account sat"):
        doc.remove_link("iridium")
    with pytest.raises(ConfigEditError, match="no link 'ghost'"):
        doc.remove_link("ghost")


def test_remove_link_takes_its_lines_and_resets_the_link_in_use() -> None:
    doc = ConfigDocument(
        BASE + "\n[schedule]\nlink = gsm   # the usual\n\n[link gsm]\nup = pon gsm\n"
    )
    assert doc.remove_link("gsm") is True
    text = doc.text()
    assert "[link gsm]" not in text and "pon gsm" not in text
    assert "link = auto   # the usual" in text
    assert doc.config().schedule.link == "auto"


def test_set_schedule_adds_the_section_when_missing() -> None:
    doc = ConfigDocument(EDITABLE)
    doc.set_schedule("link", "iridium")
    text = doc.text()
    assert text.index("[schedule]\nlink = iridium\n") < text.index("# the satellite")
    assert doc.config().schedule.link == "iridium"
    doc.set_schedule("link", "cost")
    assert doc.text().count("[schedule]") == 1 and doc.config().schedule.link == "cost"


def test_warnings_for_a_link_nothing_can_probe_and_urgent_from_anyone() -> None:
    config = parse_config(BASE.replace("[account smarthost]\ntype = smtp", "[account smarthost]\n"
                                       "type = smtp\nlinks = lan")
                          .replace("[account marina-smtp]\ntype = smtp",
                                   "[account marina-smtp]\ntype = smtp\nlinks = lan")
                          + "\n[link lan]\n\n[link modem]\nup = pon modem\n"
                          "\n[schedule]\nurgent = all\n")
    messages = [m for _, m in config.warnings]
    assert messages == [
        "[link modem] has no probe and no smtp account to probe: only up's exit status "
        "will say whether it is up",
        "urgent = all: anyone who can send through this server can start a call by marking "
        "a message urgent",
    ]
    tail = TAIL + 2  # the two "links = lan" lines added to BASE
    assert [line for line, _ in config.warnings] == [tail + 3, tail + 7]
    # A probe of its own, or an smtp account usable over it, and there is no warning.
    quiet = parse_config(BASE + "\n[link modem]\nup = pon modem\n")
    assert quiet.warnings == ()
