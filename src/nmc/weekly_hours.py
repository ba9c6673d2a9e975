"""Weekly hours — a tenant's business hours, a resource's working hours — in one shape and one rule.

`{"mon": [["08:00", "17:00"]], ...}`: local clock times in the owner's zone. A range whose end is
not after its start runs overnight into the next day (`["22:00", "02:00"]`); `"24:00"` ends at
midnight. Identity, scheduling and conversations all validate and read hours here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import msgspec

# A bound of a weekly-hours range: a local wall-clock time, or "24:00" for the end of the day.
HoursBound = Annotated[
    str, msgspec.Meta(pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$", description="Local wall-clock time HH:MM")
]
# The API's shape of weekly hours (checked further by `check_weekly`).
WeeklyHours = dict[str, list[tuple[HoursBound, HoursBound]]]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60


class InvalidHours(ValueError):
    """Hours we cannot use; `where` names the field (`weekly_hours.mon`, `business_hours`, ...)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


def clock_minutes(value: str) -> int:
    """`"08:30"` → 510; `"24:00"` → 1440."""
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def check_ranges(ranges: Sequence[Sequence[str]], where: str) -> list[list[str]]:
    """The ranges, sorted; `InvalidHours` for one that starts at 24:00 or ends where it starts."""
    checked: list[list[str]] = []
    for start, end in ranges:
        if start == "24:00":
            raise InvalidHours(where, f"{start}-{end}: a range cannot start at 24:00")
        if clock_minutes(start) == clock_minutes(end):
            raise InvalidHours(where, f"{start}-{end}: a range must not end where it starts")
        checked.append([start, end])
    return sorted(checked)


def check_weekly(hours: Mapping[Any, Sequence[Sequence[str]]], where: str) -> dict[str, list[list[str]]]:
    """Every weekday's ranges checked (a missing day: closed); `InvalidHours` names the first problem."""
    unknown = set(hours) - set(WEEKDAYS)
    if unknown:
        raise InvalidHours(where, f"unknown day(s) {sorted(unknown)}; use {list(WEEKDAYS)}")
    return {day: check_ranges(hours.get(day, []), f"{where}.{day}") for day in WEEKDAYS}


def open_at(hours: Mapping[str, Sequence[Sequence[str]]], zone: ZoneInfo, at: datetime) -> bool:
    """Is `at` inside the hours, read on the local clock (a Monday 22:00-02:00 covers Tuesday 01:00)?"""
    local = at.astimezone(zone)
    now = local.hour * 60 + local.minute
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    for start_text, end_text in hours.get(today, ()):
        start, end = clock_minutes(start_text), clock_minutes(end_text)
        if start <= now < (end if end > start else MINUTES_PER_DAY):
            return True
    for start_text, end_text in hours.get(yesterday, ()):
        start, end = clock_minutes(start_text), clock_minutes(end_text)
        if end <= start and now < end:  # yesterday's overnight range, still running
            return True
    return False
