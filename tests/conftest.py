"""Shared test fixtures.

``require_tool`` is how interop tests find real third-party programs: on a developer's
machine a missing program skips the test, but under CI (``CI=true``) it fails, because
``.ci/run`` installs every program and a green run must not hide a skipped interop test.

Hypothesis profiles are registered and loaded here, before any test module is imported
(``NOSEND_HYPOTHESIS_PROFILE=deep`` for at least 10,000 examples per fuzz property; see
``tests/fuzz/profiles.py``). Under any profile but ``default`` the run ends with a table
of how many examples each property ran.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.fuzz.profiles import PropertyCounter, register_profiles

HYPOTHESIS_PROFILE = register_profiles()
_COUNTER = PropertyCounter()


def require_tool(name: str) -> str:
    """Return the path of program ``name``, or skip (locally) / fail (under CI)."""
    path = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed; .ci/run must install it")
    pytest.skip(f"{name} is not installed")


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Note what hypothesis reports for each property (innermost wrapper, so hypothesis's
    own statistics collector is already in place and keeps getting its report)."""
    with _COUNTER.collecting(item.nodeid):
        yield


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print examples per property when a non-default profile ran (CI's deep fuzz step)."""
    if HYPOTHESIS_PROFILE == "default":
        return
    terminalreporter.section(f"hypothesis profile {HYPOTHESIS_PROFILE}: examples per property")
    for line in _COUNTER.table():
        terminalreporter.write_line(line)
