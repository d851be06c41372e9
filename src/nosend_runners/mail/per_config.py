"""Objects the runners derive from one loaded ``mail.cfg`` and keep for as long as it is
current.

Owns: :class:`PerConfig`, a cache keyed by the identity of a loaded
:class:`nosend_store.config.Config`: the default mail backend, and delivery's Maildir and
queue objects (their checked paths and name generators), made once per configuration
rather than per message. A reload builds a new ``Config``, so what was made from the old
one is never used with the new one; the last few configurations are kept, since a session
keeps the configuration it started with. Must not: hold a lock (a ``fork`` while another
thread held it would leave the child stuck), or keep state in the ``Config`` itself (a
frozen value of the store).

Safe from several threads without a lock: racing first calls may each make an object,
and all of them get the one that was stored (``dict.setdefault`` is atomic).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from nosend_store.config import Config

__all__ = ["PerConfig", "KEEP"]

T = TypeVar("T")

#: Configurations kept per cache: the current one and a few that sessions started with
#: before a reload may still use (an older one just gets fresh objects on its next use).
KEEP = 4


class PerConfig(Generic[T]):
    """``cache.get(config)`` is ``make(config)``, made on first use for each ``config``."""

    __slots__ = ("_make", "_entries")

    def __init__(self, make: Callable[[Config], T]) -> None:
        self._make = make
        # id(config) -> (config, object). Holding the Config keeps its id from being
        # reused by another object while the entry lives.
        self._entries: dict[int, tuple[Config, T]] = {}

    def get(self, config: Config) -> T:
        """The object for ``config``, made by ``make(config)`` on first use."""
        entries = self._entries
        entry = entries.get(id(config))
        if entry is not None and entry[0] is config:
            return entry[1]
        entry = entries.setdefault(id(config), (config, self._make(config)))
        if len(entries) > KEEP:
            self._evict_oldest(keep=config)
        return entry[1]

    def _evict_oldest(self, keep: Config) -> None:
        entries = self._entries
        try:
            oldest = next(iter(entries))
        except (StopIteration, RuntimeError):  # emptied or resized by another thread
            return
        if oldest != id(keep):
            entries.pop(oldest, None)

    def forget(self, config: Config) -> None:
        """Drop what was made for ``config`` (the next ``get`` makes it afresh)."""
        self._entries.pop(id(config), None)
