"""Administrative subcommands (init, domain, user, alias, queue, config). Arrives with the store."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("version", help="print the version")
    parser.set_defaults(handler=_version)


def _version(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    print(version("nosend"))
    return 0
