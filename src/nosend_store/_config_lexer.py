"""The lines of ``mail.cfg``: the lexer shared by the parser and the comment-keeping editor.

Owns: splitting the text into numbered lines the way editors count them, classifying
each line (blank, comment, section header, ``key = value`` entry, bare word), trailing
comments, and grouping lines under their section headers. Must not: interpret a value
or know which keys a section takes (that is :mod:`nosend_store._config_sections`).
:mod:`nosend_store.config_edit` uses the same lexer, so an edit and a load always agree
on what each line is.

Grammar (line oriented, UTF-8)::

    file     = *( blank / comment / section / entry / word )
    comment  = *WSP "#" *any                ; a whole-line comment
    section  = "[" type [ SP name ] "]"     ; [server] [domains] [aliases] [schedule]
                                            ; [mailbox NAME] [link NAME] [account NAME]
    entry    = key *WSP "=" *WSP value      ; value may be empty
    word     = value                        ; a bare line, only in [domains]

A ``#`` preceded by whitespace starts a trailing comment, so a value cannot contain
" #"; a ``#`` glued to other text is part of the value.

Outside comments a line may hold no control character (TAB aside) and no space other
than SP and TAB: ``str.strip`` removes form feeds, vertical tabs, U+0085, no-break
spaces and the like, so a name ending in one would read back as another name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from nosend_store._config_model import ConfigError


@dataclass(frozen=True, slots=True)
class _Line:
    """One physical line, kept whole so that edits can write it back unchanged."""

    number: int
    raw: str
    kind: Literal["blank", "comment", "section", "entry", "word"]
    section_type: str = ""
    section_name: str = ""
    key: str = ""
    value: str = ""


_SECTION_RE = re.compile(r"\[\s*([A-Za-z_]+)(?:\s+(\S+))?\s*\]")
_TRAILING_COMMENT_RE = re.compile(r"\s#")
#: Control characters but TAB, and every space and invisible format character but SP:
#: what a line outside its comment may not hold (see the module docstring).
FORBIDDEN_RE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u00a0\u1680\u180e\u2000-\u200f"
    "\u2028-\u202f\u205f-\u2064\u3000\ufeff]"
)


def forbidden_character(text: str) -> str | None:
    """Describe the first character of ``text`` no name or value may hold, or ``None``."""
    m = FORBIDDEN_RE.search(text)
    return None if m is None else f"control or space character U+{ord(m[0]):04X}"


def _strip_comment(text: str) -> str:
    m = _TRAILING_COMMENT_RE.search(text)
    return (text[: m.start()] if m else text).strip()


def _split_lines(text: str) -> list[str]:
    """Lines as editors count them: split at LF only (str.splitlines also splits at
    form feed, U+2028 and others, which would shift every line number after them)."""
    # A byte-order mark, as Windows editors write (the seed system ran on Cygwin), is
    # not part of the first line.
    lines = text.removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _tokenize(text: str, path: str) -> list[_Line]:
    """Split the file into classified lines; only malformed headers are errors here."""
    lines: list[_Line] = []
    for number, raw in enumerate(_split_lines(text), start=1):
        stripped = raw.strip()
        if not stripped:
            lines.append(_Line(number, raw, "blank"))
            continue
        if stripped.startswith("#"):
            lines.append(_Line(number, raw, "comment"))
            continue
        comment = _TRAILING_COMMENT_RE.search(raw)
        bad = forbidden_character(raw[: comment.start()] if comment else raw)
        if bad is not None:
            raise ConfigError(path, number, f"{bad} (only SP and TAB may separate words)")
        content = _strip_comment(stripped)
        if content.startswith("["):
            m = _SECTION_RE.fullmatch(content)
            if m is None:
                raise ConfigError(path, number, f"malformed section header {content!r}")
            lines.append(_Line(number, raw, "section", m[1], m[2] or ""))
        elif "=" in content:
            key, _, value = content.partition("=")
            lines.append(_Line(number, raw, "entry", key=key.strip(), value=value.strip()))
        else:
            lines.append(_Line(number, raw, "word", value=content))
    return lines


@dataclass(slots=True)
class _Section:
    type: str
    name: str
    header: _Line | None
    lines: list[_Line] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.header.number if self.header else 0

    @property
    def title(self) -> str:
        return f"[{self.type} {self.name}]" if self.name else f"[{self.type}]"


_SINGLE_SECTIONS = ("server", "domains", "aliases", "schedule")
_NAMED_SECTIONS = ("mailbox", "link", "account")


def _sections(lines: Iterable[_Line]) -> Iterator[_Section]:
    """Group lines under their headers; lines before the first header come first."""
    current = _Section("", "", None)
    for line in lines:
        if line.kind == "section":
            yield current
            current = _Section(line.section_type, line.section_name, line)
        else:
            current.lines.append(line)
    yield current
