"""Hypothesis settings profiles for the whole test suite, and the per-property counts.

Owns: the profile names (``default`` and ``deep``), the environment variable that picks one
(``NOSEND_HYPOTHESIS_PROFILE``), ``fuzz_settings`` (what every fuzz property decorates
itself with), and the table of examples run per property that a ``deep`` run prints.
Must not: change what a property asserts, or make the default run longer than the counts
each test asks for.

Why a helper and not only a profile: a test's own ``@settings(max_examples=n)`` overrides
whatever profile is loaded, so a profile alone cannot raise a property that names its own
count. ``fuzz_settings(n)`` returns ``max(n, profile minimum)`` examples: the default run
keeps every test's count, and ``deep`` raises every fuzz property to at least 10,000.
Hypothesis tests that name no count at all take the loaded profile's ``max_examples``
directly (100 by default, 10,000 under ``deep``).

Hypothesis has no time budget for a property, only an example count; the bound on a deep
run is the ``timeout`` around it in ``.ci/run`` (see ``tests/fuzz/README.md``). Neither
profile has a per-example ``deadline``: no test asserts how long something took.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings

#: The environment variable that selects a profile (unset: ``default``).
PROFILE_ENV = "NOSEND_HYPOTHESIS_PROFILE"
#: The fewest examples a fuzz property runs under the ``deep`` profile.
DEEP_MIN_EXAMPLES = 10_000

_MINIMUM = {"default": 0, "deep": DEEP_MIN_EXAMPLES}


def register_profiles() -> str:
    """Register ``default`` and ``deep``, load the profile the environment names, return
    its name.

    Called from ``tests/conftest.py`` before any test module is imported, so settings
    objects built at import time already inherit from the loaded profile.
    """
    # Hypothesis's own default fails an example that takes over 200 ms (``deadline``), and
    # its too_slow health check then allows only 1 s to generate the first ten inputs: a
    # timed assertion, which a loaded CI machine can fail by chance. (Hypothesis would load
    # its own "ci" profile without a deadline under CI=true, but ``load_profile`` below
    # replaces it.) With ``deadline=None`` too_slow allows 30 s: it still catches a strategy
    # that is really too slow. Everything else stays hypothesis's default.
    settings.register_profile("default", parent=settings.get_profile("default"), deadline=None)
    settings.register_profile(
        "deep",
        max_examples=DEEP_MIN_EXAMPLES,
        deadline=None,
        # 10,000 examples of a slow property are the point of this profile, not a fault.
        suppress_health_check=[HealthCheck.too_slow],
        # A failure in a long run must be reproducible from the log alone.
        print_blob=True,
    )
    name = os.environ.get(PROFILE_ENV, "default") or "default"
    if name not in _MINIMUM:
        raise ValueError(f"{PROFILE_ENV}={name!r}: known profiles are {sorted(_MINIMUM)}")
    settings.load_profile(name)
    return name


def current_profile() -> str:
    """The profile the environment selects (what ``register_profiles`` loaded)."""
    return os.environ.get(PROFILE_ENV, "default") or "default"


def fuzz_settings(max_examples: int, **kwargs: Any) -> settings:
    """Settings for one fuzz property: its own count, raised to the profile's minimum.

    ``kwargs`` are any other ``hypothesis.settings`` arguments (``deadline``,
    ``stateful_step_count``...). Under ``deep`` the too_slow health check is always
    suppressed, since slowness per example is expected there.
    """
    minimum = _MINIMUM.get(current_profile(), 0)
    if minimum:
        suppressed = set(kwargs.pop("suppress_health_check", ())) | {HealthCheck.too_slow}
        kwargs["suppress_health_check"] = sorted(suppressed, key=lambda h: h.value)
    return settings(max_examples=max(max_examples, minimum), **kwargs)


# -- counting what each property ran -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PropertyRun:
    """What hypothesis reported for one property: examples per status, time, why it ended."""

    nodeid: str
    passing: int
    invalid: int
    failing: int
    seconds: float
    stopped_because: str


def _run_from_statistics(nodeid: str, stats: dict[str, Any], seconds: float) -> PropertyRun:
    passing = invalid = failing = 0
    for key, phase in stats.items():
        if not key.endswith("-phase") or not isinstance(phase, dict):
            continue
        for case in phase.get("test-cases", []):
            status = case.get("status")
            if status == "valid":
                passing += 1
            elif status == "interesting":
                failing += 1
            else:
                invalid += 1
    stopped = str(stats.get("stopped-because", "")).replace("\n", " ")
    return PropertyRun(nodeid, passing, invalid, failing, seconds, stopped)


class PropertyCounter:
    """Collects a ``PropertyRun`` per hypothesis test through hypothesis's own statistics
    collector, and renders them as a table."""

    def __init__(self) -> None:
        self.runs: list[PropertyRun] = []

    @contextmanager
    def collecting(self, nodeid: str) -> Iterator[None]:
        """Wrap one test call: note the statistics hypothesis reports for it.

        The pytest plugin of hypothesis installs a collector of its own around the call;
        ours passes the statistics on to it, so ``--hypothesis-show-statistics`` keeps
        working.
        """
        from hypothesis.statistics import collector  # noqa: PLC0415

        outer: Callable[[Any], None] | None = collector.value
        started = time.monotonic()

        def note(stats: Any) -> None:
            self.runs.append(_run_from_statistics(nodeid, stats, time.monotonic() - started))
            if outer is not None:
                outer(stats)

        with collector.with_value(note):
            yield

    def table(self) -> list[str]:
        """One line per property: examples run, seconds, and why hypothesis stopped."""
        if not self.runs:
            return ["no hypothesis property ran"]
        width = max(len(r.nodeid) for r in self.runs)
        lines = [f"{'property':<{width}}  {'passing':>8} {'invalid':>8} {'failing':>8} "
                 f"{'seconds':>8}  stopped because"]  # fmt: skip
        for r in sorted(self.runs, key=lambda r: r.nodeid):
            lines.append(
                f"{r.nodeid:<{width}}  {r.passing:>8} {r.invalid:>8} {r.failing:>8} "
                f"{r.seconds:>8.1f}  {r.stopped_because}"
            )
        total = sum(r.seconds for r in self.runs)
        fewest = min(r.passing for r in self.runs)
        lines.append(f"{len(self.runs)} properties, {total:.0f} s, fewest passing {fewest}")
        return lines
