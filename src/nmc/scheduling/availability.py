"""Open starts for a job on a resource: working hours in the tenant's zone, minus what is taken.

Pure functions, no I/O: the service loads hours, exceptions and busy intervals, these decide.

Working hours are wall-clock ranges per weekday (`{"mon": [["08:00", "17:00"]]}`) in the tenant's
IANA zone; a range whose end is not after its start runs overnight into the next day, and a range
belongs to the day it starts on (a date exception replaces the ranges starting that day). Ranges are
turned into real instants day by day, so a DST change moves them with the clock: 08:00 is 08:00 local
on both sides of a transition. A bound that falls in a spring-forward gap moves to the jump; one that
falls in the repeated hour of a fall-back takes its first occurrence.

Candidate starts step through real time and sit on wall-clock multiples of the granularity (counted
from local midnight). Stepping in real time is what keeps a night shift across a transition honest:
no start at a time that does not exist, and the repeated hour yields its two distinct instants once
each (01:00 EDT and then 01:00 EST), never the same instant twice.

A start is open when the job lies inside one merged working interval, it is not before the window,
the minimum notice or the window's end, and the range it blocks — the job plus the job type's buffers,
half-open — overlaps nothing busy (bookings and live holds, whose stored ranges carry their own
buffers, and busy blocks). That is the same rule the database's exclusion constraint applies.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from nmc.weekly_hours import MINUTES_PER_DAY, WEEKDAYS, clock_minutes

Interval = tuple[datetime, datetime]  # aware, half-open [start, end)


@dataclass(frozen=True)
class JobShape:
    duration: timedelta
    buffer_before: timedelta = timedelta(0)
    buffer_after: timedelta = timedelta(0)

    def blocked(self, start: datetime) -> Interval:
        """The range a job starting at `start` takes on its resource (buffers included)."""
        return start - self.buffer_before, start + self.duration + self.buffer_after

    @property
    def reach(self) -> timedelta:
        """How far past a window's end the busy intervals that matter can start."""
        return self.duration + self.buffer_after


def local_to_utc(naive: datetime, zone: ZoneInfo) -> datetime:
    """A local wall-clock time as a real instant (gap → the jump, repeated hour → first occurrence)."""
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    other = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return _transition_between(min(first, other), max(first, other), zone)


def _transition_between(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (before, after] carrying `after`'s UTC offset (zone changes are on the minute)."""
    target = after.astimezone(zone).utcoffset()
    low, high = 0, int((after - before).total_seconds() // 60)
    while low < high:
        middle = (low + high) // 2
        if (before + timedelta(minutes=middle)).astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle + 1
    return before + timedelta(minutes=low)


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint union; touching intervals join (22:00-24:00 + 00:00-06:00 is one night)."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def day_ranges(day: date, weekly: Mapping[str, Any], exceptions: Mapping[date, Any]) -> Sequence[Sequence[str]]:
    if day in exceptions:
        ranges: Sequence[Sequence[str]] = exceptions[day]
        return ranges
    return weekly.get(WEEKDAYS[day.weekday()], ())  # type: ignore[no-any-return]


def working_intervals(
    weekly: Mapping[str, Any],
    exceptions: Mapping[date, Any],
    zone: ZoneInfo,
    first_day: date,
    last_day: date,
) -> list[Interval]:
    """The resource's working time, as merged real intervals, for ranges starting on these local days."""
    found: list[Interval] = []
    day = first_day
    while day <= last_day:
        midnight = datetime.combine(day, time())
        for start_text, end_text in day_ranges(day, weekly, exceptions):
            start, end = clock_minutes(start_text), clock_minutes(end_text)
            if end <= start:  # overnight: ends on the next day
                end += MINUTES_PER_DAY
            found.append(
                (
                    local_to_utc(midnight + timedelta(minutes=start), zone),
                    local_to_utc(midnight + timedelta(minutes=end), zone),
                )
            )
        day += timedelta(days=1)
    return merge(found)


def local_days(start: datetime, end: datetime, zone: ZoneInfo) -> tuple[date, date]:
    """The local days whose ranges can cover [start, end): the day before (overnight shifts) to end's day."""
    return start.astimezone(zone).date() - timedelta(days=1), end.astimezone(zone).date()


def align_up(instant: datetime, zone: ZoneInfo, granularity_minutes: int) -> datetime:
    """The first instant at or after `instant` whose local wall clock is on the granularity grid."""
    step = timedelta(minutes=granularity_minutes)
    for _ in range(8):  # one pass normally; a DST jump or a grid that does not divide a day needs another
        local = instant.astimezone(zone)
        excess = timedelta(
            minutes=(local.hour * 60 + local.minute) % granularity_minutes,
            seconds=local.second,
            microseconds=local.microsecond,
        )
        if not excess:
            return instant
        instant += step - excess
    return instant


class BusyIndex:
    """Merged busy intervals, and the free gaps between them (found by bisection)."""

    def __init__(self, intervals: Iterable[Interval]) -> None:
        self.intervals = merge(intervals)
        self._starts = [start for start, _ in self.intervals]
        self._ends = [end for _, end in self.intervals]  # increasing too: the intervals are disjoint

    def free_gaps(self, start: datetime, end: datetime) -> Iterator[Interval]:
        """The maximal free intervals inside [start, end)."""
        cursor = start
        for index in range(bisect_right(self._ends, start), len(self.intervals)):
            busy_start, busy_end = self.intervals[index]
            if busy_start >= end:
                break
            if busy_start > cursor:
                yield cursor, busy_start
            cursor = max(cursor, busy_end)
        if cursor < end:
            yield cursor, end


def open_starts(
    *,
    working: Sequence[Interval],
    busy: BusyIndex,
    shape: JobShape,
    window_start: datetime,
    window_end: datetime,
    earliest: datetime,
    zone: ZoneInfo,
    granularity_minutes: int,
) -> list[datetime]:
    """Every open start in [window_start, window_end), in order.

    Walks the free gaps, not every candidate: a start `s` fits a gap [g0, g1) when its blocked range
    [s - buffer_before, s + duration + buffer_after) lies inside it, so the starts of a gap are the grid
    points of [g0 + buffer_before, g1 - duration - buffer_after].
    """
    step = timedelta(minutes=granularity_minutes)
    lead, tail = shape.buffer_before, shape.duration + shape.buffer_after
    found: list[datetime] = []
    for work_start, work_end in working:
        first = max(work_start, window_start, earliest)
        last = work_end - shape.duration  # the job fits the working interval
        if first > last:
            continue
        for gap_start, gap_end in busy.free_gaps(first - lead, last + tail):
            earliest_start = max(first, gap_start + lead)
            latest = min(last, gap_end - tail)
            if earliest_start > latest:  # too short for the job: most gaps of a busy calendar, no alignment needed
                continue
            start = align_up(earliest_start, zone, granularity_minutes)
            while start <= latest and start < window_end:
                found.append(start)
                start = align_up(start + step, zone, granularity_minutes)
    return found


def within_working_hours(working: Sequence[Interval], start: datetime, end: datetime) -> bool:
    """Does the job [start, end) lie inside one working interval?"""
    return any(work_start <= start and end <= work_end for work_start, work_end in working)
