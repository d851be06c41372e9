"""Comment-preserving edits of mail.cfg: only the touched lines change."""

from __future__ import annotations

import difflib
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nosend_store.config import ConfigError, write_atomically
from nosend_store.config_edit import (
    SHARED_SECRET_WARNING,
    ConfigDocument,
    ConfigEditError,
    edit_config,
)
from nosend_store.passwords import encode_shared_secret

HASH = "{PBKDF2}$1$salt$2$ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"
HASH2 = "{PBKDF2}$1$salt$3$" + "ab" * 20  # well-formed; matches nothing we test with

# Hand-written, with odd spacing, trailing comments and comments between sections.
ORIGINAL = f"""\
# Yacht mail server -- edited by hand, keep my notes!

[server]
hostname   =   mail.yacht.example    # the boat's name
data_dir=/var/lib/nosend
max_message_size = 20M   # satellite is expensive

# Domains we receive mail for
[domains]
yacht.example     # main
  # spare domain, not used yet
[mailbox captain]
# the owner
password = {HASH}

[mailbox mate]
password = {HASH}
  # end of mate

# aliases below
[aliases]
# crew list
crew@yacht.example = captain, mate   # everyone
"""


def changed_lines(before: str, after: str) -> list[str]:
    """Lines removed (-) or added (+) by the edit."""
    return [
        line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:1] in "+-"
    ]


def doc() -> ConfigDocument:
    d = ConfigDocument(ORIGINAL, "mail.cfg")
    d.config()  # the fixture itself is valid
    return d


def test_untouched_document_is_byte_identical() -> None:
    assert doc().text() == ORIGINAL
    crlf = ORIGINAL.replace("\n", "\r\n")
    assert ConfigDocument(crlf).text() == crlf


def test_byte_order_mark_is_kept_and_ignored() -> None:
    d = ConfigDocument("\ufeff" + ORIGINAL)
    d.add_domain("x.example")
    assert d.text().startswith("\ufeff# Yacht mail server")
    assert "x.example" in d.config().domains


def test_no_final_newline_gets_one() -> None:
    assert ConfigDocument("[server]").text() == "[server]\n"


def test_add_domain_goes_after_last_domain() -> None:
    d = doc()
    d.add_domain("yacht.example.net")
    assert changed_lines(ORIGINAL, d.text()) == ["+ yacht.example.net"]
    lines = d.text().splitlines()
    assert lines[lines.index("yacht.example     # main") + 1] == "yacht.example.net"
    assert "yacht.example.net" in d.config().domains


def test_add_then_remove_is_identity() -> None:
    d = doc()
    d.add_domain("b.example")
    d.add_mailbox("cook", HASH, encode_shared_secret("pw"))
    d.add_alias("galley@yacht.example", ["cook", "mate"])
    d.add_alias("crew@yacht.example", ["cook"])
    d.config()
    d.remove_alias("crew@yacht.example", ["cook"])
    d.remove_alias("galley@yacht.example")
    d.remove_mailbox("cook")
    d.remove_domain("b.example")
    assert d.text() == ORIGINAL


def test_add_mailbox_after_last_mailbox() -> None:
    d = doc()
    d.add_mailbox("cook", HASH)
    assert changed_lines(ORIGINAL, d.text()) == ["+ ", "+ [mailbox cook]", f"+ password = {HASH}"]
    text = d.text()
    assert text.index("[mailbox cook]") > text.index("[mailbox mate]")
    assert text.index("[mailbox cook]") < text.index("# aliases below")
    assert list(d.config().mailboxes) == ["captain", "mate", "cook"]


def test_add_mailbox_with_shared_secret_writes_the_warning() -> None:
    d = doc()
    d.add_mailbox("cook", HASH, encode_shared_secret("pw"))
    lines = d.text().splitlines()
    i = lines.index(SHARED_SECRET_WARNING)
    assert lines[i + 1] == "shared_secret = " + encode_shared_secret("pw")
    assert d.config().mailboxes["cook"].shared_secret == "pw"


def test_first_mailbox_goes_before_aliases() -> None:
    text = "[server]\nhostname = h.org\ndata_dir = d\n\n# the aliases\n[aliases]\n"
    d = ConfigDocument(text)
    d.add_mailbox("a", HASH)
    assert d.text() == (
        "[server]\nhostname = h.org\ndata_dir = d\n\n"
        f"[mailbox a]\npassword = {HASH}\n\n# the aliases\n[aliases]\n"
    )


def test_missing_sections_are_created() -> None:
    d = ConfigDocument("[server]\nhostname = h.org\ndata_dir = d\n")
    d.add_mailbox("a", HASH)
    d.add_domain("h.org")
    d.add_alias("x@h.org", ["a"])
    config = d.config()
    assert config.resolve("x@h.org") is not None
    assert d.text().startswith("[server]\nhostname = h.org\ndata_dir = d\n\n")


def test_change_password_keeps_layout_and_comments() -> None:
    d = doc()
    d.set_mailbox_password("captain", HASH2, None, keep_secret=False)
    assert changed_lines(ORIGINAL, d.text()) == [f"- password = {HASH}", f"+ password = {HASH2}"]
    assert d.text().count(HASH) == 1  # mate's is unchanged


def test_shared_secret_add_replace_remove() -> None:
    d = doc()
    d.set_mailbox_password("mate", HASH2, encode_shared_secret("one"), keep_secret=False)
    assert d.config().mailboxes["mate"].shared_secret == "one"
    assert d.has_shared_secret("mate") and not d.has_shared_secret("captain")
    d.set_mailbox_password("mate", HASH2, encode_shared_secret("two"), keep_secret=False)
    assert d.config().mailboxes["mate"].shared_secret == "two"
    assert d.text().count(SHARED_SECRET_WARNING) == 1
    d.set_mailbox_password("mate", HASH, None, keep_secret=False)
    assert d.text() == ORIGINAL  # secret and its warning are gone, comment kept


def test_set_value_keeps_trailing_comment_and_its_spacing() -> None:
    d = doc()
    d.set_value("server", "", "max_message_size", "5M")
    assert changed_lines(ORIGINAL, d.text()) == [
        "- max_message_size = 20M   # satellite is expensive",
        "+ max_message_size = 5M   # satellite is expensive",
    ]
    d.set_value("server", "", "hostname", "boat.example")
    assert "hostname   =   boat.example    # the boat's name" in d.text()
    d.set_value("server", "", "max_recipients", "50")
    assert "max_message_size = 5M   # satellite is expensive\nmax_recipients = 50\n" in d.text()
    assert d.config().server.max_recipients == 50


def test_set_an_empty_value_that_has_a_comment() -> None:
    d = ConfigDocument("[server]\nsmtps_listen =          # off\ntls_cert =\n")
    d.set_value("server", "", "smtps_listen", "[::1]:465")
    d.set_value("server", "", "tls_cert", "c.pem")
    assert d.text() == "[server]\nsmtps_listen = [::1]:465 # off\ntls_cert = c.pem\n"
    d.set_value("server", "", "smtps_listen", "")
    assert d.text() == "[server]\nsmtps_listen = # off\ntls_cert = c.pem\n"


def test_remove_mailbox_keeps_comments_around_it() -> None:
    d = doc()
    d.remove_alias("crew@yacht.example", ["mate"])
    d.remove_mailbox("mate")
    text = d.text()
    assert "[mailbox mate]" not in text
    assert "  # end of mate" in text  # a trailing comment is not the section's to take
    assert "# aliases below" in text and "# the owner" in text
    assert "\n\n\n" not in text


def test_alias_add_merges_and_remove_drops_targets() -> None:
    d = doc()
    d.add_alias("CREW@yacht.example", ["friend@example.net", "mate"])
    assert "crew@yacht.example = captain, mate, friend@example.net   # everyone" in d.text()
    d.remove_alias("crew@yacht.example", ["CAPTAIN"])
    assert "crew@yacht.example = mate, friend@example.net   # everyone" in d.text()
    d.add_alias("@yacht.example", ["captain"])
    assert d.config().resolve("anything@yacht.example") is not None
    assert [a for a, _ in d.aliases()] == ["crew@yacht.example", "@yacht.example"]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda d: d.add_domain("YACHT.example"), "domain 'YACHT.example' is already listed"),
        (lambda d: d.remove_domain("other.example"), "no domain 'other.example'"),
        (lambda d: d.remove_domain("yacht.example"), "still has aliases (crew@yacht.example)"),
        (lambda d: d.add_mailbox("mate", HASH), "mailbox 'mate' already exists"),
        (lambda d: d.remove_mailbox("cook"), "no mailbox 'cook'"),
        (lambda d: d.remove_mailbox("mate"), "target of alias crew@yacht.example"),
        (
            lambda d: d.set_mailbox_password("cook", HASH, None, keep_secret=False),
            "no mailbox 'cook'",
        ),
        (lambda d: d.add_alias("crew@yacht.example", ["MATE"]), "already has those targets"),
        (lambda d: d.add_alias("x@yacht.example", []), "needs at least one target"),
        (lambda d: d.add_alias("x@yacht.example", ["a,b"]), "bad alias part 'a,b'"),
        (lambda d: d.remove_alias("x@yacht.example"), "no alias 'x@yacht.example'"),
        (lambda d: d.remove_alias("crew@yacht.example", ["cook"]), "has no target 'cook'"),
        (lambda d: d.set_value("server", "", "hostname", "a #b"), "cannot contain ' #'"),
        (lambda d: d.set_value("server", "", "hostname", "a\nb"), "line break"),
        (lambda d: d.set_value("link", "x", "up", "dial"), "no [link x] section"),
        (lambda d: d.add_domain("a\n[server]"), "line break"),
    ],
)
def test_edit_errors(action: object, message: str) -> None:
    d = doc()
    with pytest.raises(ConfigEditError) as info:
        action(d)  # type: ignore[operator]
    assert message in str(info.value)


def test_edit_config_writes_valid_result(tmp_path: Path) -> None:
    path = tmp_path / "mail.cfg"
    write_atomically(path, ORIGINAL)
    result, config = edit_config(path, lambda d: d.add_domain("new.example") or 7)
    assert result == 7 and "new.example" in config.domains
    assert path.read_text() == ORIGINAL.replace(
        "yacht.example     # main\n", "yacht.example     # main\nnew.example\n"
    )


def test_edit_config_refuses_an_invalid_result(tmp_path: Path) -> None:
    path = tmp_path / "mail.cfg"
    write_atomically(path, ORIGINAL)
    with pytest.raises(ConfigEditError) as info:
        edit_config(path, lambda d: d.set_value("server", "", "max_recipients", "lots"))
    assert "refused, the file would become invalid: " in str(info.value)
    assert "max_recipients" in str(info.value)
    # A bad mailbox name is refused before the file is even re-read, by the same rule.
    with pytest.raises(ConfigEditError, match="bad mailbox name 'Bad'"):
        edit_config(path, lambda d: d.add_mailbox("Bad", HASH))
    assert path.read_text() == ORIGINAL


def test_edit_config_refuses_to_edit_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "mail.cfg"
    write_atomically(path, ORIGINAL + "bogus = 1\n")
    with pytest.raises(ConfigError) as info:
        edit_config(path, lambda d: d.add_domain("x.example"))
    assert str(info.value) == f"{path}:24: alias bad address 'bogus'"
    assert path.read_text() == ORIGINAL + "bogus = 1\n"


def test_concurrent_edits_are_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "mail.cfg"
    write_atomically(path, ORIGINAL)
    names = [f"d{i}.example" for i in range(8)]
    threads = [
        threading.Thread(target=edit_config, args=(path, lambda d, n=n: d.add_domain(n)))
        for n in names
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    doc_after = ConfigDocument.read(path)
    assert set(names) <= set(doc_after.domains())


_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["domain", "mailbox", "alias", "value"]),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(_EDITS)
def test_any_edit_sequence_keeps_every_comment_in_order(edits: list[tuple[str, int]]) -> None:
    d = doc()
    for kind, n in edits:
        try:
            if kind == "domain":
                d.add_domain(f"d{n}.example")
            elif kind == "mailbox":
                d.add_mailbox(f"m{n}", HASH)
            elif kind == "alias":
                d.add_alias(f"a{n}@yacht.example", ["captain", f"x{n}@example.net"])
            else:
                d.set_value("server", "", "max_recipients", str(10 + n))
        except ConfigEditError:
            continue
    d.config()
    comments = [line for line in ORIGINAL.splitlines() if line.strip().startswith("#")]
    kept = [line for line in d.text().splitlines() if line.strip().startswith("#")]
    assert kept == comments
    # Every original line is still there, in order (edits only add or change values).
    original = ORIGINAL.splitlines()
    matcher = difflib.SequenceMatcher(a=original, b=d.text().splitlines(), autojunk=False)
    same = sum(block.size for block in matcher.get_matching_blocks())
    changed = {"max_recipients"} if any(k == "value" for k, _ in edits) else set()
    assert same >= len(original) - len(changed)
