"""Resources, their hours, job types, busy blocks, holds and bookings (`sched_*`).

No double booking is a database guarantee, not a check in Python: every live hold and every
confirmed booking owns one row in `sched_allocations`, the time it takes on its resource (the job
plus the job type's buffers, half-open), and one exclusion constraint over that table refuses any
two rows of one resource whose ranges overlap. Back-to-back ranges (`[9:00,10:00)`, `[10:00,11:00)`)
do not overlap. A hold's allocation carries its `expires_at`; writers delete the expired hold
allocations overlapping their range in the same statement as their insert, so an expired hold never
blocks anyone even before the hold GC collects it. (How writers take turns on one resource, and why,
is in `nmc.scheduling.booking`.)
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDAuditBase, UUIDBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSTZRANGE, ExcludeConstraint, Range
from sqlalchemy.orm import Mapped, mapped_column, relationship

from nmc.scheduling.enums import BookingSource, BookingStatus, BusyBlockSource

DEFAULT_WEEKLY_HOURS: dict[str, list[list[str]]] = {
    day: [["08:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")
} | {"sat": [], "sun": []}


class Resource(UUIDAuditBase):
    """Who or what a job takes: a technician, a truck, a chair."""

    __tablename__ = "sched_resources"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_sched_resources_tenant_name"),)

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40), default="technician")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # {"mon": [["08:00","17:00"]], ...} in the tenant's timezone. A range whose end is not after its
    # start runs overnight into the next day ("22:00"-"06:00"); "24:00" ends at midnight.
    weekly_hours: Mapped[dict[str, Any]] = mapped_column(JSONB, default=lambda: dict(DEFAULT_WEEKLY_HOURS))

    exceptions: Mapped[list[ResourceException]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="ResourceException.day"
    )


class ResourceException(UUIDAuditBase):
    """One local date whose hours replace the weekly hours (an empty list: closed that day)."""

    __tablename__ = "sched_resource_exceptions"
    __table_args__ = (UniqueConstraint("resource_id", "day", name="uq_sched_resource_exceptions_resource_day"),)

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    resource_id: Mapped[UUID] = mapped_column(ForeignKey("sched_resources.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    hours: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    note: Mapped[str | None] = mapped_column(String(200), default=None)


class JobType(UUIDAuditBase):
    __tablename__ = "sched_job_types"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_sched_job_types_tenant_name"),
        CheckConstraint("duration_minutes > 0", name="duration_positive"),
        CheckConstraint("buffer_before_minutes >= 0 AND buffer_after_minutes >= 0", name="buffers_not_negative"),
    )

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    duration_minutes: Mapped[int] = mapped_column(Integer)
    # Travel, set-up, clean-up: they extend the range a booking blocks, not the job itself.
    buffer_before_minutes: Mapped[int] = mapped_column(Integer, default=0)
    buffer_after_minutes: Mapped[int] = mapped_column(Integer, default=0)
    # Nothing starts sooner than this after now.
    min_notice_minutes: Mapped[int] = mapped_column(Integer, default=60)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class BusyBlock(UUIDAuditBase):
    """Time a resource is taken outside our bookings (calendar sync later; the API today)."""

    __tablename__ = "sched_busy_blocks"
    __table_args__ = (
        Index("ix_sched_busy_blocks_resource_during", "resource_id", "during", postgresql_using="gist"),
        UniqueConstraint("resource_id", "source", "external_id", name="uq_sched_busy_blocks_external"),
        CheckConstraint("NOT isempty(during) AND NOT lower_inf(during) AND NOT upper_inf(during)", name="during"),
    )

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    resource_id: Mapped[UUID] = mapped_column(ForeignKey("sched_resources.id", ondelete="CASCADE"))
    during: Mapped[Range[datetime]] = mapped_column(TSTZRANGE)
    title: Mapped[str | None] = mapped_column(String(200), default=None)
    source: Mapped[str] = mapped_column(String(20), default=BusyBlockSource.API)  # a BusyBlockSource
    external_id: Mapped[str | None] = mapped_column(String(255), default=None)


class Allocation(UUIDBase):
    """The time a live hold or a confirmed booking takes on its resource (buffers included)."""

    __tablename__ = "sched_allocations"
    __table_args__ = (
        ExcludeConstraint(
            ("resource_id", "="),
            ("during", "&&"),
            name="ex_sched_allocations_no_overlap",
            using="gist",
        ),
        CheckConstraint("kind IN ('hold', 'booking')", name="kind"),
        CheckConstraint("(kind = 'hold') = (expires_at IS NOT NULL)", name="hold_expires"),
        CheckConstraint("NOT isempty(during) AND NOT lower_inf(during) AND NOT upper_inf(during)", name="during"),
        Index("ix_sched_allocations_hold_expiry", "expires_at", postgresql_where=text("kind = 'hold'")),
        Index("ix_sched_allocations_tenant", "tenant_id"),
    )

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    resource_id: Mapped[UUID] = mapped_column(ForeignKey("sched_resources.id", ondelete="CASCADE"))
    during: Mapped[Range[datetime]] = mapped_column(TSTZRANGE)
    kind: Mapped[str] = mapped_column(String(10))  # an AllocationKind (nmc.scheduling.enums)
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class Hold(UUIDBase):
    """A slot kept for someone for `HOLD_TTL_MINUTES`; deleting its allocation deletes it."""

    __tablename__ = "sched_holds"
    __table_args__ = (
        Index("ix_sched_holds_expires_at", "expires_at"),
        Index("ix_sched_holds_tenant", "tenant_id"),
    )

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    resource_id: Mapped[UUID] = mapped_column(ForeignKey("sched_resources.id", ondelete="CASCADE"))
    job_type_id: Mapped[UUID] = mapped_column(ForeignKey("sched_job_types.id", ondelete="CASCADE"))
    allocation_id: Mapped[UUID] = mapped_column(ForeignKey("sched_allocations.id", ondelete="CASCADE"), unique=True)
    starts_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    customer_name: Mapped[str | None] = mapped_column(String(200), default=None)
    customer_phone: Mapped[str | None] = mapped_column(String(20), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class Booking(UUIDBase):
    """A job on a resource. A confirmed booking owns an allocation; cancelling releases it.

    The allocation reference has no ON DELETE action: an allocation a booking points to cannot be
    deleted (not by the hold GC, not by anyone) until the booking lets go of it.
    """

    __tablename__ = "sched_bookings"
    __table_args__ = (
        CheckConstraint("status IN ('confirmed', 'cancelled')", name="status"),
        CheckConstraint("(status = 'confirmed') = (allocation_id IS NOT NULL)", name="confirmed_allocated"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        Index("ix_sched_bookings_tenant_starts", "tenant_id", "starts_at"),
        Index("ix_sched_bookings_resource_starts", "resource_id", "starts_at"),
    )

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    resource_id: Mapped[UUID] = mapped_column(ForeignKey("sched_resources.id"))
    job_type_id: Mapped[UUID] = mapped_column(ForeignKey("sched_job_types.id"))
    allocation_id: Mapped[UUID | None] = mapped_column(ForeignKey("sched_allocations.id"), unique=True, default=None)
    hold_id: Mapped[UUID | None] = mapped_column(default=None)  # the hold it was made from (holds are deleted)
    starts_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default=BookingStatus.CONFIRMED)
    source: Mapped[str] = mapped_column(String(20), default=BookingSource.API)
    customer_name: Mapped[str | None] = mapped_column(String(200), default=None)
    customer_phone: Mapped[str | None] = mapped_column(String(20), default=None)
    notes: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), server_default=func.now(), onupdate=func.now()
    )
