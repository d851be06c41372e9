"""The deep profile's helper and the examples table (tests/fuzz/profiles.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.profiles import (
    DEEP_MIN_EXAMPLES,
    PROFILE_ENV,
    PropertyCounter,
    _run_from_statistics,
    fuzz_settings,
)


def test_default_keeps_each_count_and_deep_raises_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert fuzz_settings(150, deadline=None).max_examples == 150
    monkeypatch.setenv(PROFILE_ENV, "deep")
    deep = fuzz_settings(150, deadline=None, stateful_step_count=25)
    assert deep.max_examples == DEEP_MIN_EXAMPLES >= 10_000
    assert deep.stateful_step_count == 25 and deep.deadline is None
    assert HealthCheck.too_slow in deep.suppress_health_check
    assert fuzz_settings(DEEP_MIN_EXAMPLES + 1).max_examples == DEEP_MIN_EXAMPLES + 1


def test_no_profile_fails_an_example_for_taking_long() -> None:
    # Hypothesis's own default would fail an example over 200 ms: on a loaded CI machine
    # that is chance, not a finding.
    for name in ("default", "deep"):
        assert settings.get_profile(name).deadline is None
    assert settings.default is not None and settings.default.deadline is None


def test_statistics_become_a_table_row() -> None:
    stats = {
        "generate-phase": {
            "test-cases": [{"status": "valid"}] * 3 + [{"status": "invalid"}],
        },
        "shrink-phase": {"test-cases": [{"status": "interesting"}]},
        "stopped-because": "settings.max_examples=3",
    }
    run = _run_from_statistics("tests/x.py::test_y", stats, 1.5)
    assert (run.passing, run.invalid, run.failing) == (3, 1, 1)
    counter = PropertyCounter()
    counter.runs.append(run)
    table = counter.table()
    assert "tests/x.py::test_y" in table[1] and "settings.max_examples=3" in table[1]
    assert table[-1] == "1 properties, 2 s, fewest passing 3"
