import re
from datetime import timedelta

import pytest

from tidegate.durations import (
    DURATION_PATTERN,
    MAX_DURATION,
    MAX_DURATION_TEXT,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("500ms", timedelta(milliseconds=500)),
        ("10s", timedelta(seconds=10)),
        ("1m30s", timedelta(minutes=1, seconds=30)),
        ("2h", timedelta(hours=2)),
        ("1h2m3s", timedelta(hours=1, minutes=2, seconds=3)),
        ("1.5h", timedelta(minutes=90)),
        ("250us", timedelta(microseconds=250)),
        ("1m500ms", timedelta(minutes=1, milliseconds=500)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert re.fullmatch(DURATION_PATTERN, text)


@pytest.mark.parametrize("text", ["", "10", "1d", "s", "-1s", "1 m", "1m 30s", "1.s", "ms", "1M"])
def test_rejects(text: str) -> None:
    assert not re.fullmatch(DURATION_PATTERN, text)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(microseconds=5), "5us"),
        (timedelta(seconds=10), "10s"),
        (timedelta(minutes=1, seconds=30), "1m30s"),
        (timedelta(hours=2), "2h0m0s"),
        (timedelta(seconds=1.5), "1.5s"),
    ],
)
def test_format(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_format_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_duration(timedelta(seconds=-1))


@pytest.mark.parametrize("text", ["169h", "10081m", "99999999999999999999999999999h", "1e3h"])
def test_nothing_longer_than_the_maximum_is_parsed(text: str) -> None:
    """Not OverflowError (a timedelta cannot hold 10**29 hours): a ValueError, as for any
    duration that is refused."""
    with pytest.raises(ValueError):
        parse_duration(text)
    assert parse_duration(MAX_DURATION_TEXT) == MAX_DURATION
