"""Shared test fixtures.

``require_tool`` is how interop tests find real third-party programs: on a developer's
machine a missing program skips the test, but under CI (``CI=true``) it fails, because
``.ci/run`` installs every program and a green run must not hide a skipped interop test.
"""

from __future__ import annotations

import os
import shutil

import pytest


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
