"""Numbers for people: sizes, durations, money and rates on a terminal or in a log line.

Private to ``nosend_link``: the progress renderers and the dry run share it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def size(nbytes: float) -> str:
    """``512 B``, ``12.3 kB``, ``4.56 MB``, ``1.20 GB`` (powers of 1000, as bills count)."""
    if nbytes < 1000:
        return f"{int(nbytes)} B"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        value = nbytes / scale
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}" if unit == "kB" else f"{value:.2f} {unit}"
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """``45 s``, ``3 min 05 s``, ``1 h 02 min``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def rate(bytes_per_second: float) -> str:
    """``300 B/s``, ``12.5 kB/s``."""
    return f"{size(bytes_per_second)}/s"


def money(amount: Decimal) -> str:
    """An amount to the cent (the ledger keeps more; a person reads cents)."""
    return str(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
