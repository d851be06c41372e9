"""Names with control or odd whitespace characters are refused (issue 14, "Attackers").

``nosend user add 'bob<FF>'`` used to add a mailbox that read back as ``bob``: the file
lexer strips Unicode whitespace, the editor did not check. Config and CLI now agree:
both refuse such names with a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nosend_store.config import ConfigError, load_config
from nosend_store.config_edit import ConfigDocument, ConfigEditError
from nosend_store.passwords import hash_password
from tests.cli.test_admin import ORIGINAL, run

BAD = ["bob\f", "\fbob", "bob\v", "bo\x1fb", "bob\x85", "bob\u00a0", "bob\u2028", "bo\x00b"]


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mail.cfg"
    path.write_text(ORIGINAL)
    os.chmod(path, 0o600)
    monkeypatch.setenv("NOSEND_CONFIG", str(tmp_path / "not-this-one.cfg"))
    return path


@pytest.mark.parametrize("name", BAD)
def test_user_add_refuses_a_name_with_control_or_odd_space_characters(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    before = cfg.read_text()
    status, _, err = run(
        capsys, monkeypatch, "--config", str(cfg), "user", "add", name, "--password-stdin",
        stdin="a-password-1\n",
    )  # fmt: skip
    assert status != 0
    assert "bad mailbox name" in err
    assert cfg.read_text() == before


@pytest.mark.parametrize("name", BAD)
def test_the_editor_refuses_such_names_everywhere(name: str) -> None:
    doc = ConfigDocument(ORIGINAL)
    before = doc.text
    with pytest.raises(ConfigEditError, match="bad mailbox name"):
        doc.add_mailbox(name, hash_password("x", "PBKDF2"))
    with pytest.raises(ConfigEditError):
        doc.add_alias(f"{name}@yacht.example", ["captain"])
    with pytest.raises(ConfigEditError):
        doc.add_alias("crew@yacht.example", [name])
    with pytest.raises(ConfigEditError):
        doc.add_domain(f"{name}.example")
    assert doc.text == before


def test_a_file_with_such_a_name_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "mail.cfg"
    path.write_text(ORIGINAL.replace("[mailbox captain]", "[mailbox captain\f]"))
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="control or space character U\\+000C"):
        load_config(path)


def test_a_form_feed_in_a_comment_or_a_blank_line_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "mail.cfg"
    path.write_text(ORIGINAL.replace("# who gets what", "# who gets what\f") + "\f\n")
    path.chmod(0o600)
    assert "captain" in load_config(path).mailboxes
