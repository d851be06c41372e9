"""The systemd units in ``contrib/systemd``: well formed, and they run real commands.

Structural checks always run: every ``Exec*`` line is a ``nosend`` command line that
the ``nosend`` parser accepts, every socket has the service it activates, and the
ports of the ``Accept=yes`` sockets are those of the service their template runs.
``systemd-analyze verify`` runs too where systemd is installed (it is not a
dependency of nosend or of ``.ci/run``).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from nosend.cli import build_parser

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
WELL_KNOWN = {"smtp": 25, "submission": 587, "smtps": 465, "pop3": 110, "pop3s": 995}


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) pairs in order (keys may repeat, as in systemd)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, eq, value = line.partition("=")
        assert eq and current is not None, f"{path.name}:{number}: not 'Key=value': {raw!r}"
        assert not value.endswith("\\"), f"{path.name}:{number}: no continuation lines"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def all_units() -> dict[str, dict[str, list[tuple[str, str]]]]:
    return {p.name: parse_unit(p) for p in sorted(UNITS.iterdir())}


def test_the_expected_units_are_there() -> None:
    assert set(all_units()) == {
        "nosend.service", "nosend.socket",
        "nosend-smtp.socket", "nosend-smtp@.service",
        "nosend-pop3.socket", "nosend-pop3@.service",
        "nosend-maintain.service", "nosend-maintain.timer",
        "nosend-check.service", "nosend-check.timer",
    }  # fmt: skip


def test_every_exec_line_is_a_nosend_command_the_parser_accepts() -> None:
    parser = build_parser()
    seen = 0
    for name, unit in all_units().items():
        for key in ("ExecStart", "ExecReload"):
            for line in values(unit, "Service", key):
                argv = shlex.split(line)
                assert argv[0].endswith("/nosend"), f"{name}: {line}"
                parsed = parser.parse_args(argv[1:])  # SystemExit(2) if unknown
                assert callable(parsed.handler)
                seen += 1
    assert seen == 6  # serve, reload, inetd smtp, inetd pop3, queue maintain, check


def test_the_check_timer_runs_one_cycle_with_the_servers_config() -> None:
    units = all_units()
    service, timer = units["nosend-check.service"], units["nosend-check.timer"]
    assert values(service, "Service", "Type") == ["oneshot"]
    (line,) = values(service, "Service", "ExecStart")
    argv = shlex.split(line)
    assert argv[0].endswith("/nosend") and argv[1] == "check"
    serve = shlex.split(values(units["nosend.service"], "Service", "ExecStart")[0])
    assert argv[argv.index("--config") + 1] == serve[serve.index("--config") + 1]
    # SIGTERM to nosend alone, so that it runs the link's `down` before the rest goes.
    assert values(service, "Service", "KillMode") == ["mixed"]
    # The timer starts its namesake service (no Unit= line) and is enabled by timers.
    assert values(timer, "Timer", "Unit") == []
    assert values(timer, "Timer", "OnUnitActiveSec") and values(timer, "Install", "WantedBy")


def test_the_check_unit_runs_a_command_the_parser_accepts() -> None:
    unit = all_units()["nosend-check.service"]
    parsed = build_parser().parse_args(shlex.split(values(unit, "Service", "ExecStart")[0])[1:])
    assert callable(parsed.handler)


def test_serve_reloads_through_nosend_reload_with_the_same_config() -> None:
    unit = all_units()["nosend.service"]
    start = shlex.split(values(unit, "Service", "ExecStart")[0])
    reload = shlex.split(values(unit, "Service", "ExecReload")[0])
    assert start[1] == "serve" and reload[1] == "reload"
    assert start[start.index("--config") + 1] == reload[reload.index("--config") + 1]
    assert values(unit, "Service", "Type") == ["simple"]  # no sd_notify in nosend


def test_the_accept_no_socket_feeds_serve_on_ports_it_recognises() -> None:
    units = all_units()
    sock = units["nosend.socket"]
    assert values(sock, "Socket", "Accept") in ([], ["no"])
    assert values(sock, "Socket", "Service") == ["nosend.service"]
    ports = {int(p) for p in values(sock, "Socket", "ListenStream")}
    assert ports and ports <= set(WELL_KNOWN.values())


@pytest.mark.parametrize("service", ["smtp", "pop3"])
def test_accept_yes_sockets_run_inetd_for_their_port(service: str) -> None:
    units = all_units()
    sock = units[f"nosend-{service}.socket"]
    template = units[f"nosend-{service}@.service"]
    assert values(sock, "Socket", "Accept") == ["yes"]
    assert values(sock, "Socket", "ListenStream") == [str(WELL_KNOWN[service])]
    argv = shlex.split(values(template, "Service", "ExecStart")[0])
    assert argv[1:3] == ["inetd", service]
    # The connection is stdin/stdout; stderr must not be it (log lines would reach the
    # client as replies).
    assert values(template, "Service", "StandardInput") == ["socket"]
    assert values(template, "Service", "StandardError") == ["journal"]


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the structural tests above ran)")
    # verify checks that ExecStart's program exists: point it at one that does.
    for path in UNITS.iterdir():
        (tmp_path / path.name).write_text(
            path.read_text().replace("/usr/local/bin/nosend", shutil.which("true") or "/bin/true")
        )
    names = [str(tmp_path / p.name) for p in sorted(UNITS.iterdir())]
    result = subprocess.run(
        [analyze, "verify", "--man=no", *names], capture_output=True, text=True, timeout=120
    )
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert result.returncode == 0 and ours == [], result.stderr


def test_the_root_started_service_leaves_the_data_folder_to_nosend() -> None:
    # nosend.service starts as root and drops to mail.cfg's `user =`, giving it
    # /var/lib/nosend; a StateDirectory= would make systemd give the whole tree back to
    # root (the unit's user) at every start. mail.cfg's folder must let the group in.
    unit = all_units()["nosend.service"]
    assert values(unit, "Service", "User") == []
    assert values(unit, "Service", "StateDirectory") == []
    assert values(unit, "Service", "ConfigurationDirectoryMode") == ["0750"]
