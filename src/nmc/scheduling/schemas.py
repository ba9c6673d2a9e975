"""What the scheduling REST API reads and writes (msgspec; documented in the OpenAPI schema)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from nmc.events import E164
from nmc.scheduling.enums import BookingSource, BookingStatus, BusyBlockSource, ConflictKind

HHMM = Annotated[
    str,
    msgspec.Meta(pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$", description="Local wall-clock time HH:MM"),
]
TimeRange = Annotated[
    tuple[HHMM, HHMM],
    msgspec.Meta(description='["08:00", "17:00"]; an end not after the start runs overnight ("22:00", "06:00")'),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WeeklyHours = Annotated[
    dict[Weekday, list[TimeRange]],
    msgspec.Meta(description="Working hours per weekday in the tenant's timezone; a missing day is closed"),
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Kind = Annotated[str, msgspec.Meta(min_length=1, max_length=40, examples=["technician", "truck", "chair"])]
Text = Annotated[str, msgspec.Meta(max_length=2000)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 with a UTC offset")]
Minutes = Annotated[int, msgspec.Meta(ge=0, le=7 * 24 * 60)]


class DateException(msgspec.Struct, forbid_unknown_fields=True):
    """One local date whose hours replace the weekly hours (no hours: closed that day)."""

    date: date
    hours: list[TimeRange] = []
    note: Annotated[str, msgspec.Meta(max_length=200)] | None = None


# ---------------------------------------------------------------- resources
class ResourceCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    kind: Kind = "technician"
    active: bool = True
    weekly_hours: WeeklyHours | None = None  # default: Mon-Fri 08:00-17:00
    exceptions: list[DateException] = []


class ResourceUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Fields left out stay as they are; `exceptions`, when given, replaces the whole list."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    kind: Kind | msgspec.UnsetType = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET
    weekly_hours: WeeklyHours | msgspec.UnsetType = msgspec.UNSET
    exceptions: list[DateException] | msgspec.UnsetType = msgspec.UNSET


class ResourceRead(msgspec.Struct):
    id: UUID
    name: str
    kind: str
    active: bool
    weekly_hours: dict[str, list[tuple[str, str]]]
    exceptions: list[DateException]
    created_at: datetime
    updated_at: datetime


# ---------------------------------------------------------------- job types
class JobTypeCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    duration_minutes: Annotated[int, msgspec.Meta(ge=1, le=24 * 60)]
    buffer_before_minutes: Annotated[int, msgspec.Meta(ge=0, le=12 * 60)] = 0
    buffer_after_minutes: Annotated[int, msgspec.Meta(ge=0, le=12 * 60)] = 0
    min_notice_minutes: Minutes = 60
    active: bool = True


class JobTypeUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    duration_minutes: Annotated[int, msgspec.Meta(ge=1, le=24 * 60)] | msgspec.UnsetType = msgspec.UNSET
    buffer_before_minutes: Annotated[int, msgspec.Meta(ge=0, le=12 * 60)] | msgspec.UnsetType = msgspec.UNSET
    buffer_after_minutes: Annotated[int, msgspec.Meta(ge=0, le=12 * 60)] | msgspec.UnsetType = msgspec.UNSET
    min_notice_minutes: Minutes | msgspec.UnsetType = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET


class JobTypeRead(msgspec.Struct):
    id: UUID
    name: str
    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    min_notice_minutes: int
    active: bool
    created_at: datetime
    updated_at: datetime


# ---------------------------------------------------------------- busy blocks
class BusyBlockCreate(msgspec.Struct, forbid_unknown_fields=True):
    resource_id: UUID
    start: AwareDatetime
    end: AwareDatetime
    title: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    external_id: Annotated[str, msgspec.Meta(max_length=255)] | None = None


class BusyBlockUpdate(msgspec.Struct, forbid_unknown_fields=True):
    start: AwareDatetime | msgspec.UnsetType = msgspec.UNSET
    end: AwareDatetime | msgspec.UnsetType = msgspec.UNSET
    title: Annotated[str, msgspec.Meta(max_length=200)] | msgspec.UnsetType | None = msgspec.UNSET


class BusyBlockRead(msgspec.Struct):
    id: UUID
    resource_id: UUID
    start: datetime
    end: datetime
    title: str | None
    source: BusyBlockSource
    external_id: str | None


# ---------------------------------------------------------------- availability
class Slot(msgspec.Struct):
    start: datetime
    end: datetime


class ResourceSlots(msgspec.Struct):
    resource_id: UUID
    name: str
    slots: list[Slot]


class AvailabilityRead(msgspec.Struct):
    """Open starts per resource; times carry the tenant's local UTC offset."""

    job_type_id: UUID
    timezone: str
    start: datetime
    end: datetime
    granularity_minutes: int
    duration_minutes: int
    resources: list[ResourceSlots]


# ---------------------------------------------------------------- holds and bookings
class HoldCreate(msgspec.Struct, forbid_unknown_fields=True):
    resource_id: UUID
    job_type_id: UUID
    start: AwareDatetime
    customer_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    customer_phone: E164 | None = None


class HoldRead(msgspec.Struct):
    id: UUID
    resource_id: UUID
    job_type_id: UUID
    start: datetime
    end: datetime
    expires_at: datetime
    customer_name: str | None
    customer_phone: str | None


class BookingCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Either `hold_id` (book a held slot) or `resource_id` + `job_type_id` + `start` (book directly)."""

    hold_id: UUID | None = None
    resource_id: UUID | None = None
    job_type_id: UUID | None = None
    start: AwareDatetime | None = None
    customer_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    customer_phone: E164 | None = None
    notes: Text | None = None


class BookingRead(msgspec.Struct):
    id: UUID
    resource_id: UUID
    job_type_id: UUID
    start: datetime
    end: datetime
    status: BookingStatus
    source: BookingSource
    hold_id: UUID | None
    customer_name: str | None
    customer_phone: str | None
    notes: str | None
    created_at: datetime
    cancelled_at: datetime | None
    cancel_reason: str | None


class BookingCancel(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class BookingReschedule(msgspec.Struct, forbid_unknown_fields=True):
    start: AwareDatetime
    resource_id: UUID | None = None  # another resource; the booking's own when left out


class Conflict(msgspec.Struct):
    """What a refused slot collided with: a booking, a live hold or a busy block (its blocked range)."""

    kind: ConflictKind
    start: datetime
    end: datetime


class ConflictProblem(msgspec.Struct):
    """409: the slot is taken (RFC 9457 problem details)."""

    status: int
    title: str
    detail: str
    conflict: Conflict | None = None


class FieldProblem(msgspec.Struct):
    """422: a field the caller sent cannot be used (RFC 9457 problem details)."""

    status: int
    title: str
    detail: str
    field: str
