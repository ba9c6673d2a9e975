"""Scheduling's closed vocabularies, in one place: what the database stores and the API shows.

StrEnums: each member is its string (`BookingStatus.CONFIRMED == "confirmed"`), so SQL parameters,
JSON and event payloads carry exactly the values they always did; the database's check constraints
(`nmc.scheduling.models`) name the same values.
"""

from __future__ import annotations

from enum import StrEnum


class AllocationKind(StrEnum):
    """What owns a row of `sched_allocations`."""

    HOLD = "hold"
    BOOKING = "booking"


class BookingStatus(StrEnum):
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


class BookingSource(StrEnum):
    """Where a booking was made."""

    API = "api"
    SMS = "sms"


class BusyBlockSource(StrEnum):
    """Where a busy block came from: the API today, calendar sync later."""

    API = "api"
    GOOGLE = "google"
    JOBBER = "jobber"


class ConflictKind(StrEnum):
    """What a refused slot collided with (a 409's `conflict.kind`)."""

    BOOKING = "booking"
    HOLD = "hold"
    BUSY_BLOCK = "busy_block"
