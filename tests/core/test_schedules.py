"""Cron schedules: the rule core/schedules.py states, on the days clocks change, in two
zones; the macros; and the errors a user gets."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from core.schedules import Schedule, ScheduleError, schedule

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def runs(expression: str, tz: str, after: str, n: int) -> list[str]:
    """The next `n` expected runs after a local time, as local ISO 8601 with offsets."""
    zone = ZoneInfo(tz)
    at = datetime.fromisoformat(after).replace(tzinfo=zone).timestamp()
    s = Schedule(expression, tz)
    out = []
    for _ in range(n):
        at = s.next_after(at)
        out.append(datetime.fromtimestamp(at, zone).isoformat())
    return out


@pytest.mark.parametrize(
    ("tz", "day", "expected"),
    [
        # Spring forward: 02:30 does not exist; the run is expected right after the change.
        (BERLIN, "2026-03-29", "2026-03-29T03:00:00+02:00"),
        (NEW_YORK, "2026-03-08", "2026-03-08T03:00:00-04:00"),
    ],
)
def test_a_run_in_the_skipped_hour_is_expected_right_after_the_change(tz, day, expected):
    before, after = runs("30 2 * * *", tz, f"{day}T00:00:00", 2)
    assert before == expected
    assert after.startswith(f"{day[:8]}{int(day[8:]) + 1:02d}T02:30:00")  # then as usual


@pytest.mark.parametrize(
    ("tz", "day", "first", "next_day"),
    [
        # Fall back: 01:30 (New York) and 02:30 (Berlin) exist twice; expected once, at
        # the first, then the next day.
        (BERLIN, "2026-10-25", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"),
        (NEW_YORK, "2026-11-01", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"),
    ],
)
def test_a_run_in_the_repeated_hour_is_expected_once(tz, day, first, next_day):
    hour = first[11:13]
    assert runs(f"30 {int(hour)} * * *", tz, f"{day}T00:00:00", 2) == [first, next_day]


def test_frequent_jobs_follow_the_clock_through_both_changes():
    # Fall back: the repeated hour is run through twice.
    assert runs("*/30 * * * *", BERLIN, "2026-10-25T01:45:00", 5) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]  # fmt: skip
    # Spring forward: the skipped hour is skipped.
    assert runs("*/30 * * * *", BERLIN, "2026-03-29T01:15:00", 3) == [
        "2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("macro", "fields"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
     ("@weekly", "0 0 * * 0"), ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"),
     ("@annually", "0 0 1 1 *")],
)  # fmt: skip
def test_macros_are_their_cron_lines(macro, fields):
    assert runs(macro, NEW_YORK, "2026-06-15T12:34:00", 3) == runs(
        fields, NEW_YORK, "2026-06-15T12:34:00", 3
    )


def test_the_next_run_is_strictly_after_and_a_year_away_is_fine():
    at = datetime(2026, 1, 1, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    assert Schedule("@yearly").next_after(at) == at + 365 * 86400
    assert (
        Schedule("0 0 29 2 *").next_after(at)
        == datetime(2028, 2, 29, tzinfo=ZoneInfo("UTC")).timestamp()
    )  # a leap day: two years on


def test_the_shortest_gap_is_what_the_plan_floor_is_held_against():
    assert Schedule("*/5 * * * *").shortest_gap(0) == 300
    assert Schedule("0 9,17 * * MON-FRI", BERLIN).shortest_gap(0) == 8 * 3600
    assert Schedule("@weekly").shortest_gap(0) == 7 * 86400


@pytest.mark.parametrize(
    ("expression", "tz", "field", "says"),
    [
        ("* * * *", "UTC", "schedule", "not a cron expression"),
        ("61 * * * *", "UTC", "schedule", "not a cron expression"),
        ("@sometimes", "UTC", "schedule", "not a cron expression"),
        ("0 3 * * *", "Mars/Olympus", "tz", "IANA time zone"),
        ("0 3 * * *", "", "tz", "IANA time zone"),
        ("0 3 * * *", "../../etc/passwd", "tz", "IANA time zone"),
        ("0 " * 150, "UTC", "schedule", "at most 200 characters"),
    ],
)
def test_what_cannot_be_used_is_refused_naming_the_field(expression, tz, field, says):
    with pytest.raises(ScheduleError, match=says) as caught:
        Schedule(expression, tz)
    assert caught.value.field == field


def test_one_object_per_expression_and_zone():
    assert schedule("@daily", BERLIN) is schedule("@daily", BERLIN)
    assert schedule("@daily", BERLIN) == Schedule("@daily", BERLIN)
    assert schedule("@daily", BERLIN) != schedule("@daily", NEW_YORK)
