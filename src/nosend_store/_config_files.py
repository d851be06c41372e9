"""``mail.cfg`` on disk: reading, default locations, a fresh sample file, atomic writes.

Owns: :func:`read_config_text` and :func:`load_config`, where the file and the data
directory are by default, the commented sample that ``nosend init`` writes,
:func:`write_atomically` (also used by :mod:`nosend_store.config_edit`) and the check of
the file's mode. Must not: parse (that is :mod:`nosend_store._config_sections`) or hold
any state between calls.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from nosend_store import passwords
from nosend_store._config_model import Config, ConfigError
from nosend_store._config_sections import parse_config


def read_config_text(path: str | os.PathLike[str], missing_hint: str = "") -> str:
    """The text of ``mail.cfg`` at ``path``; :class:`ConfigError` when it is missing,
    unreadable or not UTF-8 (naming the line of the first bad byte). ``missing_hint``
    is added to the "no such file" message."""
    shown = os.fspath(path)
    try:
        data = Path(shown).read_bytes()
    except FileNotFoundError:
        raise ConfigError(shown, 0, f"no such file{missing_hint}") from None
    except OSError as e:
        raise ConfigError(shown, 0, f"cannot read: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(shown, line, "not valid UTF-8") from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate ``mail.cfg`` at ``path``; raise :class:`ConfigError`."""
    return parse_config(read_config_text(path), os.fspath(path))


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``mail.cfg`` is looked for when no ``--config`` is given.

    ``$NOSEND_CONFIG`` if set; else ``/etc/nosend/mail.cfg`` for root; else
    ``$XDG_CONFIG_HOME/nosend/mail.cfg`` (``~/.config/nosend/mail.cfg``).
    """
    env = os.environ if environ is None else environ
    if env.get("NOSEND_CONFIG"):
        return Path(env["NOSEND_CONFIG"])
    if _is_root():
        return Path("/etc/nosend/mail.cfg")
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or "~", ".config")
    return Path(base).expanduser() / "nosend" / "mail.cfg"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Default ``data_dir``: ``/var/lib/nosend`` for root, else ``~/.local/share/nosend``."""
    env = os.environ if environ is None else environ
    if _is_root():
        return Path("/var/lib/nosend")
    base = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME") or "~", ".local", "share")
    return Path(base).expanduser() / "nosend"


def sample_config(
    *, hostname: str, data_dir: Path, domain: str, mailbox: str, password_hash: str
) -> str:
    """The text of a new, commented ``mail.cfg`` (what ``nosend init`` writes)."""
    return _SAMPLE.format(
        hostname=hostname,
        data_dir=os.fspath(data_dir),
        domain=domain,
        mailbox=mailbox,
        password_hash=password_hash,
    )


_SAMPLE = """\
# mail.cfg - Nos End Mail configuration.
#
# Edit by hand or with the `nosend` command (it keeps comments and layout).
# Check with `nosend config check`; a running server re-reads it on request
# and keeps the old configuration if the new one has an error.
# A '#' after whitespace starts a comment. Sizes: 512K, 35M, 1G.
# Durations: 30s, 5m, 1h30m, 5d. Booleans: yes/no. Lists: comma-separated.
# This file holds password hashes: keep it readable by the server only (mode 0600).

[server]
hostname = {hostname}
data_dir = {data_dir}          # maildirs in data_dir/mail/<mailbox>, queue in data_dir/queue

# host:port, comma-separated; [::1]:2525 for IPv6; empty turns a listener off.
smtp_listen = 127.0.0.1:2525
submission_listen = 127.0.0.1:2587      # RFC 6409: authentication required
smtps_listen =                          # implicit TLS (RFC 8314); needs tls_cert
pop3_listen = 127.0.0.1:2110
pop3s_listen =                          # implicit TLS (RFC 8314); needs tls_cert

# PEM files; with both set, STARTTLS and STLS are offered.
tls_cert =
tls_key =

# Clients here may relay without authenticating.
trusted_networks = 127.0.0.0/8, ::1/128
auth_requires_tls = yes       # no AUTH or USER/PASS before TLS...
lan_plaintext_auth = no       # ...unless yes here and the client is on a trusted network

max_message_size = 35M
max_recipients = 100
max_connections = 100         # a tenth kept for each service, a tenth for trusted_networks
max_connections_per_ip = 50   # per client (IPv6: per /64) and service; trusted_networks: no cap
smtp_timeout = 5m
pop3_timeout = 10m

plus_separator = +            # user+tag@domain is delivered to user; empty turns it off
# postmaster = {mailbox}      # default: mailbox "postmaster", else the first mailbox
# queue_drop_mailbox = relay  # its POP3 login sees the outbound queue (fetchmail multidrop)
# user = nosend               # started as root: bind the ports, then run as this user
# group = nosend              # default: the user's own group

retry_interval = 30m          # outbound queue (RFC 5321 section 4.5.4.1)
warn_after = 4h
bounce_after = 5d
log_level = info

[domains]
{domain}

# One section per mailbox. Add with: nosend user add NAME
[mailbox {mailbox}]
password = {password_hash}

[aliases]
# address = mailbox or address, ...     (@domain = ... is the domain's catch-all)
# skipper@{domain} = {mailbox}
# crew@{domain} = {mailbox}, someone@example.net

# When cycles run and which link they use (nosend serve, nosend watch, nosend check).
[schedule]
link = auto                   # auto: links by priority; cost: cheapest estimate first;
                              # or one link's name (`nosend link use NAME|auto|cost`)
queue_age = 15m               # start a cycle once queued mail has waited this long (no: off)
urgent = no                   # mail marked urgent (Priority: urgent, X-Priority: 1) from these
                              # mailboxes starts a cycle at once: no, all, or names
# times = 06:00, 18:00        # also at these times of day
# every = 6h                  # also this long after the last cycle
min_interval = 5m             # never sooner than this after the last cycle started
scheduler = yes               # nosend serve starts cycles itself (no: cron runs nosend check)
report = no                   # cycle costs to the postmaster: each (cycle), daily or no

# A way out, used by the link layer (add with: nosend link add NAME --up CMD ...).
# Whether it is up is decided by a TCP connection that answers with a banner, right
# after `up` (no ping: satellite gateways and hotspots drop ICMP).
# [link gsm]
# up = pon gsm                            # empty: always up (LAN, VSAT)
# down = poff gsm
# priority = 20                           # lower is tried first (link = auto)
# cost_per_minute = 0.50
# cost_per_megabyte = 0
# probe = smtp.example.net:587            # default: the smarthost
# max_size = 1M                           # larger mail waits for a cheaper link
# hours = 06:00-22:00                     # when it may be used (default: always)
# budget = 50                             # a month's cap: money, or 500 MB
# rate = 9600 bit/s                       # its speed, for estimates
# setup_seconds = 20s                     # time to come up, for estimates
# up_timeout = 2m
# max_online = 30m
# accounts = smarthost, isp-pop           # default: every account
# smarthost = smarthost                   # relay through this smtp account on this link

# [account smarthost]
# type = smtp
# host = smtp.example.net
# user = yacht
# secret_file = /etc/nosend/smarthost.secret

# A remote POP3 mailbox, fetched when a link is up:
# [account isp-pop]
# type = pop3
# host = pop.example.net
# user = yacht
# secret_command = pass show isp/yacht   # prints the password (or an OAuth2 token)
# deliver_to = {mailbox}                  # or: multidrop = {mailbox} (the fallback)
# keep = no
# max_size = 5M                           # larger ones wait on the server; you get a notice
"""


def write_atomically(
    path: str | os.PathLike[str], text: str, mode: int = 0o600, *, exclusive: bool = False
) -> None:
    """Replace ``path`` with ``text``: temporary file, fsync, rename, fsync directory.

    A reader sees the old file or the new one, never a mix; a crash leaves one of them.
    When an existing file is replaced, its permission bits are kept instead of ``mode``
    and, as root, its owner and group too: a server running as another user (``user =``
    in ``[server]``) that may read ``root:nosend 0640`` still can after ``nosend user
    add``. With ``exclusive`` an existing ``path`` is never replaced
    (``FileExistsError``): the new file is hard-linked into place, which fails
    atomically if the name is taken.
    """
    target = Path(path)
    directory = target.parent
    owner: tuple[int, int] | None = None
    try:
        st = target.stat()
        owner = (st.st_uid, st.st_gid)
        mode = stat.S_IMODE(st.st_mode)
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        if owner is not None and _is_root():
            os.fchown(fd, *owner)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            _move_exclusively(tmp, target)
        else:
            os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _move_exclusively(tmp: str, target: Path) -> None:
    """Move ``tmp`` to ``target`` unless ``target`` exists (``FileExistsError``)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError as e:
        # Some filesystems (FAT, some network mounts) have no hard links: claim the
        # name with an exclusive create, then rename over our own empty file.
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            os.replace(tmp, target)
        except BaseException:
            os.unlink(target)
            raise
    else:
        os.unlink(tmp)


def create_default_config(
    path: str | os.PathLike[str],
    *,
    hostname: str = "localhost",
    data_dir: str | os.PathLike[str] | None = None,
    domain: str | None = None,
    mailbox: str = "user",
    password: str | None = None,
    scheme: str = passwords.DEFAULT_SCHEME,
) -> tuple[Config, str]:
    """Write a new ``mail.cfg`` with one domain and one mailbox; return it and the password.

    The password is generated unless given; the caller shows it once and it is stored
    only as a hash. Listeners are on unprivileged loopback ports, TLS ones off. Raises
    ``FileExistsError`` rather than overwrite an existing file.
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{os.fspath(target)} already exists")
    chosen = password if password is not None else passwords.generate_password()
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    text = sample_config(
        hostname=hostname,
        data_dir=data.expanduser().absolute(),
        domain=(domain or hostname).lower(),
        mailbox=mailbox,
        password_hash=passwords.hash_password(chosen, scheme),
    )
    config = parse_config(text, target)  # refuse to write a file we would not load
    if not target.parent.exists():
        target.parent.mkdir(parents=True, mode=0o700)
    # Exclusive: another process creating the same file at the same moment wins cleanly,
    # and a failed write leaves no empty file behind to block the next attempt.
    write_atomically(target, text, exclusive=True)
    return config, chosen


def file_mode_warning(
    path: str | os.PathLike[str], *, service_gid: int | None = None
) -> str | None:
    """A warning when ``mail.cfg`` is readable or writable by group or others.

    With ``service_gid`` (the group of ``user =``), read access for that group alone is
    expected (``root:nosend 0640``): the server reads the file again at reload.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    mode = st.st_mode
    allowed = stat.S_IRGRP if service_gid is not None and st.st_gid == service_gid else 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO) & ~allowed:
        fix = "chmod 600 it" if service_gid is None else f"chgrp {service_gid} and chmod 640 it"
        return (
            f"{os.fspath(path)}: mode {stat.S_IMODE(mode):04o} lets other users read the "
            f"password hashes; {fix}"
        )
    return None
