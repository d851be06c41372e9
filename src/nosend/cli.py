"""The ``nosend`` command: parse arguments and hand each subcommand to its module.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` (a function taking the parsed namespace and returning an exit status).
Exit status: 0 success, 1 a user error (one line on stderr saying what was wrong),
2 usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType


def _command_modules() -> list[ModuleType]:
    # Imported here so that `nosend --help` stays fast and a broken optional module
    # names itself instead of breaking every command.
    modules: list[ModuleType] = []
    from nosend import admin  # noqa: PLC0415

    modules.append(admin)
    from nosend import held  # noqa: PLC0415

    modules.append(held)
    try:
        from nosend import serve  # noqa: PLC0415
    except ImportError:  # the server commands arrive with the runners
        pass
    else:
        modules.append(serve)
    from nosend import accounts, check, exchange, links, status  # noqa: PLC0415

    modules += [links, status, accounts, exchange, check]
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nosend",
        description="Nos End Mail: a dial-on-demand mail server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from nosend import __version__  # noqa: PLC0415

    parser.add_argument("--version", action="version", version=f"nosend {__version__}")
    # Also accepted after the subcommand; a separate dest keeps a subcommand's own
    # default from overwriting a value given here.
    parser.add_argument(
        "--config",
        dest="global_config",
        metavar="PATH",
        help="mail.cfg to use (default: $NOSEND_CONFIG, else the usual place)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.global_config is not None and getattr(args, "config", None) is None:
        # Subcommands read args.config as str or Path; both accept a str.
        from pathlib import Path

        args.config = Path(args.global_config)
    handler = args.handler
    try:
        status: int = handler(args)
    except KeyboardInterrupt:
        return 130
    sys.stdout.flush()
    return status
