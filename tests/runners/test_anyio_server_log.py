"""Session log lines: one line per event, secrets redacted, peer bytes cannot forge lines."""

from __future__ import annotations

import logging
import string
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nosend_runners.serve.log import LINE_FORMAT, LineFormatter, SessionLog, format_fields

_values = st.one_of(st.text(max_size=300), st.binary(max_size=50), st.integers(), st.none())


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=20), _values, max_size=6))
def test_a_formatted_line_is_always_one_line(fields: dict[str, object]) -> None:
    line = format_fields(fields)
    assert "\n" not in line and "\r" not in line
    assert all(ch.isprintable() or ch == " " for ch in line if ch not in "\t")


@settings(max_examples=200, deadline=None)
# 12+ letters/digits: longer than any alphanumeric run in the fixed part of the line.
@given(secret=st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=40))
def test_secret_keys_never_show_their_value(secret: str) -> None:
    line = format_fields(
        {"password": secret, "sasl_response": secret, "shared_secret": secret, "user": "bob"}
    )
    assert secret not in line
    assert line.count("[redacted]") == 3 and "user=bob" in line


def test_long_values_are_cut_and_odd_values_quoted() -> None:
    line = format_fields({"subject": "x" * 500, "helo": 'evil\r\n250 forged "ok"', "n": 3})
    assert "x" * 200 + "..." in line and "x" * 201 not in line
    assert 'helo="evil\\r\\n250 forged \\"ok\\""' in line
    assert line.endswith("n=3")
    assert format_fields({"none": None, "a": "b"}) == "a=b"


def test_session_log_writes_bound_fields_first(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nosend.session")
    log = SessionLog(service="pop3", session="abcd", peer="10.0.0.1:99")
    log.event("connect")
    log.bind(user="skipper")
    log.warning("auth_failed", mechanism="PLAIN")
    first, second = caplog.records
    assert first.getMessage() == "service=pop3 session=abcd peer=10.0.0.1:99 event=connect"
    assert second.getMessage() == (
        "service=pop3 session=abcd peer=10.0.0.1:99 user=skipper event=auth_failed mechanism=PLAIN"
    )
    assert second.levelno == logging.WARNING


@settings(max_examples=100, deadline=None)
@given(
    created=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]),
    message=st.text(max_size=80),
)
def test_line_formatter_writes_what_the_standard_formatter_writes(
    created: float, level: int, message: str
) -> None:
    record = logging.LogRecord("nosend.session", level, __file__, 1, "%s", (message,), None)
    record.created, record.msecs = created, (created - int(created)) * 1000 // 1
    fast, standard = LineFormatter(), logging.Formatter(LINE_FORMAT)
    assert fast.format(record) == standard.format(record)
    # The cached second must not leak into a record of another second.
    later = logging.LogRecord("nosend.server", level, __file__, 1, "x", None, None)
    later.created, later.msecs = created + 1.5, 500.0
    assert fast.format(later) == standard.format(later)


def test_line_formatter_keeps_tracebacks() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("n", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    text = LineFormatter().format(record)
    assert text.splitlines()[0].endswith("n ERROR failed")
    assert "ValueError: boom" in text


def test_percent_signs_in_values_are_written_as_they_are(caplog: pytest.LogCaptureFixture) -> None:
    # The line goes to the logger as the message itself: a peer's "%s" must not be
    # taken for a format directive.
    caplog.set_level(logging.INFO, logger="nosend.session")
    SessionLog(service="smtp").event("helo", helo="%s%d%(x)s", size=12, ok=True)
    assert (
        caplog.records[-1].getMessage()
        == 'service=smtp event=helo helo="%s%d%(x)s" size=12 ok=True'
    )
