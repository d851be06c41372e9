"""Edits to ``mail.cfg`` that keep every comment, blank line and layout the user wrote.

Owns: :class:`ConfigDocument` (the file as lines, with small edits: domains, mailboxes,
aliases, links, the schedule, single values) and :func:`edit_config` (lock, read, edit,
validate, write atomically). Must not: rewrite lines it was not asked to change, write a file that
:func:`nosend_store.config.parse_config` rejects, or put a secret in an error message.

An edit touches only the lines it adds, changes or removes. A changed value keeps its
trailing comment; a new line goes after the last entry of its section (or after the
comment block under the section header); a removed section takes its header and its
entries with it but leaves comments that introduce the next section.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from nosend_store._config_lexer import (
    _TRAILING_COMMENT_RE,
    _Line,
    _split_lines,
    _tokenize,
    forbidden_character,
)
from nosend_store._config_values import _Bad, _mailbox_name, _name
from nosend_store.config import (
    Config,
    ConfigError,
    parse_config,
    read_config_text,
    write_atomically,
)
from nosend_store.faults import name_path

__all__ = ["ConfigEditError", "ConfigDocument", "edit_config", "SHARED_SECRET_WARNING"]

#: The comment written above every ``shared_secret`` line.
SHARED_SECRET_WARNING = (
    "# WARNING: shared_secret is plaintext-equivalent (for APOP / CRAM-MD5): "
    "anyone who can read this file can log in as this mailbox."
)

T = TypeVar("T")


class ConfigEditError(ValueError):
    """An edit that cannot be made (the message says why, in one line)."""


def _address_key(address: str) -> str:
    local, at, domain = address.rpartition("@")
    return f"{local.lower()}{at}{domain.lower().rstrip('.')}"


class ConfigDocument:
    """The text of a ``mail.cfg`` as lines, with edits that leave other lines alone."""

    def __init__(self, text: str, path: str | os.PathLike[str] = "mail.cfg") -> None:
        self.path = os.fspath(path)
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.bom = "\ufeff" if text.startswith("\ufeff") else ""
        self.lines: list[str] = _split_lines(text)
        self._tokens_cache: list[_Line] | None = None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ConfigDocument:
        """Read the file at ``path`` (``ConfigError`` if missing or not UTF-8)."""
        return cls(read_config_text(path, " (create one with `nosend init`)"), path)

    def text(self) -> str:
        """The whole file, ending with a newline."""
        return self.bom + "".join(line + self.newline for line in self.lines)

    def config(self) -> Config:
        """Parse and validate the current text (``ConfigError`` if invalid)."""
        return parse_config(self.text(), self.path)

    # -- finding things ----------------------------------------------------------------

    def _tokens(self) -> list[_Line]:
        if self._tokens_cache is None:
            self._tokens_cache = _tokenize(self.text(), self.path)
        return self._tokens_cache

    def _changed(self) -> None:
        self._tokens_cache = None

    def _section(self, kind: str, name: str = "") -> tuple[int, int] | None:
        """(header index, end index) of the first matching section, or None."""
        tokens = self._tokens()
        for i, t in enumerate(tokens):
            if t.kind == "section" and t.section_type == kind and t.section_name == name:
                end = next(
                    (j for j in range(i + 1, len(tokens)) if tokens[j].kind == "section"),
                    len(tokens),
                )
                return i, end
        return None

    def _last_section_of(self, kind: str) -> tuple[int, int] | None:
        """(header index, end index) of the last ``[kind ...]`` section, or None."""
        tokens = self._tokens()
        headers = [i for i, t in enumerate(tokens) if t.kind == "section"]
        for n in range(len(headers) - 1, -1, -1):
            if tokens[headers[n]].section_type == kind:
                end = headers[n + 1] if n + 1 < len(headers) else len(tokens)
                return headers[n], end
        return None

    def _last_content(self, start: int, end: int) -> int:
        """Index after which a new line of section [start, end) goes."""
        tokens = self._tokens()
        last = None
        for j in range(start + 1, end):
            if tokens[j].kind in ("entry", "word"):
                last = j
        if last is not None:
            return last
        j = start
        while j + 1 < end and tokens[j + 1].kind == "comment":
            j += 1
        return j

    def _insert(self, index: int, new_lines: list[str]) -> None:
        for value in new_lines:
            if "\n" in value or "\r" in value:
                raise ConfigEditError("a value cannot contain a line break")
        self.lines[index:index] = new_lines
        self._changed()

    def _delete(self, start: int, end: int) -> None:
        del self.lines[start:end]
        self._changed()

    def _delete_section(self, start: int, end: int) -> None:
        """Delete a section's lines and the blank line that separated it from the one
        above (the inverse of how sections are added)."""
        if start > 0 and not self.lines[start - 1].strip():
            start -= 1
        self._delete(start, end)

    def _entry_index(self, span: tuple[int, int], key: str) -> int | None:
        tokens = self._tokens()
        for j in range(span[0] + 1, span[1]):
            if tokens[j].kind == "entry" and tokens[j].key == key:
                return j
        return None

    @staticmethod
    def _check_value(value: str) -> None:
        if "\n" in value or "\r" in value:
            raise ConfigEditError("a value cannot contain a line break")
        bad = forbidden_character(value)
        if bad is not None:
            # The file would read it back as another value (mail.cfg's lexer).
            raise ConfigEditError(f"bad value {value!r}: {bad}")
        if _TRAILING_COMMENT_RE.search(value) or value.startswith("#"):
            raise ConfigEditError("a value cannot contain ' #' (it would start a comment)")

    def _replace_value(self, index: int, value: str) -> None:
        """Change the value on line ``index``, keeping the key's spacing and any comment."""
        self._check_value(value)
        head, eq, rest = self.lines[index].partition("=")
        m = _TRAILING_COMMENT_RE.search(rest)
        value_part, comment = (rest[: m.end() - 1], rest[m.end() - 1 :]) if m else (rest, "")
        if value_part.strip():
            spacing = value_part[: len(value_part) - len(value_part.lstrip())]
            # Keep the comment's distance from the value: an edit and its reverse then
            # give back the original line.
            gap = value_part[len(value_part.rstrip()) :]
        else:
            # "key =        # comment": keep the comment in its column if the value fits.
            spacing = " "
            gap = " " * max(1, len(value_part) - 1 - len(value))
        body = f"{spacing}{value}" if value else ""
        self.lines[index] = f"{head}{eq}{body}{gap}{comment}" if comment else f"{head}{eq}{body}"
        self._changed()

    # -- values ------------------------------------------------------------------------

    def set_value(self, kind: str, name: str, key: str, value: str) -> None:
        """Set ``key = value`` in section ``[kind name]`` (added if the key is absent)."""
        self._check_value(value)
        span = self._section(kind, name)
        if span is None:
            raise ConfigEditError(f"no [{kind}{' ' + name if name else ''}] section")
        index = self._entry_index(span, key)
        if index is None:
            self._insert(self._last_content(*span) + 1, [f"{key} = {value}"])
        else:
            self._replace_value(index, value)

    def remove_value(self, kind: str, name: str, key: str) -> bool:
        """Remove ``key`` from ``[kind name]``; return whether it was there."""
        span = self._section(kind, name)
        index = self._entry_index(span, key) if span else None
        if index is None:
            return False
        start = index
        if (
            key == "shared_secret"
            and index > 0
            and self.lines[index - 1].startswith(SHARED_SECRET_WARNING[:30])
        ):
            start = index - 1
        del self.lines[start : index + 1]
        self._changed()
        return True

    # -- domains -----------------------------------------------------------------------

    def domains(self) -> list[str]:
        """Domains listed in [domains], in file order."""
        span = self._section("domains")
        if span is None:
            return []
        tokens = self._tokens()
        return [t.value for t in tokens[span[0] + 1 : span[1]] if t.kind == "word"]

    def add_domain(self, domain: str) -> None:
        """Add a local domain (``ConfigEditError`` if already listed)."""
        self._check_value(domain)
        if domain.lower().rstrip(".") in (d.lower().rstrip(".") for d in self.domains()):
            raise ConfigEditError(f"domain {domain!r} is already listed")
        span = self._section("domains")
        if span is None:
            self._append_section(["[domains]", domain], before="mailbox")
        else:
            self._insert(self._last_content(*span) + 1, [domain])

    def remove_domain(self, domain: str) -> None:
        """Remove a local domain (``ConfigEditError`` if absent or still used by aliases)."""
        span = self._section("domains")
        wanted = domain.lower().rstrip(".")
        tokens = self._tokens()
        if span is not None:
            for j in range(span[0] + 1, span[1]):
                t = tokens[j]
                if t.kind == "word" and t.value.lower().rstrip(".") == wanted:
                    used = [
                        a for a in self.aliases() if _address_key(a[0]).rpartition("@")[2] == wanted
                    ]
                    if used:
                        raise ConfigEditError(
                            f"domain {domain!r} still has aliases "
                            f"({', '.join(a for a, _ in used)}); remove them first"
                        )
                    self._delete(j, j + 1)
                    return
        raise ConfigEditError(f"no domain {domain!r} in [domains]")

    # -- mailboxes ---------------------------------------------------------------------

    def mailboxes(self) -> list[str]:
        """Mailbox names, in file order."""
        return [
            t.section_name
            for t in self._tokens()
            if t.kind == "section" and t.section_type == "mailbox"
        ]

    def add_mailbox(self, name: str, password_hash: str, shared_secret: str | None = None) -> None:
        """Add ``[mailbox name]`` after the last mailbox (``ConfigEditError`` if it exists
        or ``name`` is no valid mailbox name)."""
        try:
            _mailbox_name(name)  # the rule the file's parser applies
        except _Bad as exc:
            raise ConfigEditError(str(exc)) from None
        self._check_value(password_hash)
        if name in self.mailboxes():
            raise ConfigEditError(f"mailbox {name!r} already exists")
        body = [f"[mailbox {name}]", f"password = {password_hash}"]
        if shared_secret is not None:
            self._check_value(shared_secret)
            body += [SHARED_SECRET_WARNING, f"shared_secret = {shared_secret}"]
        last = self._last_section_of("mailbox")
        if last is not None:
            self._insert(self._last_content(*last) + 1, ["", *body])
        else:
            self._append_section(body, before="aliases")

    def set_mailbox_password(
        self, name: str, password_hash: str, shared_secret: str | None, keep_secret: bool
    ) -> None:
        """Replace a mailbox's hash; set, keep (``keep_secret``) or drop its shared secret."""
        if name not in self.mailboxes():
            raise ConfigEditError(f"no mailbox {name!r}")
        self.set_value("mailbox", name, "password", password_hash)
        if shared_secret is not None:
            span = self._section("mailbox", name)
            assert span is not None
            index = self._entry_index(span, "shared_secret")
            if index is None:
                self._insert(
                    self._last_content(*span) + 1,
                    [SHARED_SECRET_WARNING, f"shared_secret = {shared_secret}"],
                )
            else:
                self._replace_value(index, shared_secret)
        elif not keep_secret:
            self.remove_value("mailbox", name, "shared_secret")

    def has_shared_secret(self, name: str) -> bool:
        """Whether ``[mailbox name]`` has a ``shared_secret`` line."""
        span = self._section("mailbox", name)
        return span is not None and self._entry_index(span, "shared_secret") is not None

    def remove_mailbox(self, name: str) -> None:
        """Remove ``[mailbox name]`` (``ConfigEditError`` if absent or still referenced)."""
        span = self._section("mailbox", name)
        if span is None:
            raise ConfigEditError(f"no mailbox {name!r}")
        users = [a for a, targets in self.aliases() if name in targets]
        if users:
            raise ConfigEditError(
                f"mailbox {name!r} is a target of alias {', '.join(users)}; change the alias first"
            )
        self._delete_named_section(span)

    # -- aliases -----------------------------------------------------------------------

    def aliases(self) -> list[tuple[str, list[str]]]:
        """(address, targets) for each alias line, in file order, as written."""
        span = self._section("aliases")
        if span is None:
            return []
        return [
            (t.key, [x.strip() for x in t.value.split(",") if x.strip()])
            for t in self._tokens()[span[0] + 1 : span[1]]
            if t.kind == "entry"
        ]

    def _alias_index(self, address: str) -> int | None:
        span = self._section("aliases")
        if span is None:
            return None
        wanted = _address_key(address)
        tokens = self._tokens()
        for j in range(span[0] + 1, span[1]):
            if tokens[j].kind == "entry" and _address_key(tokens[j].key) == wanted:
                return j
        return None

    def add_alias(self, address: str, targets: list[str]) -> None:
        """Add an alias, or add targets to an existing one."""
        if not targets:
            raise ConfigEditError("an alias needs at least one target")
        for item in (address, *targets):
            self._check_value(item)
            if "," in item or "=" in item.partition("@")[2] or not item:
                raise ConfigEditError(f"bad alias part {item!r}")
        index = self._alias_index(address)
        if index is None:
            line = f"{address} = {', '.join(targets)}"
            span = self._section("aliases")
            if span is None:
                self._append_section(["[aliases]", line], before="link")
            else:
                self._insert(self._last_content(*span) + 1, [line])
            return
        current = [x.strip() for x in self._tokens()[index].value.split(",") if x.strip()]
        added = [t for t in targets if t.lower() not in {c.lower() for c in current}]
        if not added:
            raise ConfigEditError(f"alias {address!r} already has those targets")
        self._replace_value(index, ", ".join(current + added))

    def remove_alias(self, address: str, targets: list[str] | None = None) -> None:
        """Remove an alias, or only some of its targets (the alias goes when none remain)."""
        index = self._alias_index(address)
        if index is None:
            raise ConfigEditError(f"no alias {address!r}")
        if targets:
            current = [x.strip() for x in self._tokens()[index].value.split(",") if x.strip()]
            drop = {t.lower() for t in targets}
            missing = [t for t in targets if t.lower() not in {c.lower() for c in current}]
            if missing:
                raise ConfigEditError(f"alias {address!r} has no target {missing[0]!r}")
            remaining = [c for c in current if c.lower() not in drop]
            if remaining:
                self._replace_value(index, ", ".join(remaining))
                return
        del self.lines[index]
        self._changed()

    # -- links and the schedule ----------------------------------------------------------

    def links(self) -> list[str]:
        """Link names, in file order."""
        return self._names_of("link")

    def add_link(self, name: str, entries: list[tuple[str, str]]) -> None:
        """Add ``[link name]`` with ``key = value`` entries after the last link (else
        before the first account, else at the end); ``ConfigEditError`` if it exists."""
        self._add_named_section("link", name, entries, before="account")

    def remove_link(self, name: str) -> bool:
        """Remove ``[link name]``; if ``[schedule] link`` named it, set it to ``auto`` and
        return True. ``ConfigEditError`` if absent or an account is tied to it."""
        span = self._section("link", name)
        if span is None:
            raise ConfigEditError(f"no link {name!r}")
        tied = [
            (t.section_name, v)
            for t, v in self._entries_of("account", "links")
            if name in (x.strip() for x in v.split(","))
        ]
        if tied:
            raise ConfigEditError(
                f"link {name!r} is in the links of account {', '.join(a for a, _ in tied)}; "
                "change the account first"
            )
        self._delete_named_section(span)
        schedule = self._section("schedule")
        if schedule is not None:
            index = self._entry_index(schedule, "link")
            if index is not None and self._tokens()[index].value == name:
                self._replace_value(index, "auto")
                return True
        return False

    def _entries_of(self, kind: str, key: str) -> list[tuple[_Line, str]]:
        """(section header, value) of ``key`` in every ``[kind ...]`` section."""
        out = []
        header: _Line | None = None
        for t in self._tokens():
            if t.kind == "section":
                header = t if t.section_type == kind else None
            elif header is not None and t.kind == "entry" and t.key == key:
                out.append((header, t.value))
        return out

    def set_schedule(self, key: str, value: str) -> None:
        """Set ``key = value`` in ``[schedule]``, adding the section (before the first
        link, else at the end) when the file has none."""
        if self._section("schedule") is None:
            self._check_value(value)
            self._append_section(["[schedule]", f"{key} = {value}"], before="link")
            return
        self.set_value("schedule", "", key, value)

    # -- accounts ----------------------------------------------------------------------

    def accounts(self) -> list[str]:
        """Transport account names (``[account NAME]``), in file order."""
        return self._names_of("account")

    def add_account(self, name: str, entries: list[tuple[str, str]]) -> None:
        """Add ``[account name]`` with ``key = value`` lines, after the last account
        (else at the end); ``ConfigEditError`` if it exists."""
        self._add_named_section("account", name, entries, before="")

    def remove_account(self, name: str) -> None:
        """Remove ``[account name]`` (``ConfigEditError`` if absent)."""
        span = self._section("account", name)
        if span is None:
            raise ConfigEditError(f"no account {name!r}")
        self._delete_named_section(span)

    # -- sections ----------------------------------------------------------------------

    def _names_of(self, kind: str) -> list[str]:
        """The names of the ``[kind NAME]`` sections, in file order."""
        return [
            t.section_name
            for t in self._tokens()
            if t.kind == "section" and t.section_type == kind
        ]

    def _add_named_section(
        self, kind: str, name: str, entries: list[tuple[str, str]], before: str
    ) -> None:
        """Add ``[kind name]`` with ``key = value`` entries after the last ``[kind]``
        section (else before the first ``[before]`` one, else at the end);
        ``ConfigEditError`` if the name is bad or taken."""
        try:
            _name(name)
        except _Bad as e:
            raise ConfigEditError(f"{kind}: {e}") from None
        if name in self._names_of(kind):
            raise ConfigEditError(f"{kind} {name!r} already exists")
        for key, value in entries:
            self._check_value(key)
            self._check_value(value)
        body = [f"[{kind} {name}]", *(f"{k} = {v}" if v else f"{k} =" for k, v in entries)]
        last = self._last_section_of(kind)
        if last is not None:
            self._insert(self._last_content(*last) + 1, ["", *body])
        else:
            self._append_section(body, before=before)

    def _delete_named_section(self, span: tuple[int, int]) -> None:
        """Delete the section at ``span`` through its last entry (comments after it stay:
        they usually introduce the next section)."""
        start, end = span
        tokens = self._tokens()
        last = start
        for j in range(start + 1, end):
            if tokens[j].kind in ("entry", "word"):
                last = j
        self._delete_section(start, last + 1)

    def _append_section(self, body: list[str], before: str) -> None:
        """Put a new section before the first ``[before ...]`` section, else at the end."""
        tokens = self._tokens()
        for i, t in enumerate(tokens):
            if t.kind == "section" and t.section_type == before:
                # Stay above the comment block that introduces that section.
                while i > 0 and tokens[i - 1].kind == "comment":
                    i -= 1
                self._insert(i, [*body, ""])
                return
        prefix = [""] if self.lines and self.lines[-1].strip() else []
        self._insert(len(self.lines), [*prefix, *body])


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two `nosend` commands editing at once must not lose one edit: lock the directory
    # (the file itself is replaced by rename, so a lock on it would not hold).
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def edit_config(
    path: str | os.PathLike[str], edit: Callable[[ConfigDocument], T]
) -> tuple[T, Config]:
    """Lock, read, apply ``edit``, validate and atomically write ``mail.cfg``.

    Returns what ``edit`` returned and the new :class:`Config`. Raises
    :class:`ConfigError` if the file is invalid before the edit, and
    :class:`ConfigEditError` if the edit cannot be made or would make it invalid;
    in both cases the file is left untouched.
    """
    target = Path(path)
    with _locked(target):
        doc = ConfigDocument.read(target)
        doc.config()  # refuse to edit a broken file: the user must see and fix it first
        result = edit(doc)
        try:
            config = doc.config()
        except ConfigError as e:
            raise ConfigEditError(f"refused, the file would become invalid: {e.message}") from None
        try:
            write_atomically(target, doc.text())
        except OSError as exc:
            # A full disk fails in write() or fsync(), which name no file: name mail.cfg,
            # so the command line says which file could not be written.
            raise name_path(exc, target) from None
    return result, config
