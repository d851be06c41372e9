"""``nosend account add|remove|list|test``: the upstream smarthost and remote POP3 accounts.

Owns: the argument syntax and output of those commands. ``mail.cfg`` is edited through
:mod:`nosend_store.config_edit` (comments kept, the result validated before it is
written: an invalid account is never saved); the connection test uses the client
engines over :mod:`nosend_runners.client.connection`.

Must not: print, log or put on a command line any secret. ``--password-stdin`` reads it
from standard input and stores it as ``secret = {PLAIN.B64}...`` (plaintext-equivalent:
the command warns that mail.cfg must not be readable by others); ``--secret-file`` and
``--secret-command`` store only where the secret is to be found.

``account test`` connects, starts TLS, logs in and shows what the server offers (for
POP3 also how many messages and bytes wait); it sends nothing and deletes nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nosend.admin import UserError, _config_path, _guarded, _read_password
from nosend_store import passwords
from nosend_store.config import Account, ConfigError, file_mode_warning, load_config
from nosend_store.config_edit import ConfigDocument, ConfigEditError, edit_config

__all__ = ["register"]

_EPILOG = """\
examples:
  printf '%s\\n' "$PW" | nosend account add upstream --type smtp \\
      --host smtp.example.net --user boat@example.net --password-stdin
  nosend account add isp --type pop3 --host pop.example.net --tls implicit \\
      --user boat --secret-command 'pass show isp' --deliver-to captain
  nosend account list
  nosend account test upstream      # connect, TLS, login; sends and deletes nothing
  nosend account remove isp
"""

_STAND_IN_SECRET = passwords.encode_shared_secret("stand-in")


def register(subparsers: Any) -> None:
    """Add ``nosend account`` to the ``nosend`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="mail.cfg to use")
    help_text = "manage transport accounts (the smarthost, remote POP3 mailboxes)"
    group = subparsers.add_parser("account", help=help_text, description=help_text,
                                  epilog=_EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("add", help="add an account", description="Add an [account] to "
                       "mail.cfg; the file is validated before it is written.",
                       parents=[common])
    p.add_argument("name", help="account name")
    p.add_argument("--type", required=True, choices=("smtp", "pop3"))
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, help="default 587/465 (smtp), 110/995 (pop3)")
    p.add_argument("--tls", choices=("starttls", "implicit", "none"),
                   help="starttls (default), implicit (RFC 8314) or none")
    p.add_argument("--user", help="login name")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--password-stdin", action="store_true",
                        help="read the password (or token) from standard input")
    secret.add_argument("--secret-file", metavar="PATH", help="a file holding the secret")
    secret.add_argument("--secret-command", metavar="CMD",
                        help="a command printing the secret (run when needed)")
    pin = p.add_mutually_exclusive_group()
    pin.add_argument("--ca-file", metavar="PATH", help="PEM file of trusted certificates")
    pin.add_argument("--fingerprint", metavar="SHA256",
                     help="pin the server certificate's SHA-256 fingerprint")
    drop = p.add_mutually_exclusive_group()
    drop.add_argument("--deliver-to", metavar="MAILBOX",
                      help="pop3: every fetched message to this mailbox or address")
    drop.add_argument("--multidrop", metavar="FALLBACK",
                      help="pop3: to the envelope's local recipients, else FALLBACK")
    p.add_argument("--keep", action="store_true", help="pop3: leave fetched mail on the server")
    p.add_argument("--max-size", metavar="SIZE",
                   help="pop3: hold larger messages on the server (e.g. 500K)")
    p.set_defaults(handler=_guarded(_add))

    p = sub.add_parser("remove", help="remove an account", parents=[common])
    p.add_argument("name")
    p.set_defaults(handler=_guarded(_remove))

    p = sub.add_parser("list", help="list accounts (secrets are never shown)",
                       parents=[common])
    p.add_argument("name", nargs="?", help="show only this account")
    p.set_defaults(handler=_guarded(_list))

    p = sub.add_parser("test", help="connect, start TLS and log in; send and delete nothing",
                       parents=[common])
    p.add_argument("name")
    p.set_defaults(handler=_guarded(_test))


# -- add / remove ------------------------------------------------------------------------


def _entries(args: argparse.Namespace, secret: str | None) -> list[tuple[str, str]]:
    entries = [("type", args.type), ("host", args.host)]
    if args.port is not None:
        entries.append(("port", str(args.port)))
    if args.tls is not None:
        entries.append(("tls", args.tls))
    if args.user is not None:
        entries.append(("user", args.user))
    if secret is not None:
        entries.append(("secret", secret))
    elif args.secret_file is not None:
        entries.append(("secret_file", args.secret_file))
    elif args.secret_command is not None:
        entries.append(("secret_command", args.secret_command))
    if args.ca_file is not None:
        entries.append(("ca_file", args.ca_file))
    if args.fingerprint is not None:
        entries.append(("fingerprint", args.fingerprint))
    if args.deliver_to is not None:
        entries.append(("deliver_to", args.deliver_to))
    if args.multidrop is not None:
        entries.append(("multidrop", args.multidrop))
    if args.keep:
        entries.append(("keep", "yes"))
    if args.max_size is not None:
        entries.append(("max_size", args.max_size))
    return entries


def _add(args: argparse.Namespace) -> int:
    path = _config_path(args)
    inline = args.password_stdin or (
        args.user is not None and args.secret_file is None and args.secret_command is None)
    # Validate with a stand-in first: a bad option is reported before a password is read.
    doc = ConfigDocument.read(path)
    doc.config()
    doc.add_account(args.name, _entries(args, _STAND_IN_SECRET if inline else None))
    try:
        doc.config()
    except ConfigError as e:
        raise ConfigEditError(f"refused, the file would become invalid: {e.message}") from None
    secret = None
    if inline:
        secret = passwords.encode_shared_secret(_read_password(args, "Password"))
    entries = _entries(args, secret)
    edit_config(path, lambda d: d.add_account(args.name, entries))
    print(f"added account {args.name} ({args.type} {args.host})")
    if secret is not None:
        print(f"warning: {path} now holds the secret of account {args.name!r} "
              "(plaintext-equivalent); it must not be readable by other users",
              file=sys.stderr)
        mode = file_mode_warning(path)
        if mode:
            print(f"warning: {mode}", file=sys.stderr)
    if args.tls == "none" and args.user is not None:
        print(f"warning: account {args.name!r} has tls = none: its login (AUTH or "
              "USER/PASS) and the secret cross the link in clear", file=sys.stderr)
    return 0


def _remove(args: argparse.Namespace) -> int:
    edit_config(_config_path(args), lambda doc: doc.remove_account(args.name))
    print(f"removed account {args.name}")
    return 0


# -- list --------------------------------------------------------------------------------


def _secret_source(account: Account) -> str:
    if account.secret is not None:
        return "secret in mail.cfg"
    if account.secret_file is not None:
        return f"secret_file {account.secret_file}"
    if account.secret_command:
        return f"secret_command {account.secret_command[0]}"
    return "no secret"


def _describe(account: Account) -> str:
    parts = [account.name, account.type, f"{account.host}:{account.port}",
             f"tls={account.tls}"]
    if account.user is not None:
        parts.append(f"user={account.user} ({_secret_source(account)})")
    if account.fingerprint is not None:
        parts.append("fingerprint pinned")
    elif account.ca_file is not None:
        parts.append(f"ca_file={account.ca_file}")
    if not account.tls_verify:
        parts.append("tls_verify=no")
    if account.deliver_to is not None:
        parts.append(f"deliver_to={account.deliver_to}")
    if account.multidrop is not None:
        parts.append(f"multidrop={account.multidrop}")
    if account.keep:
        parts.append("keep")
    if account.max_size is not None:
        parts.append(f"max_size={account.max_size}")
    if account.links:
        parts.append(f"links={','.join(account.links)}")
    return "  ".join(parts)


def _list(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    accounts = list(config.accounts.values())
    if args.name is not None:
        if args.name not in config.accounts:
            raise UserError(f"no account {args.name!r}")
        accounts = [config.accounts[args.name]]
    if not accounts:
        print("no accounts")
        return 0
    for account in accounts:
        print(_describe(account))
    return 0


# -- test --------------------------------------------------------------------------------


def _test(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415 -- only this command needs the runners

    from nosend_link.account_check import check_account  # noqa: PLC0415

    config = load_config(_config_path(args))
    account = config.accounts.get(args.name)
    if account is None:
        raise UserError(f"no account {args.name!r}")
    lines: list[str] = []
    error = anyio.run(check_account, config, account, lines.append)
    for line in lines:
        print(line)
    if error is not None:
        raise UserError(f"account {account.name}: {error}")
    return 0
