"""Quiet hours in the tenant's own time zone (the window may wrap midnight). Business hours are
`nmc.weekly_hours`."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


def quiet_until(start: time | None, end: time | None, timezone: str, at: datetime) -> datetime | None:
    """When the quiet window containing `at` ends (UTC), or None outside quiet hours.

    Raises ValueError for a window we cannot interpret (callers fail open).
    """
    if start is None or end is None or start == end:
        return None
    zone = ZoneInfo(timezone)
    local = at.astimezone(zone)
    now = local.time().replace(tzinfo=None)
    wraps = start > end  # e.g. 21:00-08:00
    inside = (now >= start or now < end) if wraps else (start <= now < end)
    if not inside:
        return None
    end_day = local.date() + timedelta(days=1) if wraps and now >= start else local.date()
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)
