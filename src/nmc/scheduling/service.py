"""Scheduling's catalog — resources (weekly hours, date exceptions), job types, busy blocks — and
reading bookings, through advanced-alchemy services; the validation the whole module shares. Every
query is scoped by the caller's tenant.

Availability, holds and bookings — the hot path, in plain SQL — live in `nmc.scheduling.booking`
(the statements in `nmc.scheduling.queries`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, TypeVar, cast
from uuid import UUID

import msgspec
from advanced_alchemy.exceptions import ForeignKeyError, NotFoundError
from advanced_alchemy.filters import LimitOffset
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement, case, delete, select
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncSession

from nmc import weekly_hours
from nmc.db import json_column
from nmc.problems import InvalidField, NotFound, check_day, check_moment
from nmc.scheduling.enums import BookingStatus, BusyBlockSource
from nmc.scheduling.errors import InUse, NameTaken, refused_on_unique
from nmc.scheduling.models import (
    DEFAULT_WEEKLY_HOURS,
    Allocation,
    Booking,
    BusyBlock,
    Hold,
    JobType,
    Resource,
    ResourceException,
)
from nmc.scheduling.queries import BookingRow
from nmc.scheduling.schemas import (
    BookingRead,
    BusyBlockCreate,
    BusyBlockRead,
    BusyBlockUpdate,
    DateException,
    JobTypeCreate,
    JobTypeRead,
    JobTypeUpdate,
    ResourceCreate,
    ResourceRead,
    ResourceUpdate,
)
from nmc.weekly_hours import WEEKDAYS

RESOURCE_NAME_UNIQUE = "uq_sched_resources_tenant_name"
JOB_TYPE_NAME_UNIQUE = "uq_sched_job_types_tenant_name"
BUSY_BLOCK_EXTERNAL_UNIQUE = "uq_sched_busy_blocks_external"

ModelT = TypeVar("ModelT", Resource, JobType, BusyBlock, Booking)


# ---------------------------------------------------------------------------- validation
def check_ranges(ranges: Sequence[Sequence[str]], field: str) -> list[list[str]]:
    with invalid_field():
        return weekly_hours.check_ranges(ranges, field)


def check_weekly_hours(hours: Mapping[Any, Sequence[Sequence[str]]]) -> dict[str, list[list[str]]]:
    with invalid_field():
        return weekly_hours.check_weekly(hours, "weekly_hours")


@contextmanager
def invalid_field() -> Iterator[None]:
    """Hours the shared rule refuses are a 422 naming the field."""
    try:
        yield
    except weekly_hours.InvalidHours as exc:
        raise InvalidField(exc.where, str(exc)) from None


def check_exceptions(exceptions: Sequence[DateException]) -> dict[date, DateException]:
    by_day: dict[date, DateException] = {}
    for exception in exceptions:
        check_day(exception.date, "exceptions")
        if exception.date in by_day:
            raise InvalidField("exceptions", f"{exception.date.isoformat()} is listed twice")
        check_ranges(exception.hours, f"exceptions.{exception.date.isoformat()}")
        by_day[exception.date] = exception
    return by_day


def exceptions_by_day(value: Any) -> dict[date, Any]:
    return {date.fromisoformat(day): hours for day, hours in (json_column(value) or {}).items()}


async def _owned(
    service: SQLAlchemyAsyncRepositoryService[ModelT, Any], what: str, *filters: ColumnElement[bool]
) -> ModelT:
    """The one row the filters (id and tenant) select, or `NotFound(what)`: another tenant's is not found."""
    try:
        return await service.get_one(*filters)
    except NotFoundError:
        raise NotFound(what) from None


def _session(service: SQLAlchemyAsyncRepositoryService[Any, Any]) -> AsyncSession:
    return cast("AsyncSession", service.repository.session)


# ---------------------------------------------------------------------------- resources
class ResourceRepository(SQLAlchemyAsyncRepository[Resource]):
    model_type = Resource


class ResourceService(SQLAlchemyAsyncRepositoryService[Resource, ResourceRepository]):
    repository_type = ResourceRepository

    async def list_for(self, tenant_id: UUID) -> Sequence[Resource]:
        return await self.get_many(Resource.tenant_id == tenant_id, order_by=[(Resource.name, False)])

    async def get_for(self, tenant_id: UUID, resource_id: UUID) -> Resource:
        return await _owned(self, "resource", Resource.id == resource_id, Resource.tenant_id == tenant_id)

    async def create_for(self, tenant_id: UUID, data: ResourceCreate) -> Resource:
        hours = check_weekly_hours(data.weekly_hours if data.weekly_hours is not None else DEFAULT_WEEKLY_HOURS)
        resource = Resource(tenant_id=tenant_id, name=data.name, kind=data.kind, active=data.active, weekly_hours=hours)
        resource.exceptions = [_exception_row(tenant_id, e) for e in check_exceptions(data.exceptions).values()]
        with refused_on_unique(RESOURCE_NAME_UNIQUE, NameTaken("resource", data.name)):
            return await self.repository.add(resource)

    async def update_for(self, tenant_id: UUID, resource_id: UUID, data: ResourceUpdate) -> Resource:
        resource = await self.get_for(tenant_id, resource_id)
        if data.name is not msgspec.UNSET:
            resource.name = data.name
        if data.kind is not msgspec.UNSET:
            resource.kind = data.kind
        if data.active is not msgspec.UNSET:
            resource.active = data.active
        if data.weekly_hours is not msgspec.UNSET:
            resource.weekly_hours = check_weekly_hours(data.weekly_hours)
        if data.exceptions is not msgspec.UNSET:
            wanted = check_exceptions(data.exceptions)
            # Update rows in place by date: a delete-then-insert of the same date in one flush would
            # trip the (resource, day) unique constraint (the unit of work inserts before it deletes).
            kept = []
            for row in resource.exceptions:
                if row.day in wanted:
                    update = wanted.pop(row.day)
                    row.hours = check_ranges(update.hours, "exceptions")
                    row.note = update.note
                    kept.append(row)
            resource.exceptions = kept + [_exception_row(tenant_id, e) for e in wanted.values()]
        with refused_on_unique(RESOURCE_NAME_UNIQUE, NameTaken("resource", resource.name)):
            return await self.repository.update(resource)

    async def delete_for(self, tenant_id: UUID, resource_id: UUID) -> None:
        await self.get_for(tenant_id, resource_id)
        if await BookingService(session=_session(self)).exists(Booking.resource_id == resource_id):
            raise InUse("resource")
        try:
            await self.delete(resource_id)  # its holds, allocations and busy blocks go with it
        except ForeignKeyError:
            raise InUse("resource") from None

    @staticmethod
    def to_read(resource: Resource) -> ResourceRead:
        return ResourceRead(
            id=resource.id,
            name=resource.name,
            kind=resource.kind,
            active=resource.active,
            weekly_hours={day: [(s, e) for s, e in resource.weekly_hours.get(day, [])] for day in WEEKDAYS},
            exceptions=[
                DateException(date=row.day, hours=[(s, e) for s, e in row.hours], note=row.note)
                for row in resource.exceptions
            ],
            created_at=resource.created_at,
            updated_at=resource.updated_at,
        )


def _exception_row(tenant_id: UUID, exception: DateException) -> ResourceException:
    return ResourceException(
        tenant_id=tenant_id,
        day=exception.date,
        hours=check_ranges(exception.hours, "exceptions"),
        note=exception.note,
    )


# ---------------------------------------------------------------------------- job types
class JobTypeRepository(SQLAlchemyAsyncRepository[JobType]):
    model_type = JobType


class JobTypeService(SQLAlchemyAsyncRepositoryService[JobType, JobTypeRepository]):
    repository_type = JobTypeRepository

    async def list_for(self, tenant_id: UUID) -> Sequence[JobType]:
        return await self.get_many(JobType.tenant_id == tenant_id, order_by=[(JobType.name, False)])

    async def get_for(self, tenant_id: UUID, job_type_id: UUID) -> JobType:
        return await _owned(self, "job type", JobType.id == job_type_id, JobType.tenant_id == tenant_id)

    async def create_for(self, tenant_id: UUID, data: JobTypeCreate) -> JobType:
        with refused_on_unique(JOB_TYPE_NAME_UNIQUE, NameTaken("job type", data.name)):
            return await self.repository.add(JobType(tenant_id=tenant_id, **msgspec.structs.asdict(data)))

    async def update_for(self, tenant_id: UUID, job_type_id: UUID, data: JobTypeUpdate) -> JobType:
        job_type = await self.get_for(tenant_id, job_type_id)
        for name, value in msgspec.structs.asdict(data).items():
            if value is not msgspec.UNSET:
                setattr(job_type, name, value)
        with refused_on_unique(JOB_TYPE_NAME_UNIQUE, NameTaken("job type", job_type.name)):
            return await self.repository.update(job_type)

    async def delete_for(self, tenant_id: UUID, job_type_id: UUID) -> None:
        await self.get_for(tenant_id, job_type_id)
        session = _session(self)
        if await BookingService(session=session).exists(Booking.job_type_id == job_type_id):
            raise InUse("job type")
        # Its live holds go with it, allocation first (the hold row follows by cascade).
        held = select(Hold.allocation_id).where(Hold.job_type_id == job_type_id, Hold.tenant_id == tenant_id)
        await session.execute(delete(Allocation).where(Allocation.id.in_(held)))
        try:
            await self.delete(job_type_id)
        except ForeignKeyError:
            raise InUse("job type") from None

    async def first_bookable(self, tenant_id: UUID, preferred: Sequence[UUID]) -> UUID | None:
        """The first of `preferred` that is an active job type of the tenant, else its oldest active one."""
        order: list[Any] = [JobType.created_at, JobType.id]
        if preferred:  # ranked by first mention; the others (NULL) sort last
            ranks = {job_type_id: rank for rank, job_type_id in enumerate(dict.fromkeys(preferred))}
            order.insert(0, case(ranks, value=JobType.id))
        query = select(JobType.id).where(JobType.tenant_id == tenant_id, JobType.active)
        found: UUID | None = await _session(self).scalar(query.order_by(*order).limit(1))
        return found

    def to_read(self, job_type: JobType) -> JobTypeRead:
        return self.to_schema(job_type, schema_type=JobTypeRead)


async def bookable_job_type(session: AsyncSession, tenant_id: UUID, preferred: Sequence[UUID | None]) -> UUID | None:
    """The first of `preferred` that is an active job type of the tenant, else its oldest active one."""
    wanted = [job_type_id for job_type_id in preferred if job_type_id is not None]
    return await JobTypeService(session=session).first_bookable(tenant_id, wanted)


# ---------------------------------------------------------------------------- busy blocks
class BusyBlockRepository(SQLAlchemyAsyncRepository[BusyBlock]):
    model_type = BusyBlock


def _window(start: datetime | None, end: datetime | None) -> Range[datetime]:
    """[start, end) of two instants the API can work with, `end` after `start`; None leaves that side open."""
    if start is not None:
        check_moment(start, "start")
    if end is not None:
        check_moment(end, "end")
    if start is not None and end is not None and end <= start:
        raise InvalidField("end", "must be after start")
    return Range(start, end, bounds="[)")


def _during(start: datetime, end: datetime) -> Range[datetime]:
    _window(start, end)
    return Range(start.astimezone(UTC), end.astimezone(UTC), bounds="[)")


class BusyBlockService(SQLAlchemyAsyncRepositoryService[BusyBlock, BusyBlockRepository]):
    repository_type = BusyBlockRepository

    async def list_for(
        self,
        tenant_id: UUID,
        resource_id: UUID | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Sequence[BusyBlock]:
        filters: list[Any] = [BusyBlock.tenant_id == tenant_id]
        if resource_id is not None:
            filters.append(BusyBlock.resource_id == resource_id)
        if start is not None or end is not None:
            window = _window(start, end)
            filters.append(BusyBlock.during.overlaps(window))
        return await self.get_many(*filters, order_by=[(BusyBlock.during, False)])

    async def get_for(self, tenant_id: UUID, busy_block_id: UUID) -> BusyBlock:
        return await _owned(self, "busy block", BusyBlock.id == busy_block_id, BusyBlock.tenant_id == tenant_id)

    async def create_for(self, tenant_id: UUID, data: BusyBlockCreate) -> BusyBlock:
        resources = ResourceService(session=_session(self))
        if not await resources.exists(Resource.id == data.resource_id, Resource.tenant_id == tenant_id):
            raise InvalidField("resource_id", "no such resource")
        block = BusyBlock(
            tenant_id=tenant_id,
            resource_id=data.resource_id,
            during=_during(data.start, data.end),
            title=data.title,
            source=BusyBlockSource.API,
            external_id=data.external_id,
        )
        taken = InvalidField("external_id", "this resource has a busy block with that external_id")
        with refused_on_unique(BUSY_BLOCK_EXTERNAL_UNIQUE, taken):
            return await self.repository.add(block)

    async def update_for(self, tenant_id: UUID, busy_block_id: UUID, data: BusyBlockUpdate) -> BusyBlock:
        block = await self.get_for(tenant_id, busy_block_id)
        start = block.during.lower if data.start is msgspec.UNSET else data.start
        end = block.during.upper if data.end is msgspec.UNSET else data.end
        assert start is not None
        assert end is not None
        block.during = _during(start, end)
        if data.title is not msgspec.UNSET:
            block.title = data.title
        return await self.repository.update(block)

    async def delete_for(self, tenant_id: UUID, busy_block_id: UUID) -> None:
        await self.get_for(tenant_id, busy_block_id)
        await self.delete(busy_block_id)

    @staticmethod
    def to_read(block: BusyBlock) -> BusyBlockRead:
        assert block.during.lower is not None
        assert block.during.upper is not None
        return BusyBlockRead(
            id=block.id,
            resource_id=block.resource_id,
            start=block.during.lower,
            end=block.during.upper,
            title=block.title,
            source=BusyBlockSource(block.source),
            external_id=block.external_id,
        )


# ---------------------------------------------------------------------------- bookings (reading)
class BookingRepository(SQLAlchemyAsyncRepository[Booking]):
    model_type = Booking


class BookingService(SQLAlchemyAsyncRepositoryService[Booking, BookingRepository]):
    """Reads bookings; they are written by `nmc.scheduling.booking` (plain SQL, the exclusion constraint)."""

    repository_type = BookingRepository

    async def get_for(self, tenant_id: UUID, booking_id: UUID) -> Booking:
        return await _owned(self, "booking", Booking.id == booking_id, Booking.tenant_id == tenant_id)

    async def list_for(
        self,
        tenant_id: UUID,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        resource_id: UUID | None = None,
        status: BookingStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Sequence[Booking]:
        """By start time; `start`/`end` keep the ones overlapping that window."""
        filters: list[Any] = [Booking.tenant_id == tenant_id]
        if start is not None:
            filters.append(Booking.ends_at > check_moment(start, "start"))
        if end is not None:
            filters.append(Booking.starts_at < check_moment(end, "end"))
        if resource_id is not None:
            filters.append(Booking.resource_id == resource_id)
        if status is not None:
            filters.append(Booking.status == status)
        return await self.get_many(
            *filters,
            LimitOffset(limit=limit, offset=offset),
            order_by=[(Booking.starts_at, False), (Booking.id, False)],
        )

    def to_read(self, booking: Booking) -> BookingRead:
        return self.to_schema(booking, schema_type=BookingRow).read()
