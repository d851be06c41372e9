"""``nosend held``: remote messages left on the server for their size.

Owns: ``nosend held list``, ``nosend held fetch ID [--link NAME]`` and
``nosend held delete ID``. A message larger than its account's (or link's) cap is held on
the server and a notice naming its ID is delivered (:mod:`nosend_link.fetch`); these
commands record what the administrator wants done with it, and the next fetch of the
account does it (:mod:`nosend_store.fetch_state`): fetch it whatever its size -- over any
link, or only over the link named -- or delete it on the server unread.

Must not: talk to the remote server (the next exchange does), or print a secret.
Exit status: 0 done, 1 a user error (one line on stderr: unknown ID, a fetch of that
account running, a bad configuration), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nosend_link.notice import held_id
from nosend_store.config import Config, ConfigError, default_config_path, load_config
from nosend_store.fetch_state import FETCH_DIR, FetchRecord, FetchState, FetchStatus
from nosend_store.locks import LockBusy

__all__ = ["register"]

#: How long a request waits for a fetch of the same account to finish.
_LOCK_WAIT = 10.0
_HELD = (FetchStatus.HELD, FetchStatus.FETCH_REQUESTED, FetchStatus.DELETE_REQUESTED)


class _UserError(Exception):
    """Printed as one line; exit status 1."""


def register(subparsers: Any) -> None:
    """Add ``nosend held`` and its actions to the ``nosend`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="mail.cfg to use (default: $NOSEND_CONFIG, else the usual place)")
    parser = subparsers.add_parser(
        "held", help="remote messages held on the server for their size",
        description=__doc__.split("\n\n")[1] if __doc__ else None)
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="list held messages and pending requests", parents=[common])
    p.set_defaults(handler=_guarded(_list))
    p = sub.add_parser("fetch", help="fetch a held message at the next exchange, whatever "
                       "its size", parents=[common])
    p.add_argument("id", metavar="ID", help="the ID from the notice or from 'held list'")
    p.add_argument("--link", metavar="NAME", help="only when fetching over this link")
    p.set_defaults(handler=_guarded(_fetch))
    p = sub.add_parser("delete", help="delete a held message on the server, unread, at the "
                       "next exchange", parents=[common])
    p.add_argument("id", metavar="ID", help="the ID from the notice or from 'held list'")
    p.set_defaults(handler=_guarded(_delete))


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (_UserError, ConfigError) as e:
            print(f"nosend: {e}", file=sys.stderr)
            return 1
        except LockBusy:
            print("nosend: a fetch of that account is running; try again when it is done",
                  file=sys.stderr)
            return 1
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            print(f"nosend: {where}{e.strerror or e}", file=sys.stderr)
            return 1

    return run


def _config(args: argparse.Namespace) -> Config:
    """The configuration; started as root with ``user =`` set, the command goes on as
    that user, since opening a fetch record may rewrite it and the server must still
    be able to (:func:`nosend.privileges.become_service_user`)."""
    from nosend.privileges import PrivilegeError, become_service_user  # noqa: PLC0415

    given = getattr(args, "config", None)
    path = Path(given) if given else default_config_path()
    config = load_config(path)
    try:
        become_service_user(config.server.run_as, path, config.server.data_dir)
    except PrivilegeError as e:
        raise _UserError(str(e)) from None
    return config


def _states(config: Config) -> Iterator[tuple[str, FetchState]]:
    """Each pop3 account that has a record, opened (locked) in turn."""
    data_dir = config.server.data_dir
    for name, account in config.accounts.items():
        if account.type != "pop3":
            continue
        if not os.path.exists(Path(data_dir) / FETCH_DIR / f"{name}.uidl"):
            continue
        with FetchState.open(data_dir, name, timeout=_LOCK_WAIT) as state:
            yield name, state


def _describe(record: FetchRecord) -> str:
    if record.status is FetchStatus.FETCH_REQUESTED:
        return "fetch requested" + (f" (link {record.link})" if record.link else "")
    return str(record.status.value)


def _list(args: argparse.Namespace) -> int:
    rows = []
    for name, state in _states(_config(args)):
        for uidl, record in state.records().items():
            if record.status in _HELD:
                rows.append((held_id(name, uidl), name, record))
    if not rows:
        print("no held messages")
        return 0
    for ident, name, record in rows:
        size = "?" if record.size is None else str(record.size)
        print(f"{ident}  {name}  {size} bytes  {_describe(record)}")
        print(f"    From: {record.get('from') or '(unknown)'}")
        print(f"    Subject: {record.get('subject') or '(none)'}")
    return 0


def _find(config: Config, ident: str, act: Callable[[FetchState, str], None]) -> str:
    wanted = ident.strip().lower()
    for name, state in _states(config):
        for uidl, record in list(state.records().items()):
            if record.status in _HELD and held_id(name, uidl) == wanted:
                act(state, uidl)
                return name
    raise _UserError(f"no held message {ident} (see 'nosend held list')")


def _fetch(args: argparse.Namespace) -> int:
    config = _config(args)
    link = args.link
    if link is not None and link not in config.links:
        raise _UserError(f"no [link {link}] in {config.path}")
    name = _find(config, args.id, lambda state, uidl: state.request_fetch(uidl, link))
    where = f" over link {link}" if link else ""
    print(f"{args.id}: will be fetched from account {name} at the next exchange{where}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    name = _find(_config(args), args.id, lambda state, uidl: state.request_delete(uidl))
    print(f"{args.id}: will be deleted on account {name} at the next exchange")
    return 0
