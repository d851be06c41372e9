"""Where a new configuration keeps its mail, for ``nosend init`` and ``serve``'s first run.

Owns: the default ``data_dir`` of a new ``mail.cfg`` and the refusal to take over a
folder that already holds mail. Must not: write or move anything (the callers create
the file; :mod:`nosend_store.datadir` counts the mail).

Two configurations sharing one data folder would deliver into, and serve POP3 from,
the same Maildirs, each with its own passwords; so only the usual ``mail.cfg`` gets the
usual folder (``/var/lib/nosend`` for root), and any other file gets ``data`` beside it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from nosend_store.config import default_config_path, default_data_dir
from nosend_store.datadir import data_dir_contents

__all__ = ["DataInUse", "claim_data_dir", "data_dir_for"]


class DataInUse(Exception):
    """The chosen data folder already holds mail and adopting it was not asked for."""


def data_dir_for(config_path: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The default ``data_dir`` of a new configuration at ``config_path``.

    The usual place of ``mail.cfg`` (ignoring ``$NOSEND_CONFIG``, which can point
    anywhere) gets :func:`default_data_dir`; any other file gets ``data`` in its folder.
    """
    env = dict(os.environ if environ is None else environ)
    env.pop("NOSEND_CONFIG", None)
    here = config_path.expanduser().absolute()
    if here == default_config_path(env).expanduser().absolute():
        return default_data_dir(env)
    return here.parent / "data"


def claim_data_dir(data_dir: Path, *, adopt: bool, config_path: Path) -> str | None:
    """Check that a new configuration may use ``data_dir``; a note to print, or None.

    Raises :class:`DataInUse`, saying what was found, if the folder holds mail and
    ``adopt`` is false. With ``adopt`` the note says what is taken over.
    """
    found = data_dir_contents(data_dir.expanduser().absolute())
    if not found.has_mail:
        return None
    if not adopt:
        raise DataInUse(
            f"data folder {data_dir} already holds mail ({found.describe()}); it may "
            f"belong to another configuration. To use it for {config_path} anyway, add "
            "--adopt-data; otherwise choose another folder with --data-dir"
        )
    return (
        f"adopting data folder {data_dir}: {found.describe()}. A mailbox not in the new "
        "mail.cfg keeps its mail but cannot log in until added (nosend user add NAME)"
    )
