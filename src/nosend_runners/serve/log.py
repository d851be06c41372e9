"""One log line per session event: who, what, result; never a secret.

Owns: formatting session events as single ``key=value`` lines on the ``nosend.session``
logger, with the session's fixed fields (service, session id, peer, user) on every line.
Must not: log message bodies, passwords, SASL responses or anything a caller marks secret;
DESIGN.md invariant 5 says secrets never reach a log, so redaction is by field name here
rather than trusted to every call site.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from functools import lru_cache

__all__ = ["SessionLog", "LineFormatter", "LINE_FORMAT", "format_fields", "SECRET_FIELD"]

#: What every log line looks like (``LineFormatter`` writes exactly this, faster).
LINE_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

#: Field names whose values are never written, whatever the caller passes.
SECRET_FIELD = re.compile(r"pass|secret|token|credential|response|auth_data|key", re.IGNORECASE)

_MAX_VALUE = 200
_BARE = re.compile(r"[A-Za-z0-9_.:@<>/+\-\[\]]+")
_NOT_KEY = re.compile(r"[^A-Za-z0-9_.\-]")


def _quote(value: object) -> str:
    if type(value) is int:
        return str(value)  # digits and a sign: always bare, never long
    text = value if type(value) is str else str(value)
    if len(text) > _MAX_VALUE:
        text = text[:_MAX_VALUE] + "..."
    if text and _BARE.fullmatch(text):
        return text
    # repr-style escaping keeps a peer's CR/LF or control bytes from forging log lines.
    escaped = text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped}"'


@lru_cache(maxsize=256)
def _key_part(key: str) -> tuple[str, bool]:
    """``"key="`` as written, and whether the key names a secret (keys are few)."""
    return f"{_NOT_KEY.sub('_', key) or '_'}=", SECRET_FIELD.search(key) is not None


def format_fields(fields: Mapping[str, object]) -> str:
    """Render ``fields`` as ``key=value`` pairs, redacting secret-looking keys.

    ``None`` values are left out so optional fields cost nothing on the line.
    """
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        prefix, secret = _key_part(key)
        parts.append(prefix + ("[redacted]" if secret else _quote(value)))
    return " ".join(parts)


class SessionLog:
    """A small structured logger adapter that sessions and runners share.

    ``event("rcpt", rcpt="a@b", result="250")`` writes one line carrying the session's
    bound fields first. ``bind(user=...)`` adds fields to every later line of this
    session (for instance once AUTH succeeded).
    """

    __slots__ = ("_logger", "_fields", "_prefix")

    def __init__(self, logger: logging.Logger | None = None, **fields: object) -> None:
        self._logger = logger if logger is not None else logging.getLogger("nosend.session")
        self._fields: dict[str, object] = dict(fields)
        self._prefix: str | None = None  # the bound fields, rendered once per change

    @property
    def fields(self) -> Mapping[str, object]:
        """The fields written on every line (read-only view)."""
        return dict(self._fields)

    def bind(self, **fields: object) -> None:
        """Add or replace fields written on every later line of this session."""
        self._fields.update(fields)
        self._prefix = None

    def event(self, name: str, *, level: int = logging.INFO, **fields: object) -> None:
        """Log one session event ``name`` with ``fields`` (secrets redacted by key)."""
        if not self._logger.isEnabledFor(level):
            return
        if fields.keys() & self._fields.keys():
            # A call-site field replaces a bound one in place: render the merged set.
            line = format_fields({**self._fields, "event": name, **fields})
        else:
            prefix = self._prefix
            if prefix is None:
                prefix = self._prefix = format_fields(self._fields)
            rest = format_fields({"event": name, **fields})
            line = f"{prefix} {rest}" if prefix else rest
        # No arguments: the line is the message as it stands, never %-formatted.
        self._logger.log(level, line)

    def warning(self, name: str, **fields: object) -> None:
        """Log a session event at WARNING level."""
        self.event(name, level=logging.WARNING, **fields)

    def error(self, name: str, **fields: object) -> None:
        """Log a session event at ERROR level."""
        self.event(name, level=logging.ERROR, **fields)


class LineFormatter(logging.Formatter):
    """``LINE_FORMAT`` with the date and time text made once per second.

    A busy server writes several lines per session; turning the timestamp into text
    (``localtime`` + ``strftime``) was the dearest part of each. Records with exception
    or stack information go through the standard formatter unchanged.
    """

    def __init__(self) -> None:
        super().__init__(LINE_FORMAT)
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line (the standard way when it carries a traceback)."""
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        message = record.getMessage()
        return f"{self._stamp},{int(record.msecs):03d} {record.name} {record.levelname} {message}"
