"""README's "Mail to and from the world": every ``nosend`` command it shows parses.

The section documents ``nosend account``, ``nosend exchange`` and ``nosend held``; a
flag renamed in the parser and not in the README would send a reader to a usage error.
Each command line of the section's ``sh`` blocks (the ``nosend`` part of a pipeline,
comments dropped) must be accepted by ``nosend``'s own argparse parser, and together
they must show every subcommand the section is about.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from nosend.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
TITLE = "## Mail to and from the world"
COVERED = {
    ("account", "add"), ("account", "remove"), ("account", "list"), ("account", "test"),
    ("exchange", None), ("held", "list"), ("held", "fetch"), ("held", "delete"),
}  # fmt: skip


def section_commands() -> list[list[str]]:
    """The argv (without ``nosend``) of every command line in the section's sh blocks."""
    text = README.read_text()
    start = text.index("\n" + TITLE + "\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split(" | "):
                argv = shlex.split(part, comments=True)
                if argv and argv[0] == "nosend":
                    commands.append(argv[1:])
    return commands


def test_the_section_shows_every_command_it_is_about() -> None:
    seen = set()
    for argv in section_commands():
        second = argv[1] if argv[0] in ("account", "held") else None
        seen.add((argv[0], second))
    assert seen == COVERED


@pytest.mark.parametrize("argv", section_commands(), ids=" ".join)
def test_each_command_of_the_section_parses(argv: list[str]) -> None:
    parsed = build_parser().parse_args(argv)  # SystemExit(2) on an unknown flag
    assert callable(parsed.handler)


def test_a_wrong_flag_would_be_caught() -> None:
    # The check above is only worth something if the parser refuses what it does not know.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["account", "add", "x", "--type", "pop3", "--host", "h",
                                   "--drop-to", "captain"])
