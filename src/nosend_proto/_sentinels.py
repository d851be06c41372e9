"""Markers ``next_event()`` returns instead of an event; shared by every engine and role.

One ``NEED_DATA`` serves SMTP and POP3 alike, so code that drives both engines compares
against a single object.
"""

from __future__ import annotations

__all__ = ["Sentinel", "NEED_DATA"]


class Sentinel:
    """Type of the engines' markers such as ``NEED_DATA`` (compare with ``is``)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: ``next_event()`` needs more bytes from the peer: write what the engine gave you
#: (``send()`` results, and for POP3 ``data_to_send()``), then read.
NEED_DATA = Sentinel("NEED_DATA")
