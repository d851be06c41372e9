"""Section parsing and validation of ``mail.cfg``: text in, a valid :class:`Config` out.

Owns: :func:`parse_config`, the keys each section takes and their parsers, required keys
and keys that exclude each other, and the cross-checks between sections (alias targets
and loops, postmaster, links and accounts). Every problem is collected, so that
``nosend config check`` can list them all at once in file order; the first is raised.
What is allowed but unwise (``tls = none`` with a login) is collected as a warning and
carried by the :class:`Config` (``Config.warnings``), never raised.
Must not: read or write files (:mod:`nosend_store._config_files`), or put a password or
secret into an error message.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nosend_store._config_lexer import (
    _NAMED_SECTIONS,
    _SINGLE_SECTIONS,
    _Section,
    _sections,
    _split_lines,
    _tokenize,
)
from nosend_store._config_model import (
    URGENT_ANYONE,
    Account,
    Alias,
    Config,
    ConfigError,
    Link,
    ListenAddress,
    Mailbox,
    RunAs,
    Schedule,
    ServerOptions,
)
from nosend_store._config_values import (
    _address,
    _Bad,
    _bool,
    _budget,
    _choice,
    _command,
    _decimal,
    _domain,
    _duration,
    _duration_or_off,
    _duration_or_zero,
    _fingerprint,
    _hostname,
    _hours,
    _int_in,
    _link_mode,
    _list,
    _listen,
    _mailbox_name,
    _mailbox_or_address,
    _name,
    _networks,
    _password_hash,
    _path_in,
    _plus_separator,
    _probe,
    _rate,
    _secret_command,
    _shared_secret,
    _size,
    _text,
    _times,
    _urgent,
)


class _Collector:
    """Collects every problem so ``nosend config check`` can show them all at once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[ConfigError] = []
        #: ``(line, message)``: allowed but probably unwise. Added while the sections are
        #: built, before the :class:`Config` that carries them exists.
        self.warnings: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        self.errors.append(ConfigError(self.path, line, message))

    def warn(self, line: int, message: str) -> None:
        self.warnings.append((line, message))

    def raise_if_any(self) -> None:
        if self.errors:
            errors = sorted(self.errors, key=lambda e: e.line)
            first = errors[0]
            first.all_errors = tuple(errors)
            raise first


_Parser = Callable[[str], Any]
_ALLOW_EMPTY = frozenset(
    {"smtp_listen", "submission_listen", "smtps_listen", "pop3_listen", "pop3s_listen"}
    | {"trusted_networks", "plus_separator", "up", "down", "accounts", "links"}
    | {"tls_cert", "tls_key", "urgent", "times"}
)


def _entries(
    section: _Section, spec: Mapping[str, _Parser], errors: _Collector
) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse ``key = value`` lines against ``spec``; return values and their line numbers."""
    values: dict[str, Any] = {}
    where: dict[str, int] = {}
    for line in section.lines:
        if line.kind in ("blank", "comment"):
            continue
        if line.kind == "word":
            errors.add(line.number, f"expected 'key = value' in {section.title}")
            continue
        if line.key not in spec:
            errors.add(line.number, f"unknown key {line.key!r} in {section.title}")
            continue
        if line.key in where:
            errors.add(
                line.number,
                f"duplicate key {line.key!r} in {section.title} (first at line {where[line.key]})",
            )
            continue
        where[line.key] = line.number
        if not line.value and line.key not in _ALLOW_EMPTY:
            errors.add(line.number, f"empty value for {line.key!r}")
            continue
        try:
            values[line.key] = spec[line.key](line.value)
        except _Bad as e:
            errors.add(line.number, f"{line.key}: {e}")
    return values, where


def _server_spec(base: Path) -> dict[str, _Parser]:
    return {
        "hostname": _hostname,
        "data_dir": _path_in(base),
        "smtp_listen": _listen,
        "submission_listen": _listen,
        "smtps_listen": _listen,
        "pop3_listen": _listen,
        "pop3s_listen": _listen,
        "tls_cert": _path_in(base),
        "tls_key": _path_in(base),
        "trusted_networks": _networks,
        "max_message_size": _size,
        "max_recipients": _int_in(1, 100_000),
        "max_connections": _int_in(1, 100_000),
        "max_connections_per_ip": _int_in(1, 100_000),
        "smtp_timeout": _duration,
        "pop3_timeout": _duration,
        "auth_requires_tls": _bool,
        "lan_plaintext_auth": _bool,
        "plus_separator": _plus_separator,
        "postmaster": _text,
        "retry_interval": _duration,
        "warn_after": _duration,
        "bounce_after": _duration,
        "log_level": _choice("debug", "info", "warning", "error"),
        "queue_drop_mailbox": _mailbox_name,
        "user": _text,
        "group": _text,
    }


_MAILBOX_SPEC: dict[str, _Parser] = {"password": _password_hash, "shared_secret": _shared_secret}
_LINK_SPEC: dict[str, _Parser] = {
    "up": _command,
    "down": _command,
    "priority": _int_in(0, 1_000_000),
    "cost_per_minute": _decimal,
    "cost_per_megabyte": _decimal,
    "up_timeout": _duration,
    "max_online": _duration,
    "enabled": _bool,
    "accounts": lambda v: tuple(_list(v)),
    "probe": _probe,
    "max_size": _size,
    "hours": _hours,
    "budget": _budget,
    "rate": _rate,
    "setup_seconds": _duration_or_zero,
    "down_timeout": _duration,
    "smarthost": _name,
}
_SCHEDULE_SPEC: dict[str, _Parser] = {
    "link": _link_mode,
    "queue_age": _duration_or_off,
    "urgent": _urgent,
    "times": _times,
    "every": _duration_or_off,
    "min_interval": _duration_or_zero,
    "scheduler": _bool,
    "report": _choice("each", "daily", "no"),
}


def _account_spec(base: Path) -> dict[str, _Parser]:
    return {
        "type": _choice("smtp", "pop3"),
        "host": _hostname,
        "port": _int_in(1, 65535),
        "tls": _choice("starttls", "implicit", "none"),
        "tls_verify": _bool,
        "user": _text,
        "secret": _shared_secret,
        "secret_file": _path_in(base),
        "deliver_to": _mailbox_or_address,
        "keep": _bool,
        "links": lambda v: tuple(_list(v)),
        "secret_command": _secret_command,
        "ca_file": _path_in(base),
        "fingerprint": _fingerprint,
        "auth": _choice("auto", "plain", "login", "cram-md5", "xoauth2", "oauthbearer"),
        "multidrop": _mailbox_or_address,
        "max_size": _size,
    }


_DEFAULT_PORTS = {
    ("smtp", "starttls"): 587,
    ("smtp", "none"): 587,
    ("smtp", "implicit"): 465,
    ("pop3", "starttls"): 110,
    ("pop3", "none"): 110,
    ("pop3", "implicit"): 995,
}


def parse_config(text: str, path: str | os.PathLike[str] = "mail.cfg") -> Config:
    """Parse and validate the text of a ``mail.cfg``; raise :class:`ConfigError`.

    ``path`` names the file in messages; relative paths in the file are taken
    relative to its directory.
    """
    shown = os.fspath(path)
    base = Path(shown).parent
    if not base.is_absolute():
        base = Path.cwd() / base
    errors = _Collector(shown)
    sections = list(_sections(_tokenize(text, shown)))

    seen_single: dict[str, int] = {}
    named: dict[tuple[str, str], int] = {}
    server_section: _Section | None = None
    domain_section: _Section | None = None
    alias_section: _Section | None = None
    schedule_section: _Section | None = None
    mailbox_sections: list[_Section] = []
    link_sections: list[_Section] = []
    account_sections: list[_Section] = []
    for section in sections:
        if section.header is None:
            for line in section.lines:
                if line.kind not in ("blank", "comment"):
                    errors.add(line.number, "text before the first [section]")
            continue
        kind = section.type
        if kind in _SINGLE_SECTIONS:
            if section.name:
                errors.add(section.number, f"[{kind}] takes no name")
            if kind in seen_single:
                errors.add(
                    section.number,
                    f"duplicate section [{kind}] (first at line {seen_single[kind]})",
                )
                continue
            seen_single[kind] = section.number
            if kind == "server":
                server_section = section
            elif kind == "domains":
                domain_section = section
            elif kind == "schedule":
                schedule_section = section
            else:
                alias_section = section
        elif kind in _NAMED_SECTIONS:
            if not section.name:
                errors.add(section.number, f"[{kind}] needs a name, e.g. [{kind} NAME]")
                continue
            if (kind, section.name) in named:
                errors.add(
                    section.number,
                    f"duplicate {kind} {section.name!r} "
                    f"(first at line {named[(kind, section.name)]})",
                )
                continue
            try:
                _mailbox_name(section.name) if kind == "mailbox" else _name(section.name)
            except _Bad as e:
                errors.add(section.number, str(e))
                continue
            named[(kind, section.name)] = section.number
            {"mailbox": mailbox_sections, "link": link_sections, "account": account_sections}[
                kind
            ].append(section)
        else:
            errors.add(
                section.number,
                f"unknown section [{kind}] (expected one of "
                + ", ".join(f"[{s}]" for s in (*_SINGLE_SECTIONS, *_NAMED_SECTIONS))
                + ")",
            )

    server = _build_server(server_section, base, errors, len(_split_lines(text)))
    domains = _build_domains(domain_section, errors)
    mailboxes = _build_mailboxes(mailbox_sections, errors)
    aliases = _build_aliases(alias_section, domains, errors)
    links = {s.name: _build_link(s, errors) for s in link_sections}
    accounts = {s.name: _build_account(s, base, errors) for s in account_sections}
    schedule = _build_schedule(schedule_section, errors)
    if server is None:
        errors.raise_if_any()  # _build_server has said why
        raise AssertionError("no [server] and no error")
    # Cross-checks run even after other errors so that `nosend config check` lists
    # everything at once; entries that failed to parse are simply absent here.

    postmaster = server.postmaster
    if postmaster is None and mailboxes:
        postmaster = "postmaster" if "postmaster" in mailboxes else next(iter(mailboxes))
    config = Config(
        path=Path(shown),
        server=server,
        domains=frozenset(domains),
        mailboxes=MappingProxyType(mailboxes),
        aliases=MappingProxyType(aliases),
        links=MappingProxyType({k: v for k, v in links.items() if v is not None}),
        accounts=MappingProxyType({k: v for k, v in accounts.items() if v is not None}),
        postmaster=postmaster,
        warnings=tuple(sorted(errors.warnings, key=lambda w: w[0])),
        schedule=schedule,
    )
    # A mailbox whose section failed to parse is absent from ``config``; what refers to it
    # is then reported as a consequence, after (and beside) its root cause. Leave those
    # out: the root cause is the error to fix, and the next check shows anything left.
    broken = frozenset(s.name for s in mailbox_sections) - frozenset(mailboxes)
    _cross_check(config, server_section, domain_section, errors, broken)
    _cross_check_links(config, link_sections, schedule_section, errors)
    errors.raise_if_any()
    # The cross-checks may have added warnings too.
    return replace(config, warnings=tuple(sorted(errors.warnings, key=lambda w: w[0])))


def _build_server(
    section: _Section | None, base: Path, errors: _Collector, last_line: int
) -> ServerOptions | None:
    if section is None:
        errors.add(max(last_line, 1), "missing [server] section (hostname and data_dir)")
        return None
    values, where = _entries(section, _server_spec(base), errors)
    ok = True
    for required in ("hostname", "data_dir"):
        if required not in where:
            errors.add(section.number, f"missing required key {required!r} in [server]")
            ok = False
    if "postmaster" in values:
        target = values["postmaster"]
        try:
            values["postmaster"] = _address(target) if "@" in target else _mailbox_name(target)
        except _Bad as e:
            errors.add(where["postmaster"], f"postmaster: {e}")
            del values["postmaster"]  # reported once, not again as unresolvable
    if bool(values.get("tls_cert")) != bool(values.get("tls_key")):
        line = where.get("tls_cert", where.get("tls_key", section.number))
        errors.add(line, "tls_cert and tls_key must be set together")
    for key in ("tls_cert", "tls_key"):
        p = values.get(key)
        if p is not None and _missing_file(p):
            errors.add(where[key], f"{key}: no such file {os.fspath(p)!r}")
    for key in ("smtps_listen", "pop3s_listen"):
        if values.get(key) and not values.get("tls_cert"):
            errors.add(where[key], f"{key} needs tls_cert and tls_key")
    run_as = _run_as(values.pop("user", None), values.pop("group", None), where, errors)
    if run_as is not None:
        values["run_as"] = run_as
    # Two listeners on one address cannot both bind; defaults count too.
    seen: dict[ListenAddress, str] = {}
    for f in fields(ServerOptions):
        if not f.name.endswith("_listen"):
            continue
        for addr in values.get(f.name, f.default):
            if addr in seen:
                other = seen[addr]
                line = where.get(f.name) or where.get(other) or section.number
                errors.add(line, f"{f.name}: {addr} is already used by {other}")
            seen[addr] = f.name
    return _server_or_none(values) if ok else None


def _missing_file(path: Path) -> bool:
    """Whether ``path`` is surely not a file; False when we may not look.

    A server that dropped root re-reads mail.cfg at reload and may not be allowed to
    look into the folder of its key (``/etc/ssl/private``): that is no error in the
    file, and the server keeps the key it read at start.
    """
    try:
        return not path.is_file()
    except PermissionError:
        return False


def _run_as(
    user: str | None, group: str | None, where: dict[str, int], errors: _Collector
) -> RunAs | None:
    """Resolve the ``user`` and ``group`` keys on this system (see :class:`RunAs`).

    Looked up when the file is loaded, not when the server starts: ``nosend config
    check`` then reports an unknown name with its line, and every command agrees on it.
    """
    if user is None:
        if group is not None:
            errors.add(where["group"], "group needs user (the account the server runs as)")
        return None
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        errors.add(where["user"], f"user: no such user {user!r} on this system")
        return None
    gid = account.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            errors.add(where["group"], f"group: no such group {group!r} on this system")
            return None
    else:
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:  # a primary group with no name: unusual but valid
            group = str(gid)
    return RunAs(user, account.pw_uid, group, gid, where["user"])


def _server_or_none(values: dict[str, Any]) -> ServerOptions | None:
    if "hostname" not in values or "data_dir" not in values or values["data_dir"] is None:
        return None
    return ServerOptions(**values)


def _build_domains(section: _Section | None, errors: _Collector) -> dict[str, int]:
    domains: dict[str, int] = {}
    if section is None:
        return domains
    for line in section.lines:
        if line.kind in ("blank", "comment"):
            continue
        if line.kind == "entry":
            errors.add(line.number, "expected one domain name per line in [domains]")
            continue
        try:
            domain = _domain(line.value)
        except _Bad as e:
            errors.add(line.number, str(e))
            continue
        if domain in domains:
            errors.add(
                line.number, f"duplicate domain {domain!r} (first at line {domains[domain]})"
            )
            continue
        domains[domain] = line.number
    return domains


def _build_mailboxes(sections: list[_Section], errors: _Collector) -> dict[str, Mailbox]:
    mailboxes: dict[str, Mailbox] = {}
    for section in sections:
        values, where = _entries(section, _MAILBOX_SPEC, errors)
        if "password" not in where:
            errors.add(section.number, f"missing required key 'password' in {section.title}")
            continue
        if "password" in values:
            mailboxes[section.name] = Mailbox(
                section.name, values["password"], values.get("shared_secret"), section.number
            )
    return mailboxes


def _build_aliases(
    section: _Section | None, domains: Mapping[str, int], errors: _Collector
) -> dict[str, Alias]:
    aliases: dict[str, Alias] = {}
    if section is None:
        return aliases
    for line in section.lines:
        if line.kind in ("blank", "comment"):
            continue
        if line.kind == "word":
            errors.add(line.number, "expected 'address = target, ...' in [aliases]")
            continue
        key = line.key
        try:
            if key.startswith("@"):
                address = "@" + _domain(key[1:])
            else:
                address = _address(key)
                local, _, dom = address.rpartition("@")
                address = f"{local.lower()}@{dom}"
        except _Bad as e:
            errors.add(line.number, f"alias {e}")
            continue
        domain = address.rpartition("@")[2]
        if domain not in domains:
            errors.add(line.number, f"alias {key!r}: domain {domain!r} is not in [domains]")
            continue
        if address in aliases:
            errors.add(
                line.number, f"duplicate alias {key!r} (first at line {aliases[address].line})"
            )
            continue
        try:
            items = _list(line.value)
            if not items:
                raise _Bad("no targets")
            targets = tuple(_address(t) if "@" in t else _mailbox_name(t) for t in items)
        except _Bad as e:
            errors.add(line.number, f"alias {key!r}: {e}")
            continue
        aliases[address] = Alias(address, targets, line.number)
    return aliases


def _build_link(section: _Section, errors: _Collector) -> Link | None:
    values, _ = _entries(section, _LINK_SPEC, errors)
    return Link(section.name, line=section.number, **values)


def _build_schedule(section: _Section | None, errors: _Collector) -> Schedule:
    if section is None:
        return Schedule()
    values, _ = _entries(section, _SCHEDULE_SPEC, errors)
    return Schedule(line=section.number, **values)


def _build_account(section: _Section, base: Path, errors: _Collector) -> Account | None:
    values, where = _entries(section, _account_spec(base), errors)
    title = section.title
    missing = [k for k in ("type", "host") if k not in where]
    for key in missing:
        errors.add(section.number, f"missing required key {key!r} in {title}")
    if missing or "type" not in values or "host" not in values:
        return None
    kind = values["type"]
    if kind == "smtp":
        for key in ("deliver_to", "multidrop", "keep", "max_size"):
            if key in where:
                errors.add(where[key], f"{key!r} is only valid with type = pop3")
    else:
        if "user" not in where:
            errors.add(section.number, f"missing required key 'user' in {title} (type = pop3)")
        drops = sorted(where[k] for k in ("deliver_to", "multidrop") if k in where)
        if not drops:
            errors.add(
                section.number,
                f"missing required key 'deliver_to' or 'multidrop' in {title} (type = pop3)",
            )
        elif len(drops) == 2:
            errors.add(drops[1], "give either deliver_to (single-drop) or multidrop, not both")
    _check_account_login(values, where, errors)
    _check_account_tls(title, values, where, errors)
    values.setdefault("port", _DEFAULT_PORTS[(kind, values.get("tls", "starttls"))])
    return Account(section.name, line=section.number, **values)


def _check_account_login(
    values: Mapping[str, Any], where: Mapping[str, int], errors: _Collector
) -> None:
    """One source of the secret, and a user to go with it."""
    sources = sorted(where[k] for k in ("secret", "secret_file", "secret_command") if k in where)
    for line in sources[1:]:
        errors.add(line, "give only one of secret, secret_file and secret_command")
    if "user" in where and not sources:
        errors.add(where["user"], "user needs a secret, a secret_file or a secret_command")
    if sources and "user" not in where:
        errors.add(sources[0], "a secret needs a user")
    if values.get("auth", "auto") != "auto" and "user" not in where:
        errors.add(where["auth"], f"auth = {values['auth']} needs a user")


def _check_account_tls(
    title: str, values: Mapping[str, Any], where: Mapping[str, int], errors: _Collector
) -> None:
    """What TLS settings go together; ``tls = none`` with a login is only a warning."""
    if values.get("tls") == "none":
        for key in ("ca_file", "fingerprint"):
            if key in where:
                errors.add(where[key], f"{key} needs TLS (this account has tls = none)")
        if "user" in where:
            errors.warn(
                where["tls"],
                f"{title} has tls = none: its login (AUTH or USER/PASS) and the secret "
                "cross the link in clear",
            )
    ca_file = values.get("ca_file")
    if ca_file is not None and not ca_file.is_file():
        errors.add(where["ca_file"], f"ca_file: no such file {os.fspath(ca_file)!r}")
    if "ca_file" in where and "fingerprint" in where:
        errors.warn(where["ca_file"], f"{title}: ca_file is not used when fingerprint is set")
    elif "ca_file" in where and values.get("tls_verify") is False:
        errors.warn(where["ca_file"], f"{title}: ca_file is not used with tls_verify = no")


def _key_line(section: _Section | None, key: str) -> int:
    """The line of ``key`` in ``section`` (else the section header; 0 with no section)."""
    if section is None:
        return 0
    for line in section.lines:
        if line.kind == "entry" and line.key == key:
            return line.number
    return section.number


def _can_receive(config: Config, target: str) -> bool:
    """Whether ``target`` (a mailbox name or an address) names somewhere mail can go."""
    if "@" not in target:
        return target in config.mailboxes
    return config.resolve(target) is not None


def _cross_check(
    config: Config,
    server_section: _Section | None,
    domain_section: _Section | None,
    errors: _Collector,
    broken: frozenset[str] = frozenset(),
) -> None:
    """References between sections: alias targets, loops, postmaster, links, accounts.

    ``broken`` names mailboxes whose sections had errors: references to them are not
    reported again."""
    for alias in config.aliases.values():
        for target in alias.targets:
            if "@" not in target and target not in config.mailboxes:
                if target not in broken:
                    errors.add(alias.line,
                               f"alias {alias.address!r}: no mailbox named {target!r}")
                break
        else:
            result = config._expand_alias(alias, [], [], ())
            if isinstance(result, tuple):
                errors.add(alias.line, "alias loop: " + " -> ".join(result))
            elif result is False and not broken:
                errors.add(
                    alias.line,
                    f"alias {alias.address!r}: a target is an unknown local address",
                )
    pm = config.server.postmaster
    pm_line = _key_line(server_section, "postmaster")
    drop = config.server.queue_drop_mailbox
    if drop is not None and drop not in config.mailboxes and drop not in broken:
        errors.add(
            _key_line(server_section, "queue_drop_mailbox"),
            f"queue_drop_mailbox: no mailbox named {drop!r}",
        )
    if pm is not None and config.resolve("postmaster") is None and pm not in broken:
        errors.add(pm_line, f"postmaster: {pm!r} is not a mailbox or a resolvable address")
    if config.domains and config.postmaster is None and not broken:
        errors.add(
            domain_section.number if domain_section else pm_line,
            "no mailbox can receive postmaster mail (RFC 5321 section 4.5.1): "
            "add a [mailbox] or set postmaster in [server]",
        )
    for link in config.links.values():
        for name in link.accounts:
            if name not in config.accounts:
                errors.add(link.line, f"[link {link.name}]: no [account {name}]")
    for account in config.accounts.values():
        for name in account.links:
            if name not in config.links:
                errors.add(account.line, f"[account {account.name}]: no [link {name}]")
        for key, drop_to in (("deliver_to", account.deliver_to), ("multidrop", account.multidrop)):
            if drop_to is not None and drop_to not in broken and not _can_receive(
                config, drop_to):
                errors.add(
                    account.line,
                    f"[account {account.name}]: {key} {drop_to!r} "
                    "is not a mailbox or a resolvable address",
                )


def _cross_check_links(
    config: Config,
    link_sections: list[_Section],
    schedule_section: _Section | None,
    errors: _Collector,
) -> None:
    """A link's smarthost is an smtp account; the schedule names links and mailboxes
    that exist."""
    sections = {s.name: s for s in link_sections}
    for link in config.links.values():
        name = link.smarthost
        if name is None:
            continue
        line = _key_line(sections.get(link.name), "smarthost") or link.line
        account = config.accounts.get(name)
        if account is None:
            errors.add(line, f"smarthost: no [account {name}]")
        elif account.type != "smtp":
            errors.add(line, f"smarthost: [account {name}] is not type = smtp")
        elif account.links and link.name not in account.links:
            errors.add(line, f"smarthost: [account {name}] is not used over [link {link.name}] "
                             f"(its links = {', '.join(account.links)})")
    for link in config.links.values():
        if link.up and link.probe is None and not any(
            a.type == "smtp" and (not a.links or link.name in a.links)
            for a in config.accounts.values()
        ):
            errors.warn(link.line, f"[link {link.name}] has no probe and no smtp account to "
                                   "probe: only up's exit status will say whether it is up")
    schedule = config.schedule
    if URGENT_ANYONE in schedule.urgent:
        errors.warn(_key_line(schedule_section, "urgent"),
                    "urgent = all: anyone who can send through this server can start a call "
                    "by marking a message urgent")
    if schedule.link not in ("auto", "cost") and schedule.link not in config.links:
        errors.add(_key_line(schedule_section, "link"),
                   f"link: no [link {schedule.link}] (auto, cost or a link's name)")
    for name in schedule.urgent:
        if name != URGENT_ANYONE and name not in config.mailboxes:
            errors.add(_key_line(schedule_section, "urgent"), f"urgent: no mailbox named {name!r}")
