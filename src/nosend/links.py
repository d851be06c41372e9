"""``nosend link``: add, remove, list, choose and test the links (``[link NAME]`` sections).

Owns: the argument syntax and output of ``nosend link add|remove|list|use|test``. The
edits go through :mod:`nosend_store.config_edit` (comments and layout kept, a running
``nosend serve`` asked to reload, as for ``nosend user add``); ``use`` edits
``[schedule] link``; ``test`` runs :func:`nosend_link.trial.try_link` (up, probe, down,
with the timings). The values' syntax is ``mail.cfg``'s: a bad one is refused with the
parser's message and the file is left as it was.

Must not: put anything on a command line it runs but the link's own commands, or print
a secret (the commands come from ``mail.cfg`` and should carry none: use a dialler's
saved credentials). Exit status: 0 done (``test``: the link came up, answered and went
down), 1 a user error or a failed test, 2 usage, 128 + N when signal N cut a test short.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nosend.admin import UserError, _changed, _config_path, _guarded
from nosend_store.config import Config, Link, load_config
from nosend_store.config_edit import ConfigDocument, edit_config
from nosend_store.link_values import Hours

__all__ = ["register"]

_EPILOG = """\
examples:
  nosend link add marina --priority 10 --hours 08:00-20:00          # always up (LAN, VSAT)
  nosend link add gsm --up 'nmcli connection up gsm' --down 'nmcli connection down gsm' \\
      --priority 20 --cost-per-mb 0.10 --max-size 2M
  nosend link add iridium --up 'pon iridium' --down 'poff iridium' --priority 50 \\
      --cost-per-minute 1.35 --max-size 50K --budget 100 --rate '2400 bit/s'
  nosend link list
  nosend link use gsm          # only this link from now on (auto: by priority; cost)
  nosend link test iridium     # up, probe, down, with the timings (bills the airtime)
  nosend link remove gsm
"""

#: (option, mail.cfg key, help) for every value ``link add`` writes as given.
#: The metavar of each is in :data:`_METAVARS`.
_VALUE_OPTIONS = (
    ("--up", "up", "command that brings the link up (none: always up)"),
    ("--down", "down", "command that brings it down"),
    ("--probe", "probe", "HOST:PORT that must answer with a banner once up "
                         "(default: the smarthost)"),
    ("--priority", "priority", "lower is tried first (default 100)"),
    ("--cost-per-minute", "cost_per_minute", "money per minute online"),
    ("--cost-per-mb", "cost_per_megabyte", "money per megabyte (1,000,000 bytes)"),
    ("--max-size", "max_size", "larger outbound mail waits for another link (e.g. 50K)"),
    ("--accounts", "accounts", "A,B: only these accounts over this link (default: all)"),
    ("--hours", "hours", "when it may be used, e.g. 22:00-06:00 (default: always)"),
    ("--budget", "budget", "a month's cap: money (120) or volume (500 MB)"),
    ("--smarthost", "smarthost", "the smtp account to relay through over this link"),
    ("--rate", "rate", "its speed, for estimates (e.g. '2400 bit/s', '64 kbit/s')"),
    ("--setup-seconds", "setup_seconds", "time it takes to come up, for estimates"),
    ("--up-timeout", "up_timeout", "how long up and the probe may take (default 2m)"),
    ("--down-timeout", "down_timeout", "how long down may take (default: up_timeout)"),
    ("--max-online", "max_online", "hang up after this long (default 30m)"),
)


_METAVARS = {
    "up": "CMD", "down": "CMD", "probe": "HOST:PORT", "priority": "N",
    "cost_per_minute": "X", "cost_per_megabyte": "X", "max_size": "SIZE", "accounts": "A,B",
    "hours": "HH:MM-HH:MM", "budget": "AMOUNT", "smarthost": "ACCOUNT", "rate": "RATE",
    "setup_seconds": "DURATION", "up_timeout": "DURATION", "down_timeout": "DURATION",
    "max_online": "DURATION",
}


def register(subparsers: Any) -> None:
    """Add ``nosend link`` and its actions to the ``nosend`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS,
        help="mail.cfg to use (default: $NOSEND_CONFIG, else the usual place)")
    parser = subparsers.add_parser(
        "link", help="manage and test the links (dial-up, GSM, satellite, LAN)",
        description="Manage the [link NAME] sections of mail.cfg, choose the link in "
        "use and test a link.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("add", help="add a link", parents=[common])
    p.add_argument("name", help="the link's name (letters, digits, '.', '_', '-')")
    for option, key, help_text in _VALUE_OPTIONS:
        p.add_argument(option, dest=key, metavar=_METAVARS[key], help=help_text)
    p.add_argument("--disabled", action="store_true",
                   help="add it switched off (enabled = no)")
    p.set_defaults(handler=_guarded(_add))

    p = sub.add_parser("remove", help="remove a link", parents=[common])
    p.add_argument("name")
    p.set_defaults(handler=_guarded(_remove))

    p = sub.add_parser("list", help="list the links and the link in use", parents=[common])
    p.set_defaults(handler=_guarded(_list))

    p = sub.add_parser("use", help="choose the link cycles use: a name, auto (by "
                       "priority) or cost (cheapest first)", parents=[common])
    p.add_argument("name", metavar="NAME|auto|cost")
    p.set_defaults(handler=_guarded(_use))

    p = sub.add_parser("test", help="bring a link up, probe it, bring it down; print the "
                       "timings", parents=[common])
    p.add_argument("name")
    p.set_defaults(handler=_guarded(_test))


# -- edits ---------------------------------------------------------------------------


def _add(args: argparse.Namespace) -> int:
    entries: list[tuple[str, str]] = []
    for _, key, _ in _VALUE_OPTIONS:
        value = getattr(args, key)
        if value is None:
            continue
        if key in ("up", "down") and not value.strip():
            continue  # an empty command is the default: always up
        if "\n" in value or "\r" in value:
            raise UserError(f"--{key.replace('_', '-')}: a value cannot contain a line break")
        entries.append((key, value.strip()))
    if args.disabled:
        entries.append(("enabled", "no"))
    path = _config_path(args)
    _, config = edit_config(path, lambda doc: doc.add_link(args.name, entries))
    link = config.links[args.name]
    print(f"added link {args.name} ({'always up' if not link.up else 'dialled'})")
    _changed(path, config)
    return 0


def _remove(args: argparse.Namespace) -> int:
    path = _config_path(args)
    reset, config = edit_config(path, lambda doc: doc.remove_link(args.name))
    print(f"removed link {args.name}")
    if reset:
        print(f"link {args.name} was in use; cycles now use every link by priority (auto)")
    _changed(path, config)
    return 0


def _use(args: argparse.Namespace) -> int:
    path = _config_path(args)
    wanted = args.name.lower() if args.name.lower() in ("auto", "cost") else args.name

    def edit(doc: ConfigDocument) -> None:
        if wanted not in ("auto", "cost") and wanted not in doc.links():
            known = ", ".join(doc.links()) or "none; add one with `nosend link add`"
            raise UserError(f"no link {wanted!r} (links: {known})")
        doc.set_schedule("link", wanted)

    _, config = edit_config(path, edit)
    print(f"link in use: {_mode_text(config.schedule.link)}")
    _changed(path, config)
    return 0


def _mode_text(mode: str) -> str:
    if mode == "auto":
        return "auto (every usable link, by priority)"
    if mode == "cost":
        return "cost (every usable link, cheapest estimate first)"
    return f"{mode} (only this link)"


# -- list ----------------------------------------------------------------------------


def hours_text(hours: Hours) -> str:
    """``always`` or the windows as written in mail.cfg (``22:00-06:00, ...``)."""
    if hours.always:
        return "always"
    return ", ".join(f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}"
                     for s, e in hours.windows)


def _list(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    print(f"link in use: {_mode_text(config.schedule.link)}")
    if not config.links:
        print("no links; add one with `nosend link add NAME`")
        return 0
    from nosend_link.site import link_plans  # noqa: PLC0415

    plans = {p.name: p for p in link_plans(config)}
    for link in config.links.values():
        for line in _link_lines(config, link, plans[link.name].probe,
                                plans[link.name].smarthost):
            print(line)
    return 0


def _link_lines(config: Config, link: Link, probe: object, smarthost: str | None) -> list[str]:
    flags = []
    if config.schedule.link == link.name:
        flags.append("in use")
    if not link.enabled:
        flags.append("disabled")
    head = f"{link.name}{' (' + ', '.join(flags) + ')' if flags else ''}"
    lines = [head]
    if link.up:
        lines.append(f"    up: {_command_text(link.up)}")
        lines.append(f"    down: {_command_text(link.down) if link.down else '(none)'}")
    else:
        lines.append("    always up (no up command)")
    facts = [f"priority {link.priority}",
             f"cost {link.cost_per_minute}/min + {link.cost_per_megabyte}/MB",
             f"hours {hours_text(link.hours)}"]
    if link.max_size is not None:
        facts.append(f"max_size {link.max_size} bytes")
    if link.budget is not None:
        unit = " MB" if link.budget.unit == "MB" else ""
        facts.append(f"budget {link.budget.amount}{unit} a month")
    lines.append("    " + ", ".join(facts))
    where = f"probe {probe}" if probe is not None else "no probe (up's exit status decides)"
    via = f"smarthost {smarthost}" if smarthost else "no smarthost"
    accounts = ", ".join(link.accounts) if link.accounts else "all"
    lines.append(f"    {where}; {via}; accounts {accounts}")
    return lines


def _command_text(argv: tuple[str, ...]) -> str:
    import shlex  # noqa: PLC0415

    return shlex.join(argv)


# -- test ----------------------------------------------------------------------------


def _test(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415

    from nosend.check import give_state, service_user  # noqa: PLC0415
    from nosend_link.cycle_lock import CycleBusy, CycleLock, state_dir  # noqa: PLC0415
    from nosend_link.signals import run_until_signalled  # noqa: PLC0415
    from nosend_link.site import link_plans  # noqa: PLC0415
    from nosend_link.trial import try_link  # noqa: PLC0415

    path = _config_path(args)
    config = load_config(path)
    # Root dials (up/down usually need it); what the test leaves in state/ (the lock,
    # the marker, the ledger line) goes to the service user, as after `nosend check`.
    run_as = service_user(config, path)
    plans = {p.name: p for p in link_plans(config)}
    plan = plans.get(args.name)
    if plan is None:
        known = ", ".join(plans) or "none"
        raise UserError(f"no link {args.name!r} (links: {known})")
    if not plan.dialled and plan.probe is None:
        raise UserError(f"link {args.name} has no up command and nothing to probe "
                        "(no probe and no smarthost): nothing to test")
    print(f"testing link {plan.name}" + ("" if plan.enabled else " (disabled for cycles)"),
          flush=True)
    state = state_dir(config.server.data_dir)
    lock = CycleLock(state)
    try:
        lock.acquire()
    except CycleBusy as busy:
        raise UserError(f"{busy}; try again when it is done") from None
    try:
        done = anyio.run(run_until_signalled,
                         lambda: try_link(plan, state, take_lock=False))
    finally:
        lock.release()
        give_state(config, run_as)
    if done.value is None:
        print("interrupted; down ran (if the link was dialled)", file=sys.stderr)
        return done.exit_code or 130
    trial = done.value
    if trial.up is not None:
        print(f"up: {trial.up.describe()} after {trial.up.seconds:.1f} s")
        if not trial.up.ok and trial.up.output:
            print(_indent(trial.up.output))
    if trial.probe is not None:
        p = trial.probe
        tries = f", {p.attempts} attempt{'s' if p.attempts != 1 else ''}"
        if p.ok:
            connect = p.connect_seconds or 0.0
            banner = p.banner_seconds or 0.0
            print(f"probe {p.endpoint}: connected in {connect:.1f} s, banner after "
                  f"{banner:.1f} s{tries}: {p.banner}")
        else:
            print(f"probe {p.endpoint}: {p.error}{tries}")
    elif trial.up is None or trial.up.ok:
        print("probe: none (no probe and no smarthost; up's exit status decides)")
    if trial.down is not None:
        print(f"down: {trial.down.describe()} after {trial.down.seconds:.1f} s")
        if not trial.down.ok and trial.down.output:
            print(_indent(trial.down.output))
    if trial.cost_text:
        print(f"online {trial.seconds:.1f} s, cost {trial.cost_text} (in the ledger)")
    for note in trial.notes:
        print(f"warning: {note}", file=sys.stderr)
    if trial.ok:
        print(f"link {plan.name} works")
        return 0
    print(f"nosend: link {plan.name} failed the test", file=sys.stderr)
    return 1


def _indent(text: str) -> str:
    return "\n".join(f"    | {line}" for line in text.splitlines())
