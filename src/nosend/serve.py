"""``nosend serve`` and ``nosend inetd``: run the mail server.

``serve`` listens on every address in ``mail.cfg`` (or on sockets from systemd socket
activation) and runs until SIGTERM/SIGINT; SIGHUP re-reads ``mail.cfg``. With no
configuration file it first writes a working default and prints the generated password
once. ``inetd SERVICE`` runs one session on the connection on stdin/stdout, for
openbsd-inetd, xinetd, systemd ``Accept=yes`` or socat.

With ``user =`` in ``[server]`` and started as root, both give up root
(:mod:`nosend.privileges`): ``serve`` once its ports are bound and its TLS files read,
before it accepts a connection or reads any mail; ``inetd`` once its TLS files and log
are open, before it reads the connection.
"""

from __future__ import annotations

import argparse
import functools
import logging
import logging.handlers
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nosend_runners.serve.settings import ServerSettings
    from nosend_store.config import Config, RunAs

_INETD_SERVICES = ("smtp", "submission", "smtps", "pop3", "pop3s")
# The keys of nosend_runners.session.services.FACTORIES; the runners are imported only when a
# server command runs, so that `nosend --help` and the admin commands stay fast.
_SESSIONS = ("echo", "mail")


_EPILOG_SERVE = """\
examples:
  nosend serve                                  # first run: writes a working mail.cfg
  nosend serve --config /etc/nosend/mail.cfg
  nosend serve --backend trio                   # needs the 'trio' extra
  nosend reload                                 # from another shell: re-read mail.cfg
  systemctl start nosend                        # contrib/systemd/nosend.service
"""
_EPILOG_INETD = """\
examples (one connection per process; see README.md for xinetd and systemd):
  # /etc/inetd.conf
  smtp  stream tcp nowait root /usr/local/bin/nosend nosend inetd smtp
  pop3  stream tcp nowait root /usr/local/bin/nosend nosend inetd pop3
  # started as root, it runs the session as mail.cfg's `user =` (if set)
  # or, to try it without a super-server:
  socat TCP-LISTEN:2525,fork,reuseaddr EXEC:'nosend inetd smtp'
"""


def register(subparsers: Any) -> None:
    """Add the ``serve`` and ``inetd`` subcommands."""
    serve = subparsers.add_parser(
        "serve",
        help="run the SMTP and POP3 servers",
        description="Listen on the addresses in mail.cfg, in the foreground, until SIGTERM\n"
        "or Ctrl-C; SIGHUP re-reads mail.cfg. Creates a default configuration on first run.",
        epilog=_EPILOG_SERVE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(serve)
    # Always in the foreground (a supervisor such as systemd keeps it running); the flag
    # did nothing and is still accepted so that old scripts and unit files keep working.
    serve.add_argument("--foreground", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)

    inetd = subparsers.add_parser(
        "inetd",
        help="serve one connection on stdin/stdout (inetd, xinetd, systemd, socat)",
        description="Run one session on the connection passed on stdin/stdout\n"
        "(or fd 3 with systemd Accept=yes).",
        epilog=_EPILOG_INETD,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inetd.add_argument("service", choices=_INETD_SERVICES)
    _common(inetd)
    inetd.add_argument(
        "--log-file",
        type=Path,
        help="append log lines here (default: stderr, or syslog when stderr is the connection)",
    )
    inetd.set_defaults(handler=_inetd)

    from nosend.control import register as register_reload  # noqa: PLC0415

    register_reload(subparsers)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="mail.cfg to use (default: $NOSEND_CONFIG or the usual place)",
    )
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="event loop (trio needs the 'trio' extra)",
    )
    # 'echo' runs the line-echo transport test session instead of SMTP/POP3: for the
    # tests, not for users, so not in --help.
    parser.add_argument("--session", choices=_SESSIONS, default="mail", help=argparse.SUPPRESS)


def _backend_problem(backend: str) -> str | None:
    if backend == "trio":
        try:
            import trio  # noqa: F401, PLC0415 - only to report a missing optional backend
        except ImportError:
            return "the trio backend needs trio: pip install 'nosend[trio]'"
    return None


def _fail(message: str) -> int:
    print(f"nosend: {message}", file=sys.stderr)
    return 1


def first_run(path: Path) -> Config:
    """Write a default ``mail.cfg`` at ``path``; print its password once and client settings."""
    from nosend.newconfig import claim_data_dir, create_config, data_dir_for  # noqa: PLC0415

    # Never a folder with another configuration's mail: DataInUse says what is there.
    data_dir = data_dir_for(path)
    claim_data_dir(data_dir, adopt=False, config_path=path)
    config, password = create_config(path, data_dir=data_dir)
    server = config.server
    mailbox = next(iter(config.mailboxes))
    domain = sorted(config.domains)[0] if config.domains else server.hostname
    smtp = server.smtp_listen[0] if server.smtp_listen else None
    pop3 = server.pop3_listen[0] if server.pop3_listen else None
    print(f"Created {path} (mail in {server.data_dir}).")
    print(f"Mailbox {mailbox!r}, password: {password}")
    print("  (shown only this once; mail.cfg stores only a hash. Change it with `nosend user`.)")
    print("Point a mail client at it:")
    if smtp is not None:
        print(f"  outgoing (SMTP): server {smtp.host}, port {smtp.port}, no encryption")
    if pop3 is not None:
        print(f"  incoming (POP3): server {pop3.host}, port {pop3.port}, no encryption")
    print(f"  user name: {mailbox} (or {mailbox}@{domain}), the password above")
    print(f"  your address: {mailbox}@{domain}")
    sys.stdout.flush()
    return config


def _data_dir_problem(config: Config, path: Path) -> str | None:
    """Refuse to start on a data folder that cannot take mail (made here if missing).

    Otherwise the server would say it listens and then answer every message with 451.
    """
    from nosend_store.datadir import data_dir_problem  # noqa: PLC0415

    problem = data_dir_problem(config.server.data_dir, create=True)
    return f"{path}: {problem}" if problem is not None else None


def _setup_logging(level: str, handler: logging.Handler) -> None:
    from nosend_runners.serve.log import LineFormatter  # noqa: PLC0415 - see _SESSIONS

    # Our lines never show the caller, thread or process: don't collect them for every
    # record (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _serve(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415 - see _SESSIONS

    from nosend_runners.anyio_server import MailServer, ServerSetupError  # noqa: PLC0415
    from nosend_runners.serve.activation import ActivationError, listen_fds  # noqa: PLC0415
    from nosend_runners.serve.settings import settings_from_config  # noqa: PLC0415
    from nosend_runners.serve.tls import TLSConfigError  # noqa: PLC0415
    from nosend_runners.session.services import FACTORIES, SessionsUnavailable  # noqa: PLC0415
    from nosend_store.config import ConfigError, default_config_path  # noqa: PLC0415
    from nosend_store.reload import ConfigHolder  # noqa: PLC0415

    if problem := _backend_problem(args.backend):
        return _fail(problem)
    path: Path = args.config if args.config is not None else default_config_path()
    if not path.exists():
        from nosend.newconfig import DataInUse  # noqa: PLC0415

        try:
            first_run(path)
        except (OSError, ConfigError, DataInUse) as exc:
            return _fail(f"cannot create a default configuration at {path}: {exc}")
    from nosend.control import (  # noqa: PLC0415
        PidFile,
        ServerAlreadyRunning,
        config_stamp,
        write_reload_ack,
    )
    from nosend.privileges import (  # noqa: PLC0415
        PrivilegeError,
        drop_privileges,
        give_data_dir,
        plan_switch,
    )

    loaded_stamp = config_stamp(path)
    try:
        holder = ConfigHolder(path)
    except ConfigError as exc:
        return _fail(str(exc))
    config = holder.current
    try:
        run_as = plan_switch(config.server.run_as, path)
    except PrivilegeError as exc:
        return _fail(str(exc))
    if problem := _data_dir_problem(config, path):
        return _fail(problem)
    data_dir = config.server.data_dir
    # Held until we exit: `nosend reload` and the admin commands find us through it.
    pid_file = PidFile(data_dir, path)
    try:
        pid_file.acquire()
    except (ServerAlreadyRunning, OSError) as exc:
        return _fail(str(exc))
    given = 0
    if run_as is not None:
        # Still root: the service user must own every folder it will write in, including
        # what a root server or a root admin command left there (and the pid file).
        try:
            given = give_data_dir(data_dir, run_as, recursive=True)
        except OSError as exc:
            pid_file.release()
            return _fail(f"{path}: cannot give data_dir {data_dir} to {run_as}: {exc}")
    settings = settings_from_config(config)
    _setup_logging(config.server.log_level, logging.StreamHandler(sys.stderr))
    server_log = logging.getLogger("nosend.server")
    if run_as is not None and given:
        server_log.info("data_dir: %d entries given to user %s", given, run_as.user)
    try:
        inherited = listen_fds(ports=settings.ports())
    except ActivationError as exc:
        pid_file.release()
        return _fail(str(exc))

    running = [settings]  # the settings in force, for the TLS check of a reload

    def reloader() -> tuple[Config, ServerSettings]:
        # The stamp is taken before reading, so an acknowledgement never claims a
        # version newer than the one read (`nosend user add` waits for its own).
        stamp = config_stamp(path)
        error = holder.reload()
        try:
            if error is not None:
                raise _explain_unreadable(error, path, run_as)
            new = settings_from_config(holder.current)
            # What the server does next: fail here to say so in the ack.
            _check_tls(new, running[0])
        except Exception as exc:
            write_reload_ack(data_dir, stamp, str(exc))
            raise
        if _ids(holder.current.server.run_as) != _ids(config.server.run_as):
            server_log.warning("user and group changes take effect on restart")
        logging.getLogger().setLevel(holder.current.server.log_level.upper())
        write_reload_ack(data_dir, stamp, None)
        running[0] = new
        return holder.current, new

    def listening() -> None:
        # Every port is bound and the TLS files are read; no connection was accepted
        # and no mail read yet. From here on this process cannot regain root.
        if run_as is None:
            return
        drop_privileges(run_as)
        server_log.info("running as %s", run_as)
        from nosend_store.datadir import data_dir_problem  # noqa: PLC0415

        try:
            problem = data_dir_problem(data_dir)
        except OSError as exc:  # a folder above it the user may not enter
            problem = f"data_dir {data_dir}: {exc.strerror or exc}"
        if problem is not None:
            raise ServerSetupError(f"{path}: as user {run_as.user}: {problem}")
        if hint := _unreadable_hint(path, run_as):
            server_log.warning("%s; a reload (SIGHUP, nosend reload) would fail", hint)

    def started(value: object = None) -> None:
        # SIGHUP is handled from now on: publish the pid for `nosend reload`, and catch
        # up with a mail.cfg changed while we started (nobody could signal us then).
        pid_file.publish()
        if config_stamp(path) != loaded_stamp:
            os.kill(os.getpid(), signal.SIGHUP)

    try:
        server = MailServer(
            settings,
            FACTORIES[args.session],
            config=config,
            reloader=reloader,
            inherited=inherited,
            handle_signals=True,
            on_listening=listening,
        )
        anyio.run(
            functools.partial(_serve_with_links, server, holder, started),
            backend=args.backend,
        )
    except (ServerSetupError, SessionsUnavailable, TLSConfigError, PrivilegeError) as exc:
        return _fail(str(exc))
    finally:
        pid_file.release()
    return 0


async def _serve_with_links(
    server: Any, holder: Any, started: Callable[[object], None]
) -> None:
    """Run ``server``; once it listens, the link task (:func:`_links`) beside it.

    The link task lives in the same event loop and does its blocking work in threads,
    so a cycle never holds up the mail service. When the server stops (SIGTERM), the
    task is cancelled; a running cycle still brings its link down first.
    """
    import anyio  # noqa: PLC0415 - see _SESSIONS

    failure: list[BaseException] = []
    async with anyio.create_task_group() as tg:

        def ready(value: object = None) -> None:
            started(value)
            # Links, or a marker of a link left up (its section since removed).
            marker = Path(holder.current.server.data_dir) / "state" / "link-up.json"
            if holder.current.links or marker.exists():
                tg.start_soon(_links, holder)

        try:
            await server.serve(task_status=_Started(ready))
        except Exception as exc:  # raised below, outside the task group, unwrapped
            failure.append(exc)
        tg.cancel_scope.cancel()
    if failure:
        raise failure[0]


async def _links(holder: Any) -> None:
    """``nosend serve``'s link task: bring down a link a killed cycle left up, then, with
    ``[schedule] scheduler = yes``, run cycles when the schedule says.

    It runs after root was given up: with ``user =`` set, the links' ``up`` and ``down``
    run as that user. ``pon``/``poff`` work for members of the ``dip`` group and
    ``nmcli`` needs a polkit rule for the user; where neither is possible, set
    ``scheduler = no`` and let a root timer run ``nosend check`` (README, "When cycles
    run"). ``scheduler`` is read at start; a reload changes the rest.
    """
    import anyio  # noqa: PLC0415 - see _SESSIONS

    from nosend_link.cycle_lock import state_dir  # noqa: PLC0415
    from nosend_link.exchange import site_cycle  # noqa: PLC0415
    from nosend_link.progress import LogRenderer  # noqa: PLC0415
    from nosend_link.scheduler_loop import SchedulerLoop, run_site_cycle  # noqa: PLC0415

    log = logging.getLogger("nosend.scheduler")
    config = holder.current
    try:
        state = await anyio.to_thread.run_sync(state_dir, config.server.data_dir)
        for line in await site_cycle(config, state, log=log.info).bring_down_stale():
            log.warning("%s", line)
    except Exception:
        log.exception("bringing a stale link down failed")
    if not config.schedule.scheduler:
        return

    async def cycle(conf: Config) -> None:
        try:
            outcome = await run_site_cycle(conf, progress=LogRenderer(log.info), log=log.info)
        except Exception:  # a bug or a full disk: the mail service goes on
            log.exception("the cycle failed")
            return
        log.info("cycle %s: %s", outcome.result.value, outcome.message)
        if outcome.record is not None and conf.schedule.report != "no":
            from nosend_link.report import report_after_cycle  # noqa: PLC0415

            try:
                await anyio.to_thread.run_sync(report_after_cycle, conf, outcome.record)
            except OSError as exc:
                log.error("the report to the postmaster was not delivered: %s", exc)

    log.info("scheduler running")
    await SchedulerLoop(lambda: holder.current, cycle, log=log.info).run()


def _check_tls(settings: ServerSettings, running: ServerSettings) -> None:
    """Load the certificate and key as the server will; raise ``TLSConfigError`` if bad.

    Files this process may no longer read (it gave up root) are no error when they are
    the ones in force: the server keeps the context it loaded at start and logs it.
    """
    from nosend_runners.serve.tls import TLSUnreadable, server_context  # noqa: PLC0415

    if settings.tls_cert is None:
        return
    try:
        server_context(settings.tls_cert, settings.tls_key)
    except TLSUnreadable:
        if (settings.tls_cert, settings.tls_key) != (running.tls_cert, running.tls_key):
            raise


def _ids(run_as: RunAs | None) -> tuple[int, int] | None:
    return None if run_as is None else (run_as.uid, run_as.gid)


def _unreadable_hint(path: Path, run_as: RunAs) -> str | None:
    """What to do when the service user cannot read ``mail.cfg``; None if it can."""
    if os.access(path, os.R_OK):
        return None
    return (
        f"{path} cannot be read by {run_as}, which this server runs as since it started: "
        f"chgrp {run_as.group} {path}; chmod 640 {path}; and let that group search its folder"
    )


def _explain_unreadable(error: Exception, path: Path, run_as: RunAs | None) -> Exception:
    """A reload error, with the fix when the file is only unreadable to the service user."""
    from nosend_store.config import ConfigError  # noqa: PLC0415

    if run_as is None or not isinstance(error, ConfigError) or error.line:
        return error
    hint = _unreadable_hint(path, run_as)
    return error if hint is None else ConfigError(path, 0, f"{error.message}: {hint}")


class _Started:
    """An ``anyio.abc.TaskStatus`` that calls a function once the server is ready."""

    def __init__(self, callback: Callable[[object], None]) -> None:
        self._callback = callback

    def started(self, value: object = None) -> None:
        """Called by ``MailServer.serve`` once it listens and handles signals."""
        self._callback(value)


def _inetd_log_handler(log_file: Path | None) -> logging.Handler:
    from nosend_runners.inetd import stderr_is_connection  # noqa: PLC0415

    if log_file is not None:
        return logging.FileHandler(log_file)
    if not stderr_is_connection():
        return logging.StreamHandler(sys.stderr)
    # openbsd-inetd and xinetd put the connection on fd 2 as well: a log line there
    # would be read by the client as a reply.
    if os.path.exists("/dev/log"):
        return logging.handlers.SysLogHandler("/dev/log")
    return logging.NullHandler()


def _inetd(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415 - see _SESSIONS

    from nosend_runners.inetd import refuse_inetd, run_inetd  # noqa: PLC0415
    from nosend_runners.serve.settings import ServerSettings, settings_from_config  # noqa: PLC0415
    from nosend_runners.serve.tls import TLSConfigError  # noqa: PLC0415
    from nosend_runners.session.services import FACTORIES, SessionsUnavailable  # noqa: PLC0415
    from nosend_store.config import ConfigError, default_config_path  # noqa: PLC0415
    from nosend_store.reload import ConfigHolder  # noqa: PLC0415

    service: str = args.service
    if problem := _backend_problem(args.backend):
        return _fail(problem)
    _setup_logging("info", _inetd_log_handler(args.log_file))
    log = logging.getLogger("nosend.inetd")
    path: Path = args.config if args.config is not None else default_config_path()
    config: Config | None = None
    try:
        config = ConfigHolder(path).current
        settings = settings_from_config(config)
        logging.getLogger().setLevel(config.server.log_level.upper())
    except ConfigError as exc:
        if args.session != "echo" or path.exists():
            log.error("%s", exc)
            anyio.run(refuse_inetd, service, backend=args.backend)
            return 1
        settings = ServerSettings()  # the echo session needs no mail.cfg
    from nosend.privileges import PrivilegeError, drop_privileges  # noqa: PLC0415

    run_as: RunAs | None = None
    try:
        run_as = _inetd_run_as(config, path)
    except (PrivilegeError, OSError) as exc:
        log.error("%s", exc)
        anyio.run(refuse_inetd, service, backend=args.backend)
        return 1

    def ready() -> None:
        # The certificate and key are read, the log is open; not a byte of the
        # connection has been read yet.
        if run_as is not None:
            drop_privileges(run_as)

    try:
        session = FACTORIES[args.session](service)
        anyio.run(
            functools.partial(
                run_inetd,
                service,
                session,
                settings,
                config=config,
                handle_signals=True,
                on_ready=ready,
            ),
            backend=args.backend,
        )
    except (SessionsUnavailable, TLSConfigError, PrivilegeError) as exc:
        log.error("%s", exc)
        anyio.run(refuse_inetd, service, backend=args.backend)
        return 1
    return 0


def _inetd_run_as(config: Config | None, path: Path) -> RunAs | None:
    """Whom ``nosend inetd`` switches to, after giving it the data folder's top folders.

    Started as root (root in the user column of inetd.conf, or a systemd unit without
    ``User=``) with ``user =`` set, it reads its TLS files and then runs the session as
    that user, like ``nosend serve``: the connection is already open on stdin/stdout.
    Only the top folders are checked here (a process per connection must stay cheap);
    ``nosend serve`` and the admin commands fix the rest.
    """
    from nosend.privileges import give_data_dir, plan_switch  # noqa: PLC0415

    if config is None:
        return None
    run_as = plan_switch(config.server.run_as, path)
    if run_as is not None:
        give_data_dir(config.server.data_dir, run_as, recursive=False)
    return run_as
