"""Availability as pure functions: working hours in the tenant's zone, DST, grid, buffers, busy time."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from nmc.problems import InvalidField
from nmc.scheduling.availability import (
    BusyIndex,
    JobShape,
    align_up,
    local_to_utc,
    merge,
    open_starts,
    within_working_hours,
    working_intervals,
)
from nmc.scheduling.service import check_ranges, check_weekly_hours

NY = ZoneInfo("America/New_York")
SPRING_FORWARD = date(2026, 3, 8)  # 02:00 EST → 03:00 EDT
FALL_BACK = date(2026, 11, 1)  # 02:00 EDT → 01:00 EST
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
HOUR = JobShape(timedelta(hours=1))
EVERY_DAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def local(day: date, hh: int, mm: int = 0, zone: ZoneInfo = NY, fold: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=zone).replace(fold=fold)


def search(
    weekly: dict[str, Any],
    day: date,
    *,
    shape: JobShape = HOUR,
    busy: list[tuple[datetime, datetime]] | None = None,
    exceptions: dict[date, Any] | None = None,
    earliest: datetime = LONG_AGO,
    zone: ZoneInfo = NY,
    granularity: int = 15,
    days: int = 1,
) -> list[datetime]:
    window_start = local(day, 0, zone=zone)
    window_end = local(day + timedelta(days=days), 0, zone=zone)
    working = working_intervals(weekly, exceptions or {}, zone, day - timedelta(days=1), day + timedelta(days=days))
    return open_starts(
        working=working,
        busy=BusyIndex(busy or []),
        shape=shape,
        window_start=window_start,
        window_end=window_end,
        earliest=earliest,
        zone=zone,
        granularity_minutes=granularity,
    )


def wall(starts: list[datetime], zone: ZoneInfo = NY) -> list[str]:
    return [s.astimezone(zone).strftime("%H:%M%z") for s in starts]


@pytest.mark.parametrize("day", [SPRING_FORWARD, FALL_BACK], ids=["spring-forward", "fall-back"])
def test_a_day_shift_starts_at_8_local_on_both_2026_transitions(day: date) -> None:
    starts = search({"sun": [["08:00", "17:00"]]}, day)
    assert day.weekday() == 6
    assert starts[0] == local(day, 8)
    assert starts[0].astimezone(NY).hour == 8
    assert starts[-1] == local(day, 16)
    assert len(starts) == 33
    # The day before the change, 08:00 local was a different UTC hour: the hours follow the clock.
    assert starts[0].utcoffset() != local(day - timedelta(days=1), 8).utcoffset()


def test_a_night_shift_across_spring_forward_has_no_nonexistent_starts() -> None:
    # Saturday 22:00 → Sunday 06:00 is 7 real hours on 2026-03-08: the clock skips 02:00-02:59.
    starts = search(
        {"sat": [["22:00", "06:00"]]}, SPRING_FORWARD - timedelta(days=1), shape=JobShape(timedelta(minutes=15)), days=2
    )
    assert len(starts) == 7 * 4
    assert len(set(starts)) == len(starts)
    labels = wall(starts)
    assert not [label for label in labels if label.startswith("02:")]
    assert labels[labels.index("01:45-0500") + 1] == "03:00-0400"
    assert starts[1] - starts[0] == timedelta(minutes=15)
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(starts))
    for start in starts:  # every start exists: local → UTC → local comes back unchanged
        back = start.astimezone(NY).replace(tzinfo=None)
        assert local_to_utc(back, NY) == start


def test_a_night_shift_across_fall_back_lists_the_repeated_hour_once_per_real_instant() -> None:
    # Saturday 22:00 → Sunday 06:00 is 9 real hours on 2026-11-01: 01:00-01:59 happens twice.
    starts = search(
        {"sat": [["22:00", "06:00"]]}, FALL_BACK - timedelta(days=1), shape=JobShape(timedelta(minutes=15)), days=2
    )
    assert len(starts) == 9 * 4
    assert len(set(starts)) == len(starts)  # no instant twice
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(starts))
    labels = wall(starts)
    assert labels.count("01:00-0400") == labels.count("01:00-0500") == 1
    assert labels[labels.index("01:45-0400") + 1] == "01:00-0500"


def test_wall_clock_bounds_in_a_gap_or_a_repeated_hour() -> None:
    # 02:30 does not exist on spring-forward day: a shift starting then starts at the jump (03:00 EDT).
    assert local_to_utc(datetime(2026, 3, 8, 2, 30), NY) == local(SPRING_FORWARD, 3)
    # 01:30 happens twice on fall-back day: the first occurrence (EDT).
    assert local_to_utc(datetime(2026, 11, 1, 1, 30), NY).astimezone(NY).utcoffset() == timedelta(hours=-4)
    starts = search({"sun": [["02:30", "05:00"]]}, SPRING_FORWARD)
    assert wall(starts)[0] == "03:00-0400"
    assert wall(starts)[-1] == "04:00-0400"


def test_starts_sit_on_the_local_grid_even_with_a_half_hour_offset() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30: an hourly grid is not a UTC-hourly grid
    day = date(2026, 6, 1)
    starts = search({"mon": [["09:00", "12:00"]]}, day, zone=kolkata, granularity=60)
    assert wall(starts, kolkata) == ["09:00+0530", "10:00+0530", "11:00+0530"]
    assert align_up(local(day, 9, 1, zone=kolkata), kolkata, 60) == local(day, 10, zone=kolkata)
    assert align_up(local(day, 9, zone=kolkata), kolkata, 60) == local(day, 9, zone=kolkata)
    # Hours starting off the grid start at the next grid point.
    assert wall(search({"mon": [["09:10", "11:00"]]}, day, zone=kolkata, granularity=30), kolkata)[0] == "09:30+0530"


def test_busy_time_is_half_open_and_buffers_widen_the_job() -> None:
    day = date(2026, 6, 2)
    weekly = {"tue": [["08:00", "12:00"]]}
    busy = [(local(day, 10), local(day, 11))]
    assert wall(search(weekly, day, busy=busy)) == [
        "08:00-0400",
        "08:15-0400",
        "08:30-0400",
        "08:45-0400",
        "09:00-0400",
        "11:00-0400",
    ]
    buffered = JobShape(timedelta(hours=1), buffer_before=timedelta(minutes=15), buffer_after=timedelta(minutes=30))
    # 08:30 + 1 h + 30 min tail ends at 10:00 (touching is fine); 11:00 needs a 15-minute lead-in from 10:45.
    assert wall(search(weekly, day, busy=busy, shape=buffered)) == ["08:00-0400", "08:15-0400", "08:30-0400"]
    assert buffered.blocked(local(day, 9)) == (local(day, 8, 45), local(day, 10, 30))


def test_minimum_notice_and_exceptions() -> None:
    day = date(2026, 6, 3)
    weekly = {"wed": [["08:00", "12:00"]]}
    assert wall(search(weekly, day, earliest=local(day, 10, 5))) == [
        "10:15-0400",
        "10:30-0400",
        "10:45-0400",
        "11:00-0400",
    ]
    assert search(weekly, day, exceptions={day: []}) == []
    assert wall(search(weekly, day, exceptions={day: [["13:00", "14:00"]]})) == ["13:00-0400"]


def test_touching_ranges_join_so_a_job_may_span_midnight() -> None:
    day = date(2026, 6, 1)  # Monday
    weekly = {"mon": [["22:00", "24:00"]], "tue": [["00:00", "02:00"]]}
    working = working_intervals(weekly, {}, NY, day, day + timedelta(days=1))
    assert working == [(local(day, 22), local(day + timedelta(days=1), 2))]
    assert within_working_hours(working, local(day, 23, 30), local(day + timedelta(days=1), 0, 30))
    assert not within_working_hours(working, local(day, 21, 30), local(day, 22, 30))


def test_merge_and_busy_index() -> None:
    a, b, c = (local(date(2026, 6, 1), h) for h in (9, 10, 11))
    assert merge([(b, c), (a, b)]) == [(a, c)]
    assert merge([(a, c), (a, b)]) == [(a, c)]
    index = BusyIndex([(a, b), (a, b)])
    assert index.intervals == [(a, b)]
    early = a - timedelta(hours=1)
    assert list(index.free_gaps(early, c)) == [(early, a), (b, c)]  # half-open: touching is free
    assert list(index.free_gaps(b, c)) == [(b, c)]
    assert list(index.free_gaps(a + timedelta(minutes=10), b)) == []


def test_hour_ranges_are_checked_before_they_are_stored() -> None:
    assert check_ranges([["13:00", "17:00"], ["00:00", "24:00"], ["22:00", "06:00"]], "f") == [
        ["00:00", "24:00"],
        ["13:00", "17:00"],
        ["22:00", "06:00"],
    ]
    for bad in (["09:00", "09:00"], ["24:00", "08:00"], ["00:00", "00:00"]):
        with pytest.raises(InvalidField) as caught:
            check_ranges([bad], "weekly_hours.mon")
        assert caught.value.field == "weekly_hours.mon"
    with pytest.raises(InvalidField, match="funday"):
        check_weekly_hours({"funday": []})


@pytest.mark.parametrize("seed", range(25))
def test_walking_free_gaps_finds_exactly_the_starts_a_brute_force_check_finds(seed: int) -> None:
    import random

    rng = random.Random(seed)
    day = rng.choice([SPRING_FORWARD, FALL_BACK, date(2026, 6, 7)]) - timedelta(days=1)
    weekly = {d: [["06:00", "20:00"]] if rng.random() < 0.5 else [["22:00", "07:00"]] for d in EVERY_DAY}
    shape = JobShape(
        timedelta(minutes=rng.choice((15, 30, 60, 90))),
        timedelta(minutes=rng.choice((0, 0, 10, 30))),
        timedelta(minutes=rng.choice((0, 15, 45))),
    )
    origin = local(day, 0)
    busy = []
    for _ in range(rng.randrange(0, 40)):
        at = origin + timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
        busy.append((at, at + timedelta(minutes=rng.randrange(5, 180))))
    earliest = origin + timedelta(minutes=rng.randrange(0, 24 * 60))
    granularity = rng.choice((5, 15, 30, 60))
    found = search(weekly, day, shape=shape, busy=busy, earliest=earliest, granularity=granularity, days=2)

    working = working_intervals(weekly, {}, NY, day - timedelta(days=1), day + timedelta(days=2))
    expected = []
    candidate = align_up(local(day, 0), NY, granularity)
    while candidate < local(day + timedelta(days=2), 0):
        blocked_start, blocked_end = shape.blocked(candidate)
        if (
            candidate >= earliest
            and within_working_hours(working, candidate, candidate + shape.duration)
            and not any(b_start < blocked_end and blocked_start < b_end for b_start, b_end in busy)
        ):
            expected.append(candidate.astimezone(UTC))
        candidate = align_up(candidate + timedelta(minutes=granularity), NY, granularity)
    # (in UTC: aware datetimes in a repeated hour never compare equal across zones, PEP 495)
    assert [s.astimezone(UTC) for s in found] == expected
    assert expected or not weekly
