"""``mail.cfg``: the one configuration file, parsed and validated into frozen values.

Owns: the public face of the configuration: every name below is imported from here
(``from nosend_store.config import Config, load_config``), whatever module defines it.
Must not: keep global state, log, or put a password or secret into an error message.
Comment-preserving edits live in :mod:`nosend_store.config_edit`; re-reading a running
server's file lives in :mod:`nosend_store.reload`.

The work is split along its seams into private sibling modules, each one job, imported
in this order (none imports one further down)::

    _config_model     the values: Config and its parts, ConfigError, address resolution
    _config_lexer     the lines: numbering, classifying, trailing comments, sections
    _config_values    one value: sizes, durations, booleans, lists, names, addresses
    _config_sections  text to Config: keys per section, required keys, cross-checks
    _config_files     the file: reading, default locations, sample, atomic writes

Private modules rather than a ``config/`` package: this file keeps its name and its
history, and nothing outside ``nosend_store`` has a reason to reach the parts (the
editor, :mod:`nosend_store.config_edit`, shares the lexer so that an edit and a load
always agree on what a line is). Each part's docstring gives its share of the rules:
the grammar is in ``_config_lexer``, the value syntax in ``_config_values``, the
resolution order in ``_config_model``.

In short: a line-oriented UTF-8 file of ``[section]`` headers and ``key = value``
entries; ``#`` starts a comment. Sizes ``512K``/``35M``/``1G``, durations ``30s``/
``5m``/``1h30m``/``5d``, booleans ``yes``/``no``, comma-separated lists. Keys and
section types are lower case; an unknown section, an unknown key or a key given twice
is an error; every error names the file and the line (``mail.cfg:12: what is wrong``).

Sections:

``[server]`` (required, once)
    ``hostname`` and ``data_dir`` are required; see :class:`ServerOptions` for every
    other key and its default. Maildirs live in ``data_dir/mail/<mailbox>``, the
    outbound queue in ``data_dir/queue``.
``[domains]``
    One local domain per line, compared case-insensitively.
``[mailbox NAME]``
    ``password`` (a ``{SCHEME}`` hash, see :mod:`nosend_store.passwords`; required) and
    ``shared_secret`` (``{PLAIN.B64}...``, a plaintext-equivalent secret for APOP and
    CRAM-MD5; only when the administrator opted in). A mailbox receives mail for
    ``NAME@d`` in every local domain ``d``. Names are ``[a-z0-9][a-z0-9._-]*``.
``[aliases]``
    ``address = target, target, ...``. ``address`` is ``local@domain`` (a domain from
    ``[domains]``) or ``@domain`` (that domain's catch-all). A target is a mailbox name
    or an address; a local address is resolved again (loops are errors), any other
    address is a remote recipient that goes to the outbound queue.
``[link NAME]``
    A way out (land line, GSM, satellite): how to bring it up and down, what it costs,
    when and for what it may be used; see :class:`Link`. The value types of its
    ``probe``, ``hours`` and ``budget`` are in :mod:`nosend_store.link_values`.
``[schedule]``
    Which link is in use (``link = auto|cost|NAME``) and when a cycle starts by itself
    (queue age, urgent mail, times of day, an interval); see :class:`Schedule`.
``[account NAME]``
    An upstream account (``type = smtp`` smarthost or ``type = pop3`` mailbox to fetch);
    see :class:`Account`.
"""

from __future__ import annotations

from nosend_store._config_files import (
    create_default_config,
    default_config_path,
    default_data_dir,
    file_mode_warning,
    load_config,
    read_config_text,
    sample_config,
    write_atomically,
)
from nosend_store._config_model import (
    URGENT_ANYONE,
    Account,
    Alias,
    Config,
    ConfigError,
    IPNetwork,
    Link,
    ListenAddress,
    Mailbox,
    Resolution,
    RunAs,
    Schedule,
    ServerOptions,
)
from nosend_store._config_sections import parse_config
from nosend_store._config_values import parse_duration, parse_size

__all__ = [
    "ConfigError",
    "read_config_text",
    "ListenAddress",
    "ServerOptions",
    "RunAs",
    "Mailbox",
    "Alias",
    "Link",
    "Schedule",
    "URGENT_ANYONE",
    "Account",
    "Resolution",
    "Config",
    "load_config",
    "parse_config",
    "parse_size",
    "parse_duration",
    "default_config_path",
    "default_data_dir",
    "sample_config",
    "create_default_config",
    "write_atomically",
    "file_mode_warning",
    "IPNetwork",
]
