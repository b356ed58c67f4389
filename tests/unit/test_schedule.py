"""The day a scheduled pipeline run works on."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from riskloop.errors import ConfigError
from riskloop.schedule import resolve_day

PLACEHOLDER = "{{$.pipeline_job_schedule_time_utc}}"


def test_an_explicit_day_wins() -> None:
    assert resolve_day("2026-03-04", "2026-05-01T02:00:00Z") == date(2026, 3, 4)


def test_the_day_before_the_scheduled_time() -> None:
    assert resolve_day("", "2026-05-01T02:00:00Z") == date(2026, 4, 30)
    assert resolve_day("", "2026-05-01T00:00:00+00:00") == date(2026, 4, 30)
    # a schedule in another offset is read in UTC: 01:00 at +02:00 is still the 30th, 23:00 UTC
    assert resolve_day("", "2026-05-01T01:00:00+02:00") == date(2026, 4, 29)
    assert resolve_day("", "2026-05-01T02:00:00") == date(2026, 4, 30)  # naive means UTC


def test_an_unfilled_placeholder_means_now() -> None:
    now = datetime(2026, 7, 9, 3, tzinfo=UTC)
    assert resolve_day("", PLACEHOLDER, now=now) == date(2026, 7, 8)
    assert resolve_day(" ", "", now=now) == date(2026, 7, 8)


@pytest.mark.parametrize(
    ("day", "stamp", "message"),
    [
        ("2026-13-01", "", "not an ISO date"),
        ("yesterday", "", "not an ISO date"),
        ("", "next tuesday", "not an RFC 3339 timestamp"),
    ],
)
def test_bad_values_say_how_to_fix(day: str, stamp: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        resolve_day(day, stamp)
    assert err.value.fix
